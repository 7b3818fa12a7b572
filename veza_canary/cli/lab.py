"""CLI: ``veza-canary lab ...`` — the local staging lab (real Incus, HAProxy, Prometheus)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from veza_canary.cli._common import exit_codes, guarded, out
from veza_canary.errors import ExitCode

lab_app = typer.Typer(
    name="lab",
    help="Local staging lab: Incus containers with HAProxy, Prometheus and stand-in backend nodes.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _progress(line: str) -> None:
    out(f"lab: {line}")


@contextmanager
def _changing_the_lab() -> Iterator[None]:
    """Hold the lab's change lock (the one tests hold while they change the fleet) for this command.

    A reconcile restores the 1.0.0 build on every node: it must not run in the middle of a test's deploy.
    """
    import fcntl

    from veza_canary.lab.config import CHANGE_LOCK

    with open(CHANGE_LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _progress(f"waiting for a test that is changing the lab (it holds {CHANGE_LOCK})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


_EXITS = exit_codes(ExitCode.INFRA)


@lab_app.command("up", epilog=_EXITS)
@guarded
def up_cmd(
    nodes: int = typer.Option(3, "--nodes", help="Number of backend nodes (backend-api-1..N)."),
    rate: float = typer.Option(20.0, "--rate", help="Load generator rate through HAProxy (req/s)."),
    traffic_hours: float = typer.Option(4.0, "--traffic-hours",
                                        help="The load generator stops by itself after this long."),
    install: bool = typer.Option(True, "--install/--no-install",
                                 help="Run scripts/install-system-deps.sh when packages are missing."),
    lbs: int = typer.Option(1, "--lbs", help="HAProxy containers with the same config (haproxy, haproxy-2, ...); "
                                             "`lab env` then sets HAPROXY_CONTAINERS. Back to 1 deletes the others."),
) -> None:
    """Create or reconcile the lab; ends with every server UP, Prometheus scraping, traffic flowing."""
    from veza_canary.lab import LabConfig, lab_up

    cfg = LabConfig.with_nodes(nodes, rate=rate, traffic_duration=traffic_hours * 3600, install_deps=install,
                               lbs=lbs)
    with _changing_the_lab():
        lab_up(cfg, progress=_progress)


@lab_app.command("down", epilog=_EXITS)
@guarded
def down_cmd(
    purge: bool = typer.Option(False, "--purge", help="Also delete the cached image tarballs."),
    force: bool = typer.Option(False, "--force", help="Even while a test session is using the lab."),
) -> None:
    """Delete the lab; stop incusd and remove the guard only if the lab set them up."""
    from veza_canary.lab import lab_down

    with _changing_the_lab():
        lab_down(purge=purge, force=force, progress=_progress)


@lab_app.command("env", epilog=_EXITS)
@guarded
def env_cmd() -> None:
    """Print `export` lines for the deploy tool against the lab: eval "$(veza-canary lab env)"."""
    from veza_canary.lab import lab_env

    for k, v in lab_env().items():
        out(f"export {k}={shlex.quote(v)}")


@lab_app.command("status", epilog=exit_codes(ExitCode.INFRA, ExitCode.CHECK_FAILED))
@guarded
def status_cmd() -> int:
    """Containers, addresses, HAProxy servers, Prometheus targets, traffic rate. Exit 11 if unhealthy."""
    from veza_canary.lab import lab_status

    st = lab_status()
    out(f"incusd:     {st.incusd}")
    out(f"nft guard:  {'loaded' if st.guard_loaded else 'NOT loaded'}")
    out("containers:")
    for c in st.containers:
        out(f"  {c.name:<20} {c.status:<10} {c.ip or '-'}")
    if st.servers:
        out("haproxy servers (api_pool):")
        for s in st.servers:
            out(f"  {s.name:<20} {s.status:<10} check={s.check_status:<8} sessions={s.scur} weight={s.weight}")
    if st.targets:
        out("prometheus targets:")
        for t in st.targets:
            out(f"  {t.job:<18} {t.node:<16} {t.health:<8} {t.url}")
    rate = "-" if st.traffic_rate is None else f"{st.traffic_rate:.1f} req/s"
    out(f"traffic:    {rate} at the nodes (loadgen {'running' if st.loadgen_active else 'stopped'})")
    if st.problems:
        out("problems:")
        for p in st.problems:
            out(f"  - {p}")
        return int(ExitCode.CHECK_FAILED)
    out("lab is healthy")
    return 0


@lab_app.command("build", epilog=exit_codes())
@guarded
def build_cmd(
    version: str = typer.Option(..., "--version", help="Build version, served on /api/v1/health and --version."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the executable."),
    health_status: int = typer.Option(200, "--health-status", help="HTTP code of /api/v1/health."),
    latency: float = typer.Option(0.0, "--latency", help="Seconds added to API routes (p95 lands near it)."),
    error_rate: float = typer.Option(0.0, "--error-rate", help="Share of API requests answered 500 (0-1)."),
    crash_after: Optional[float] = typer.Option(  # noqa: UP045 - Typer needs a runtime type
        None, "--crash-after", help="Exit with code 3 this many seconds after the onset."),
    fail_start: bool = typer.Option(False, "--fail-start", help="Exit with code 1 at once."),
    onset: float = typer.Option(0.0, "--onset", help="Faults begin this many seconds after start."),
) -> None:
    """Write a veza-api stand-in (one python3 file) with the version and faults baked in."""
    from veza_canary.errors import ConfigError
    from veza_canary.lab import Faults, build_standin

    try:
        faults = Faults(health_status=health_status, latency=latency, error_rate=error_rate,
                        crash_after=crash_after, fail_start=fail_start, onset=onset)
        path = build_standin(version, faults, output)
    except ValueError as exc:
        raise ConfigError("lab build", str(exc)) from None
    out(str(path))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(lab_app, name="lab")
