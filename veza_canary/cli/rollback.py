"""CLI: ``veza-canary rollback`` -- the runbook's manual full rollback, one node at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from veza_canary.cli._common import (
    HAPROXY,
    NODES,
    WAITS,
    Runtime,
    command_line,
    exit_codes,
    knobs,
    out,
    with_knobs,
)
from veza_canary.errors import ExitCode
from veza_canary.settings import Settings

ROLLBACK_KNOBS = knobs(("rollback_binary", "lock_wait", "lock_stale_after"), HAPROXY, NODES, WAITS)


def register(app: typer.Typer) -> None:
    app.command("rollback", epilog=exit_codes(ExitCode.PREFLIGHT, ExitCode.ROLLBACK_FAILED, ExitCode.LOCKED,
                                              ExitCode.INFRA),
                help="Manual full rollback, one node at a time: drain, restore atomically, restart, health, "
                     "ready, LB check. Takes the fleet lock; writes a report.")(rollback)


@with_knobs(*ROLLBACK_KNOBS)
def rollback(
    settings: Settings,
    rt: Runtime,
    nodes: str = typer.Option("all", "--nodes", metavar="all|N1,N2",
                              help="Nodes to roll back, in order (all = CANARY_NODE then PEER_NODES)."),
    to: Optional[str] = typer.Option(  # noqa: UP045 - Typer needs a runtime type
        None, "--to", metavar="previous|PATH", show_default="ROLLBACK_BINARY if set, else previous",
        help="previous: each node's INSTALL_DIR/veza-api.previous; PATH: push this local binary."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation on a TTY."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    report: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--report", help="Also write the JSON report here (a copy always goes under STATE_DIR/reports)."),
) -> int:
    from veza_canary.liveview import haproxy_states, observing
    from veza_canary.oncall import covering, rollback_nodes, rollback_plan, rollback_target, run_rollback

    target = rollback_target(to, settings)
    names = rollback_nodes(nodes, settings)
    settings = covering(settings, *names)
    with rt.fleet(settings) as fleet:
        if dry_run:
            for line in rollback_plan(fleet, names, target):
                out(line)
            return 0
        with observing(settings, title="rollback", states=haproxy_states(fleet.haproxy)) as obs:
            run_rollback(fleet, names, target, report_path=report, confirm=rt.confirmer(yes), observer=obs,
                         command_line=command_line(), say=out)
    return 0
