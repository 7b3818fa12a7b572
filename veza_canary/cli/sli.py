"""CLI: ``veza-canary sli check|watch`` -- the SLI in Prometheus, without a deploy."""

from __future__ import annotations

from typing import Optional

import typer

from veza_canary.cli._common import (
    HAPROXY,
    SLI,
    WATCH_ONLY,
    Format,
    Runtime,
    exit_codes,
    knobs,
    out,
    with_knobs,
)
from veza_canary.errors import ExitCode
from veza_canary.settings import Settings

CHECK_KNOBS = knobs(("canary_node",), SLI, without=WATCH_ONLY)
#: The watch also reads HAProxy (a node reported DOWN is red at once, as in a deploy).
WATCH_KNOBS = knobs(("canary_node", "sli_window"), SLI, HAPROXY)
_EXITS = exit_codes(ExitCode.INFRA, ExitCode.CHECK_FAILED)
_NODE_HELP = "Node the SLI_SELECTOR's {node} stands for."

sli_app = typer.Typer(name="sli", no_args_is_help=True, rich_markup_mode=None,
                      help="The SLI in Prometheus: one probe (check) or the watch loop without a deploy (watch).")


def register(app: typer.Typer) -> None:
    app.add_typer(sli_app, name="sli")


@sli_app.command("check", epilog=_EXITS, help="One SLI probe: each query, its value, the threshold and the verdict. "
                                              "Exit 0 pass, 11 fail or no data, 10 Prometheus error.")
@with_knobs(*CHECK_KNOBS)
def check(
    settings: Settings,
    rt: Runtime,
    node: Optional[str] = typer.Option(None, "--node", metavar="NAME", help=_NODE_HELP,  # noqa: UP045
                                       show_default="CANARY_NODE"),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> int:
    from veza_canary.oncall import sli_check, sli_check_lines, sli_check_outcome, sli_node, to_json

    node = sli_node(node, settings)
    with rt.fleet(settings) as fleet:
        result = sli_check(fleet, node)
    for line in [to_json(result)] if fmt is Format.json else sli_check_lines(result):
        out(line)
    sli_check_outcome(result)
    return 0


@sli_app.command("watch", epilog=_EXITS, help="The SLI watch loop without a deploy (after a manual change): probe "
                                              "every SLI_PROBE_INTERVAL for the window. Exit 0 green, 11 red, 10 "
                                              "Prometheus errors.")
@with_knobs(*WATCH_KNOBS)
def watch(
    settings: Settings,
    rt: Runtime,
    window: Optional[str] = typer.Option(  # noqa: UP045
        None, "--window", metavar="DURATION", show_default="SLI_WINDOW",
        help="How long to watch: 300, 300s, 5m, 1h. No 300 s floor here: this watch rolls nothing back."),
    node: Optional[str] = typer.Option(None, "--node", metavar="NAME", help=_NODE_HELP,  # noqa: UP045
                                       show_default="CANARY_NODE"),
) -> int:
    from veza_canary.liveview import haproxy_states, observing
    from veza_canary.oncall import sli_node, sli_watch, watch_window

    node = sli_node(node, settings)
    secs = watch_window(window, settings)
    settings = settings.replace(sli_window=secs)
    with rt.fleet(settings) as fleet, observing(settings, title=f"sli watch {node}",
                                                    states=haproxy_states(fleet.haproxy), clock=fleet.clock) as obs:
        out(sli_watch(fleet, node, secs, observer=obs))
    return 0
