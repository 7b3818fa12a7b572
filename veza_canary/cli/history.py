"""CLI: ``veza-canary history`` -- past deploys and rollbacks of this fleet, newest first."""

from __future__ import annotations

import sys

import typer

from veza_canary.cli._common import INCUS, Format, Runtime, exit_codes, knobs, out, with_knobs
from veza_canary.errors import ExitCode
from veza_canary.settings import Settings

#: The knobs that say where the fleet's state directory is (and how to reach it).
HISTORY_KNOBS = knobs(("haproxy_container", "haproxy_local_socket", "state_dir"), INCUS)


def register(app: typer.Typer) -> None:
    app.command("history", epilog=exit_codes(ExitCode.INFRA),
                help="Past deploys and rollbacks of this fleet, newest first (when, who, artifact, "
                     "outcome, exit code, cause), from the record kept beside the fleet lock.")(history)


@with_knobs(*HISTORY_KNOBS)
def history(
    settings: Settings,
    rt: Runtime,
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Show the newest N entries (0: all)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table (for people) or json (for scripts)."),
) -> int:
    """Exit 0 when the record was read (a corrupt line is reported, not fatal); 10 if unreachable."""
    import json

    from veza_canary.history import History, table

    with rt.fleet(settings) as fleet:  # the fleet's state store, reached exactly as deploys reach it
        read = History(fleet.store).read(limit)
    if fmt is Format.json:
        out(json.dumps(read.to_dict(), indent=2, default=str))
        for p in read.problems:  # the table shows them inline
            sys.stderr.write(f"veza-canary: warning: history: {p}\n")
    else:
        for line in table(read):
            out(line)
    return 0
