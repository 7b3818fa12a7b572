"""CLI: the on-call commands — status, rollback, unlock, health, haproxy ..., sli ...

Same knobs, transports and exit codes as ``deploy``. Every command builds the fleet
through ``build_fleet`` below (tests replace that one name with a simulated fleet).
Heavy modules (httpx, rich, the pipeline) are imported inside the commands so
``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from veza_canary.cli._common import out, with_knobs
from veza_canary.errors import ConfigError, ExitCode
from veza_canary.settings import KNOBS, Settings, check_instance_name

if TYPE_CHECKING:
    from veza_canary.fleet import Fleet

#: Knobs of the deploy only (what to ship, the migration gate, deploy preflight overrides).
_DEPLOY_ONLY = {"artifact", "rollback_binary", "force_migrate", "migrations_dir", "migrations_since",
                "migrations_dialect", "allow_degraded", "allow_no_rollback"}
ONCALL_KNOBS = tuple(k.name for k in KNOBS if k.name not in _DEPLOY_ONLY)
ROLLBACK_KNOBS = (*ONCALL_KNOBS, "rollback_binary")


class Format(StrEnum):
    table = "table"
    json = "json"


haproxy_app = typer.Typer(name="haproxy", no_args_is_help=True, rich_markup_mode=None,
                          help="HAProxy runtime API without socat by hand: drain, ready, maint, weight, show.")
sli_app = typer.Typer(name="sli", no_args_is_help=True, rich_markup_mode=None,
                      help="The SLI in Prometheus: one probe (check) or the watch loop without a deploy (watch).")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("status", help="The fleet right now, read-only (safe during a deploy): per node HAProxy "
                               "state, sessions, binary, version, veza-api.previous, health; the lock, "
                               "blocked releases and the SLI.")(status)
    app.command("rollback", help="Manual full rollback, one node at a time: drain, restore atomically, "
                                 "restart, health, ready, LB check. Takes the fleet lock; writes a report.")(rollback)
    app.command("unlock", help="Show the fleet lock and release it (a live holder needs --force).")(unlock)
    app.command("health", help="One health check of NODE (from inside its container) or of the LB (--lb), "
                               "with the HTTP status and latency.")(health)
    app.add_typer(haproxy_app, name="haproxy")
    app.add_typer(sli_app, name="sli")


def build_fleet(settings: Settings) -> Fleet:
    """The one place the on-call commands get their fleet (tests replace it with a simulated one)."""
    from veza_canary.fleet import build_fleet as real

    return real(settings)


@contextmanager
def _fleet(settings: Settings, *extra_nodes: str) -> Iterator[Fleet]:
    """A fleet that also covers ``extra_nodes`` (a node named on the command line but not configured)."""
    for n in extra_nodes:
        problem = check_instance_name(n)
        if problem:
            raise ConfigError("NODE", problem)
    missing = tuple(n for n in extra_nodes if n not in settings.pool.nodes)
    if missing:
        settings = settings.replace(peer_nodes=(*settings.pool.peers, *missing))
    fleet = build_fleet(settings)
    try:
        yield fleet
    finally:
        fleet.close()


def _confirmer(yes: bool):  # noqa: ANN202 - Callable[[str], bool] | None
    return None if yes or not sys.stdin.isatty() else (lambda q: typer.confirm(q, default=False))


def _command_line() -> str:
    return shlex.join(["veza-canary", *sys.argv[1:]])


# --- status ------------------------------------------------------------------------------------


@with_knobs(*ONCALL_KNOBS)
def status(
    settings: Settings,
    fmt: Format = typer.Option(Format.table, "--format", help="table (for people) or json (for scripts)."),
    no_sli: bool = typer.Option(False, "--no-sli", help="Skip the Prometheus probes."),
) -> int:
    """Exit 0 when everything could be read, 10 when a part could not (shown in the output)."""
    from veza_canary.status import collect, table

    with _fleet(settings) as fleet:
        st = collect(fleet, sli=not no_sli)
    if fmt is Format.json:
        out(st.to_json())
    else:
        for line in table(st, color=sys.stdout.isatty()):
            out(line)
    return int(ExitCode.INFRA) if st.errors else 0


# --- rollback ----------------------------------------------------------------------------------


@with_knobs(*ROLLBACK_KNOBS)
def rollback(
    settings: Settings,
    nodes: str = typer.Option("all", "--nodes", metavar="all|N1,N2",
                              help="Nodes to roll back, in order (all = CANARY_NODE then PEER_NODES)."),
    to: Optional[str] = typer.Option(  # noqa: UP045 - Typer needs a runtime type
        None, "--to", metavar="previous|PATH",
        help="previous: each node's INSTALL_DIR/veza-api.previous; PATH: push this local binary. "
             "Default: ROLLBACK_BINARY when set, else previous."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation on a TTY."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    report: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--report", help="Also write the JSON report here (a copy always goes under STATE_DIR/reports)."),
) -> int:
    import shutil

    from veza_canary.artifact import private_workdir
    from veza_canary.liveview import haproxy_states, observing
    from veza_canary.manual_rollback import PREVIOUS, ManualRollback, parse_nodes
    from veza_canary.pipeline import summary_lines
    from veza_canary.report import Report
    from veza_canary.runner import write_reports

    target = to or (str(settings.rollback_binary) if settings.rollback_binary else PREVIOUS)
    names = parse_nodes(nodes, settings.pool.nodes)
    workdir = private_workdir()
    try:
        with _fleet(settings, *names) as fleet:
            if dry_run:
                mr = ManualRollback(fleet, names, target, workdir=workdir)
                mr.plan()
                for line in mr.plan_lines():
                    out(line)
                out("(dry run: nothing was changed)")
                return 0
            rep = Report(command="rollback")
            error = None
            try:
                with observing(settings, title="rollback", states=haproxy_states(fleet.haproxy)) as obs:
                    ManualRollback(fleet, names, target, workdir=workdir, report=rep, confirm=_confirmer(yes),
                                   observer=obs, command_line=_command_line(), say=out).run()
            except Exception as exc:  # VezaError: reported below, then re-raised for its exit code
                error = exc
            for path in write_reports(rep, settings, report):
                out(f"report: {path}")
            for line in summary_lines(rep):
                out(line)
            if error is not None:
                raise error
            return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- unlock ------------------------------------------------------------------------------------


@with_knobs(*ONCALL_KNOBS)
def unlock(
    settings: Settings,
    force: bool = typer.Option(False, "--force", help="Release even a lock whose holder may still be running."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation on a TTY."),
) -> int:
    from veza_canary.errors import LockHeld, PreflightError
    from veza_canary.lock import FleetLock, _dead_local_process

    with _fleet(settings) as fleet:
        lk = fleet.lock()
        cur = lk.current()
        if cur is None:
            out("lock: free (nothing to release)")
            return 0
        stale, dead = lk.is_stale(cur), _dead_local_process(cur)
        why = "its holder process is gone" if dead else "it is STALE (older than LOCK_STALE_AFTER)" if stale \
            else None
        out(f"lock: held by {cur.describe()}")
        out(f"  command: {cur.command}")
        if why is None and not force:
            raise LockHeld(f"the lock looks live ({cur.describe()}); not released",
                           hint="make sure that deploy is dead, then: veza-canary unlock --force")
        confirm = _confirmer(yes)
        if confirm is not None and not confirm(f"Release the fleet lock held by {cur.holder}@{cur.host}?"):
            raise PreflightError("not confirmed; the lock is still held")
        again = lk.current()
        if again is None:
            out("lock: released meanwhile by its holder")
            return 0
        if again.token != cur.token:
            raise LockHeld(f"the lock changed hands meanwhile ({again.describe()}); not released")
        fleet.store.remove(FleetLock.NAME)
        out(f"lock: released ({why or 'forced'})")
    return 0


# --- health ------------------------------------------------------------------------------------


@with_knobs(*ONCALL_KNOBS)
def health(
    settings: Settings,
    node: Optional[str] = typer.Argument(None, metavar="[NODE]", help="Node to check (inside its container)."),  # noqa: UP045
    lb: bool = typer.Option(False, "--lb", help="Check the load balancer (LB_URL + HEALTH_PATH) instead."),
) -> int:
    """Exit 0 on HTTP 200, 11 otherwise; 10 when the node's container cannot be reached."""
    from veza_canary.errors import HealthCheckFailed, InfraError, TransportError
    from veza_canary.health import lb_health
    from veza_canary.log import redact_text
    from veza_canary.status import version_from_body

    if lb == (node is not None):
        raise ConfigError("health", "give exactly one of NODE or --lb")
    with _fleet(settings, *([node] if node else [])) as fleet:
        if lb:
            what = f"LB {redact_text(settings.service.lb_health_url)}"
            h = lb_health(fleet.lb_client, settings.service.lb_health_url)
        else:
            assert node is not None
            n = fleet.nodes[node]
            what = f"{node} {settings.service.node_health_url}"
            h = n.health()
            if h.status is None:
                try:
                    n.transport.run(("true",), timeout=30)
                except TransportError as exc:
                    raise InfraError(f"{node}: cannot reach the container: {exc}") from exc
    version = version_from_body(h.body) if h.status is not None else None
    line = f"{what}: {h.describe()}" + (f" (version {version})" if version else "")
    if not h.ok:
        raise HealthCheckFailed(line)
    out(line)
    return 0


# --- haproxy -----------------------------------------------------------------------------------


def _server_check(fleet: Fleet, server: str) -> tuple[dict, dict]:
    states, stats = fleet.haproxy.states(), fleet.haproxy.stats()
    if server not in states or server not in stats:
        raise ConfigError("NODE", f"{server!r} is not a server of HAProxy backend {fleet.haproxy.backend!r} "
                                  f"(it has: {', '.join(sorted(states)) or 'none'})")
    return states, stats


def _note_lock(fleet: Fleet) -> None:
    try:
        cur = fleet.lock().current()
    except Exception:  # noqa: BLE001,S110 - a note only; the command itself does not need the lock
        return
    if cur is not None:
        err_note(f"note: a deploy holds the fleet lock ({cur.describe()}); it may change this node again")


def err_note(line: str) -> None:
    sys.stderr.write(f"veza-canary: {line}\n")
    sys.stderr.flush()


def _stat_line(fleet: Fleet, server: str) -> str:
    st, stat = fleet.haproxy.state(server), fleet.haproxy.stat(server)
    return (f"{server}: {stat.status}, admin {st.admin}, weight {stat.weight}, {stat.scur} sessions, "
            f"{stat.qcur} queued, check {stat.check_status or '-'}")


def _set_state(settings: Settings, server: str, state: str, wait: bool, force: bool) -> int:
    from veza_canary.errors import DrainTimedOut, HealthCheckFailed, PreflightError
    from veza_canary.health import WaitTimedOut, wait_drained, wait_up
    from veza_canary.liveview import haproxy_states, observing

    with _fleet(settings) as fleet:
        states, stats = _server_check(fleet, server)
        if state in ("drain", "maint") and not force:
            serving = [n for n in stats if n != server and states[n].admin == "ready" and stats[n].is_up]
            if not serving and states[server].admin == "ready" and stats[server].is_up:
                raise PreflightError(f"{server} is the last server in rotation of {fleet.haproxy.backend!r}: "
                                     f"{state} would take the whole service down; nothing was changed",
                                     hint="--force does it anyway (Sev-1 all-stop: see INCIDENT_RESPONSE.md)")
        _note_lock(fleet)
        before = states[server].admin
        fleet.haproxy.set_state(server, state)
        out(f"{server}: state {state} (was {before})")
        if wait:
            s = settings
            with observing(settings, title=f"haproxy {state} {server}",
                           states=haproxy_states(fleet.haproxy)) as obs:
                try:
                    if state == "ready":
                        wait_up(fleet.haproxy, server, timeout=s.timeouts.up, interval=s.timeouts.poll_interval,
                                clock=fleet.clock, on_poll=obs.on_poll)
                    else:
                        wait_drained(fleet.haproxy, server, timeout=s.timeouts.drain, interval=s.timeouts.poll_interval,
                                     clock=fleet.clock, on_poll=obs.on_poll)
                except WaitTimedOut as exc:
                    cls = HealthCheckFailed if state == "ready" else DrainTimedOut
                    hint = (f"the node stays {state}; its sessions are still open (veza-canary haproxy show). "
                            "Wait longer (--drain-timeout) or let a rollback cut them "
                            "(--drain-timeout-action shutdown-sessions)" if state != "ready" else
                            f"check the node: veza-canary health {server}")
                    raise cls(f"{exc}", hint=hint) from None
        out(_stat_line(fleet, server))
    return 0


_WAIT_HELP = {"drain": "Wait until 0 sessions (DRAIN_TIMEOUT deadline).",
              "maint": "Wait until 0 sessions (DRAIN_TIMEOUT deadline).",
              "ready": "Wait until HAProxy reports it UP (UP_TIMEOUT deadline)."}
_FORCE_HELP = "Allow taking the last server in rotation out (the whole service goes down)."


@haproxy_app.command("drain", help="set server POOL_BACKEND/NODE state drain (no new sessions).")
@with_knobs(*ONCALL_KNOBS)
def haproxy_drain(
    settings: Settings,
    node: str = typer.Argument(..., metavar="NODE"),
    wait: bool = typer.Option(False, "--wait", help=_WAIT_HELP["drain"]),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> int:
    return _set_state(settings, node, "drain", wait, force)


@haproxy_app.command("ready", help="set server POOL_BACKEND/NODE state ready (back in rotation).")
@with_knobs(*ONCALL_KNOBS)
def haproxy_ready(
    settings: Settings,
    node: str = typer.Argument(..., metavar="NODE"),
    wait: bool = typer.Option(False, "--wait", help=_WAIT_HELP["ready"]),
) -> int:
    return _set_state(settings, node, "ready", wait, False)


@haproxy_app.command("maint", help="set server POOL_BACKEND/NODE state maint (out of rotation, checks off).")
@with_knobs(*ONCALL_KNOBS)
def haproxy_maint(
    settings: Settings,
    node: str = typer.Argument(..., metavar="NODE"),
    wait: bool = typer.Option(False, "--wait", help=_WAIT_HELP["maint"]),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> int:
    return _set_state(settings, node, "maint", wait, force)


@haproxy_app.command("weight", help="set server POOL_BACKEND/NODE weight N (0-256).")
@with_knobs(*ONCALL_KNOBS)
def haproxy_weight(
    settings: Settings,
    node: str = typer.Argument(..., metavar="NODE"),
    weight: int = typer.Argument(..., metavar="N"),
) -> int:
    if not 0 <= weight <= 256:
        raise ConfigError("N", f"{weight} is out of range (0-256)")
    with _fleet(settings) as fleet:
        _server_check(fleet, node)
        _note_lock(fleet)
        before = fleet.haproxy.get_weight(node)[0]
        fleet.haproxy.set_weight(node, weight)
        now, initial = fleet.haproxy.get_weight(node)
        out(f"{node}: weight {now} (was {before}, initial {initial})")
    return 0


@haproxy_app.command("show", help="Every server of POOL_BACKEND: status, admin state, weight, sessions, check.")
@with_knobs(*ONCALL_KNOBS)
def haproxy_show(
    settings: Settings,
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> int:
    with _fleet(settings) as fleet:
        states, stats = fleet.haproxy.states(), fleet.haproxy.stats()
    rows = [{"server": n, "status": st.status, "admin": states[n].admin if n in states else "?",
             "weight": st.weight, "sessions": st.scur, "queued": st.qcur, "check_status": st.check_status,
             "addr": states[n].addr if n in states else None} for n, st in stats.items()]
    if fmt is Format.json:
        out(json.dumps({"backend": settings.haproxy.backend, "servers": rows}, indent=2))
        return 0
    head = ("SERVER", "STATUS", "ADMIN", "WEIGHT", "SESS", "QUEUED", "CHECK", "ADDR")
    cells = [(r["server"], r["status"], r["admin"], str(r["weight"]), str(r["sessions"]), str(r["queued"]),
              r["check_status"] or "-", r["addr"] or "-") for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    out(f"backend {settings.haproxy.backend}:")
    for c in (head, *cells):
        out("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
    return 0


# --- sli ---------------------------------------------------------------------------------------


@sli_app.command("check", help="One SLI probe: each query, its value, the threshold and the verdict. "
                               "Exit 0 pass, 11 fail or no data, 10 Prometheus error.")
@with_knobs(*ONCALL_KNOBS)
def sli_check(
    settings: Settings,
    node: Optional[str] = typer.Option(  # noqa: UP045
        None, "--node", help="Node the SLI_SELECTOR's {node} stands for (default: CANARY_NODE)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> int:
    from veza_canary.errors import CheckFailed, PrometheusError
    from veza_canary.log import redact_text
    from veza_canary.sli import Queries, Verdict, thresholds_from_settings
    from veza_canary.status import check_detailed

    node = node or settings.pool.canary
    if check_instance_name(node):
        raise ConfigError("--node", check_instance_name(node) or "")
    q, t = Queries.from_settings(settings, node), thresholds_from_settings(settings)
    with _fleet(settings) as fleet:
        readings, smp = check_detailed(fleet.prom, q, t)
    if fmt is Format.json:
        out(json.dumps({"node": node, "prom_url": redact_text(settings.prometheus.url), **readings,
                        "verdict": str(smp.verdict), "reason": smp.reason}, indent=2, default=str))
    else:
        out(f"SLI check on {node} ({redact_text(settings.prometheus.url)}, rate window {settings.sli.rate_window}):")
        for name in ("p95", "errors", "total"):
            r = readings["queries"][name]
            out(f"  {name:<7} {r['query']}")
            out(f"          = {r['shown']}" + (f"    threshold {r['threshold']}" if r.get("threshold") else ""))
        ratio = readings["err_ratio"]
        out(f"  5xx ratio = {'-' if ratio is None else format(ratio, '.4f')}    threshold < {t.err_ratio:g}")
        out(f"verdict: {smp.verdict} ({smp.reason})")
    if smp.verdict is Verdict.ERROR:
        raise PrometheusError(f"SLI check on {node}: {smp.reason}")
    if smp.verdict is not Verdict.PASS:
        raise CheckFailed(f"SLI check on {node}: {smp.verdict}: {smp.reason}")
    return 0


def parse_window(v: str) -> float:
    """``300``, ``300s``, ``5m``, ``1h`` -> seconds (> 0, at most a week)."""
    from veza_canary.settings import parse_duration

    try:
        secs = parse_duration(v)
    except ValueError as exc:
        raise ConfigError("--window", str(exc)) from None
    if not 0 < secs <= 7 * 86400:
        raise ConfigError("--window", f"{secs:g}s is out of range (0 < window <= a week)")
    return secs


@sli_app.command("watch", help="The SLI watch loop without a deploy (after a manual change): probe every "
                               "SLI_PROBE_INTERVAL for the window. Exit 0 green, 11 red, 10 Prometheus errors.")
@with_knobs(*ONCALL_KNOBS)
def sli_watch(
    settings: Settings,
    window: Optional[str] = typer.Option(  # noqa: UP045
        None, "--window", metavar="W", help="How long to watch: 300, 300s, 5m, 1h (default: SLI_WINDOW). "
                                            "No 300 s floor here: this watch rolls nothing back."),
    node: Optional[str] = typer.Option(  # noqa: UP045
        None, "--node", help="Node the SLI_SELECTOR's {node} stands for (default: CANARY_NODE)."),
) -> int:
    from veza_canary.errors import PrometheusError, SLIBreached
    from veza_canary.liveview import haproxy_states, observing
    from veza_canary.sli import Queries, Verdict, WatchPolicy, thresholds_from_settings, watch
    from veza_canary.status import watch_probe

    node = node or settings.pool.canary
    if check_instance_name(node):
        raise ConfigError("--node", check_instance_name(node) or "")
    secs = parse_window(window) if window is not None else settings.sli.window
    if settings.sli.probe_interval > secs:
        raise ConfigError("--window", f"{secs:g}s is shorter than SLI_PROBE_INTERVAL ({settings.sli.probe_interval:g}s)")
    settings = settings.replace(sli_window=secs)
    policy = WatchPolicy(window_s=secs, interval_s=settings.sli.probe_interval, max_nodata=settings.sli.max_nodata,
                         max_errors=settings.sli.max_errors)
    q, t = Queries.from_settings(settings, node), thresholds_from_settings(settings)
    with _fleet(settings) as fleet, observing(settings, title=f"sli watch {node}",
                                              states=haproxy_states(fleet.haproxy), clock=fleet.clock) as obs:
        obs.on_watch(policy, node)
        result = watch(lambda at: watch_probe(fleet, node, q, t, at), policy, fleet.clock, on_sample=obs.on_sample)
    c = result.counts()
    summary = (f"{len(result.samples)} probes: {c['pass']} pass, {c['fail']} fail, {c['no-data']} no-data, "
               f"{c['error']} error")
    if result.ok:
        out(f"{result.reason}")
        return 0
    if result.samples and result.samples[-1].verdict is Verdict.ERROR:
        raise PrometheusError(f"SLI watch on {node} stopped: {result.reason} ({summary})")
    raise SLIBreached(f"SLI watch on {node} is RED: {result.reason} ({summary})")
