"""CLI: ``veza-canary status`` -- the fleet right now, read-only."""

from __future__ import annotations

import sys

import typer

from veza_canary.cli._common import (
    HAPROXY,
    NODES,
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

STATUS_KNOBS = knobs(HAPROXY, NODES, SLI, ("lock_stale_after",), without=WATCH_ONLY)


def register(app: typer.Typer) -> None:
    app.command("status", epilog=exit_codes(ExitCode.INFRA),
                help="The fleet right now, read-only (safe during a deploy): per node HAProxy state, sessions, "
                     "binary, version, veza-api.previous, health; the lock, blocked releases and the SLI. "
                     "What cannot be read is shown as unknown and the exit code is 10.")(status)


@with_knobs(*STATUS_KNOBS)
def status(
    settings: Settings,
    rt: Runtime,
    fmt: Format = typer.Option(Format.table, "--format", help="table (for people) or json (for scripts)."),
    no_sli: bool = typer.Option(False, "--no-sli", help="Skip the Prometheus probes."),
) -> int:
    """Exit 0 when everything could be read, 10 when a part could not (shown in the output)."""
    from veza_canary.status import collect, table

    with rt.fleet(settings) as fleet:
        st = collect(fleet, sli=not no_sli)
    for line in [st.to_json()] if fmt is Format.json else table(st, color=sys.stdout.isatty()):
        out(line)
    return int(ExitCode.INFRA) if st.errors else 0
