"""CLI: ``veza-canary deploy``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from veza_canary.cli._common import Runtime, command_line, exit_codes, out, with_knobs
from veza_canary.errors import ExitCode
from veza_canary.settings import KNOBS, Settings

#: The deploy uses every knob.
DEPLOY_KNOBS = tuple(k.name for k in KNOBS)
#: Every code but 11: inside a deploy a red check is a cause of the rollback policy (5, 6 or 7), not an outcome.
EXITS = exit_codes(*(c for c in ExitCode if c is not ExitCode.CHECK_FAILED))


def register(app: typer.Typer) -> None:
    app.command("deploy", epilog=EXITS,
                help="Canary-deploy ARTIFACT: preflight, migration gate, drain, push, health, "
                     "SLI watch with automatic rollback, then the peers one by one.")(deploy)


@with_knobs(*DEPLOY_KNOBS)
def deploy(
    settings: Settings,
    rt: Runtime,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation on a TTY."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (steps, nodes, commands); change nothing."),
    force: bool = typer.Option(False, "--force", help="Deploy an artifact that was rolled back before."),
    report: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--report", help="Also write the JSON report here (a copy always goes under STATE_DIR/reports)."
    ),
) -> int:
    from veza_canary.pipeline import dry_run as plan_offline

    if dry_run:
        for line in plan_offline(settings):
            out(line)
        return 0
    from veza_canary.liveview import current_stdout, haproxy_states, observing
    from veza_canary.pipeline import execute as run_deploy

    fleet = rt.build_fleet(settings)  # execute closes it
    # On a TTY the waits and the SLI watch draw a live view (from the first drain poll on, after the prompt).
    with observing(settings, title="deploy", states=haproxy_states(fleet.haproxy)) as observer:
        return run_deploy(settings, force=force, confirm=rt.confirmer(yes), report_path=report,
                          command_line=command_line(), fleet=fleet, observer=observer, stream=current_stdout())
