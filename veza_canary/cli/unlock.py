"""CLI: ``veza-canary unlock`` -- show the fleet lock and release it."""

from __future__ import annotations

import typer

from veza_canary.cli._common import INCUS, Runtime, exit_codes, knobs, out, with_knobs
from veza_canary.errors import ExitCode
from veza_canary.settings import Settings

#: Where the lock lives (beside HAProxy, or under STATE_DIR with a local socket) and when it is stale.
UNLOCK_KNOBS = knobs(("haproxy_container", "haproxy_local_socket", "state_dir", "lock_stale_after"), INCUS)


def register(app: typer.Typer) -> None:
    app.command("unlock", epilog=exit_codes(ExitCode.PREFLIGHT, ExitCode.LOCKED, ExitCode.INFRA),
                help="Show the fleet lock and release it: a lock whose holder is gone or that is stale at once, "
                     "a live-looking one only with --force.")(unlock)


@with_knobs(*UNLOCK_KNOBS)
def unlock(
    settings: Settings,
    rt: Runtime,
    force: bool = typer.Option(False, "--force", help="Release even a lock whose holder may still be running."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation on a TTY."),
) -> int:
    with rt.fleet(settings) as fleet:
        out(fleet.lock().break_lock(force=force, confirm=rt.confirmer(yes), say=out))
    return 0
