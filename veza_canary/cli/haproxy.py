"""CLI: ``veza-canary haproxy drain|ready|maint|weight|show`` -- the HAProxy runtime API without socat by hand."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import typer

from veza_canary.cli._common import HAPROXY, WAITS, Format, Runtime, exit_codes, knobs, note, out, with_knobs
from veza_canary.errors import ConfigError, ExitCode
from veza_canary.settings import Settings

SHOW_KNOBS = knobs(HAPROXY)
WEIGHT_KNOBS = knobs(HAPROXY, ("canary_pin_map",))
STATE_KNOBS = knobs(HAPROXY, WAITS)
_STATE_EXITS = exit_codes(ExitCode.PREFLIGHT, ExitCode.INFRA, ExitCode.CHECK_FAILED)
_WAIT_HELP = {"drain": "Wait until 0 sessions (DRAIN_TIMEOUT deadline).",
              "maint": "Wait until 0 sessions (DRAIN_TIMEOUT deadline).",
              "ready": "Wait until HAProxy reports it UP (UP_TIMEOUT deadline)."}
_FORCE_HELP = "Allow taking the last server in rotation out (the whole service goes down)."

haproxy_app = typer.Typer(name="haproxy", no_args_is_help=True, rich_markup_mode=None,
                          help="HAProxy runtime API without socat by hand: drain, ready, maint, weight, show.")


def register(app: typer.Typer) -> None:
    app.add_typer(haproxy_app, name="haproxy")


def _set_state(settings: Settings, rt: Runtime, node: str, state: str, wait: bool, force: bool) -> int:
    from veza_canary.liveview import haproxy_states, observing
    from veza_canary.oncall import set_server_state

    with rt.fleet(settings) as fleet, (
            observing(settings, title=f"haproxy {state} {node}", states=haproxy_states(fleet.haproxy)) if wait
            else nullcontext()) as obs:
        set_server_state(fleet, node, state, wait=wait, force=force, observer=obs, say=out, note=note)
    return 0


@haproxy_app.command("drain", epilog=_STATE_EXITS, help="set server POOL_BACKEND/NODE state drain (no new sessions). "
                                                        "Refused for the last server in rotation without --force.")
@with_knobs(*STATE_KNOBS)
def drain(
    settings: Settings,
    rt: Runtime,
    node: str = typer.Argument(..., metavar="NODE"),
    wait: bool = typer.Option(False, "--wait", help=_WAIT_HELP["drain"]),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> int:
    return _set_state(settings, rt, node, "drain", wait, force)


@haproxy_app.command("ready", epilog=_STATE_EXITS, help="set server POOL_BACKEND/NODE state ready (back in rotation).")
@with_knobs(*STATE_KNOBS)
def ready(
    settings: Settings,
    rt: Runtime,
    node: str = typer.Argument(..., metavar="NODE"),
    wait: bool = typer.Option(False, "--wait", help=_WAIT_HELP["ready"]),
) -> int:
    return _set_state(settings, rt, node, "ready", wait, False)


@haproxy_app.command("maint", epilog=_STATE_EXITS, help="set server POOL_BACKEND/NODE state maint (out of rotation, "
                                                        "checks off). Refused for the last server in rotation "
                                                        "without --force.")
@with_knobs(*STATE_KNOBS)
def maint(
    settings: Settings,
    rt: Runtime,
    node: str = typer.Argument(..., metavar="NODE"),
    wait: bool = typer.Option(False, "--wait", help=_WAIT_HELP["maint"]),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> int:
    return _set_state(settings, rt, node, "maint", wait, force)


@haproxy_app.command("weight", epilog=exit_codes(ExitCode.USAGE, ExitCode.INFRA),
                     help="set server POOL_BACKEND/NODE weight N; or --restore: every server back at its "
                          "configured weight and every canary pin removed (what a killed ramp may leave).")
@with_knobs(*WEIGHT_KNOBS)
def weight(
    settings: Settings,
    rt: Runtime,
    node: Optional[str] = typer.Argument(None, metavar="NODE"),  # noqa: UP045
    n: Optional[int] = typer.Argument(None, metavar="N", help="Weight, 0-256."),  # noqa: UP045
    restore: bool = typer.Option(False, "--restore", help="Restore every configured weight and remove the pins."),
) -> int:
    from veza_canary.oncall import restore_traffic, set_server_weight

    with rt.fleet(settings) as fleet:
        if restore:
            if node is not None or n is not None:
                raise ConfigError("--restore", "takes no NODE or N")
            for line in restore_traffic(fleet):
                out(line)
            return 0
        if node is None or n is None:
            raise ConfigError("NODE N", "both are needed (or --restore)")
        out(set_server_weight(fleet, node, n, note=note))
    return 0


@haproxy_app.command("show", epilog=exit_codes(ExitCode.INFRA),
                     help="Every server of POOL_BACKEND: status, admin state, weight, sessions, check.")
@with_knobs(*SHOW_KNOBS)
def show(
    settings: Settings,
    rt: Runtime,
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> int:
    from veza_canary.oncall import servers, servers_table, to_json

    with rt.fleet(settings) as fleet:
        rows = servers(fleet)
    lines = [to_json({"backend": settings.haproxy.backend, "servers": rows})] if fmt is Format.json \
        else servers_table(settings.haproxy.backend, rows)
    for line in lines:
        out(line)
    return 0
