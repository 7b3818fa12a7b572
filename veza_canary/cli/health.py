"""CLI: ``veza-canary health NODE|--lb`` -- one health request."""

from __future__ import annotations

from typing import Optional

import typer

from veza_canary.cli._common import INCUS, Runtime, exit_codes, knobs, out, with_knobs
from veza_canary.errors import ConfigError, ExitCode
from veza_canary.settings import Settings

HEALTH_KNOBS = knobs(("canary_node", "peer_nodes", "node_health_url", "health_path", "lb_url", "http_timeout"),
                     INCUS)


def register(app: typer.Typer) -> None:
    app.command("health", epilog=exit_codes(ExitCode.INFRA, ExitCode.CHECK_FAILED),
                help="One health check of NODE (from inside its container) or of the LB (--lb), with the HTTP "
                     "status and latency. 10: the container or the LB cannot be reached; 11: not HTTP 200.")(health)


@with_knobs(*HEALTH_KNOBS)
def health(
    settings: Settings,
    rt: Runtime,
    node: Optional[str] = typer.Argument(None, metavar="[NODE]", help="Node to check (inside its container)."),  # noqa: UP045
    lb: bool = typer.Option(False, "--lb", help="Check the load balancer (LB_URL + HEALTH_PATH) instead."),
) -> int:
    """Exit 0 on HTTP 200, 11 otherwise; 10 when the node's container or the LB cannot be reached."""
    from veza_canary.oncall import check_health, covering

    if lb == (node is not None):
        raise ConfigError("health", "give exactly one of NODE or --lb")
    with rt.fleet(covering(settings, *([node] if node else []))) as fleet:
        out(check_health(fleet, node))
    return 0
