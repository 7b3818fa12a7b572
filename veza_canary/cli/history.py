"""CLI: ``veza-canary history`` -- past deploys and rollbacks of this fleet, newest first."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from veza_canary.cli._common import out, with_knobs
from veza_canary.settings import Settings

if TYPE_CHECKING:
    from veza_canary.lock import StateStore

#: The knobs that say where the fleet's state directory is (and how to reach it).
HISTORY_KNOBS = ("haproxy_container", "haproxy_local_socket", "incus_host", "ssh_key_file", "ssh_known_hosts",
                 "ssh_accept_new_host_key", "ssh_connect_timeout", "state_dir")


class Format(StrEnum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("history", help="Past deploys and rollbacks of this fleet, newest first (when, who, artifact, "
                                "outcome, exit code, cause), from the record kept beside the fleet lock.")(history)


@contextmanager
def open_store(settings: Settings) -> Iterator[StateStore]:
    """The fleet's state store, reached exactly as deploys reach it (tests replace this one name)."""
    from veza_canary.fleet import build_fleet

    fleet = build_fleet(settings)
    try:
        yield fleet.store
    finally:
        fleet.close()


@with_knobs(*HISTORY_KNOBS)
def history(
    settings: Settings,
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Show the newest N entries (0: all)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table (for people) or json (for scripts)."),
) -> int:
    """Exit 0 when the record was read (a corrupt line is reported, not fatal); 10 if unreachable."""
    import json

    from veza_canary.history import History, table

    with open_store(settings) as store:
        read = History(store).read(limit)
    if fmt is Format.json:
        out(json.dumps(read.to_dict(), indent=2, default=str))
        for p in read.problems:  # the table shows them inline
            sys.stderr.write(f"veza-canary: warning: history: {p}\n")
    else:
        for line in table(read):
            out(line)
    return 0
