"""The on-call operations behind ``rollback``, ``health``, ``haproxy ...`` and ``sli ...``, with their policy.

Each function takes a ``Fleet`` (built by the caller, so tests pass a simulated one), does one
operation with its safety rules, and returns the lines to print or raises a ``VezaError``. The
CLI only parses options, builds settings and the fleet, calls one of these and maps the error
to its exit code. ``status`` lives in ``status.py`` and the lock release in ``FleetLock.break_lock``.

Policy kept here:

* **The last-server guard**: ``drain``/``maint`` of the only server still serving the backend
  is refused (exit 3) unless forced -- it would take the whole service down.
* **No widening**: an empty ``--nodes`` or ``--to`` is refused, never read as "all" or "previous".
* **Honest codes**: a node or LB that cannot be reached is exit 10 (infrastructure), an answer
  other than 200 is exit 11 (the check is red).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veza_canary.errors import (
    CheckFailed,
    ConfigError,
    DrainTimedOut,
    HealthCheckFailed,
    InfraError,
    PreflightError,
    PrometheusError,
    SLIBreached,
    TransportError,
    VezaError,
)
from veza_canary.log import redact_text
from veza_canary.settings import Settings, check_instance_name, parse_duration

if TYPE_CHECKING:
    from veza_canary.fleet import Fleet
    from veza_canary.haproxy import HAProxy
    from veza_canary.liveview import Observer
    from veza_canary.report import Report

Say = Callable[[str], None]

#: HAProxy admin states an on-call may set on a server.
SERVER_STATES = ("drain", "maint", "ready")
#: A manual SLI watch is at most this long (it rolls nothing back; a longer one is a typo).
MAX_WATCH_S = 7 * 86400.0


# --- which nodes ---------------------------------------------------------------------------------------


def covering(settings: Settings, *names: str) -> Settings:
    """Settings whose fleet also covers ``names`` (nodes named on the command line but not configured)."""
    for n in names:
        problem = check_instance_name(n)
        if problem:
            raise ConfigError("NODE", problem)
    missing = tuple(n for n in names if n not in settings.pool.nodes)
    return settings.replace(peer_nodes=(*settings.pool.peers, *missing)) if missing else settings


def rollback_nodes(spec: str, settings: Settings) -> list[str]:
    """``--nodes``: ``all`` (CANARY_NODE then PEER_NODES) or node names separated by commas or spaces.

    Empty is refused, never read as "all". Only commas and spaces separate: a newline or any other control
    character stays inside a name and fails the name check (it is never stripped away).
    """
    items = [n for n in re.split(r"[, ]+", spec) if n]
    if not items:
        raise ConfigError("--nodes", "is empty (give all, or node names separated by commas)")
    if items == ["all"]:
        return list(settings.pool.nodes)
    for n in items:
        problem = check_instance_name(n)
        if problem:
            raise ConfigError("--nodes", problem)
    if len(set(items)) != len(items):
        raise ConfigError("--nodes", "lists a node twice")
    return items


def rollback_target(to: str | None, settings: Settings) -> str:
    """``--to``: ``previous`` or a local binary; unset means ROLLBACK_BINARY, else previous. Empty is refused."""
    from veza_canary.manual_rollback import PREVIOUS

    if to is not None and not to.strip():
        raise ConfigError("--to", "is empty (give previous, or the path of a local binary)")
    return to or (str(settings.rollback_binary) if settings.rollback_binary else PREVIOUS)


# --- HAProxy -------------------------------------------------------------------------------------------


def check_server(haproxy: HAProxy, server: str) -> tuple[dict, dict]:
    """HAProxy's states and stats, after checking ``server`` is a server of the backend (else exit 2)."""
    states, stats = haproxy.states(), haproxy.stats()
    if server not in states or server not in stats:
        raise ConfigError("NODE", f"{server!r} is not a server of HAProxy backend {haproxy.backend!r} "
                                  f"(it has: {', '.join(sorted(states)) or 'none'})")
    return states, stats


def guard_last_in_rotation(states: dict, stats: dict, server: str, state: str, backend: str) -> None:
    """Refuse to take the last server in rotation out (drain or maint would stop the whole service)."""
    if state not in ("drain", "maint"):
        return
    serving = [n for n in stats if states.get(n) is not None and states[n].admin == "ready" and stats[n].is_up]
    if serving == [server]:
        raise PreflightError(f"{server} is the last server in rotation of {backend!r}: {state} would take the "
                             "whole service down; nothing was changed",
                             hint="--force does it anyway (Sev-1 all-stop: see INCIDENT_RESPONSE.md)")


def lock_note(fleet: Fleet) -> str | None:
    """A note when a deploy holds the fleet lock (it may change the server again); None otherwise."""
    try:
        cur = fleet.lock().current()
    except VezaError:
        return None  # a note only: this command does not need the lock
    return None if cur is None else f"note: a deploy holds the fleet lock ({cur.describe()}); " \
                                    "it may change this node again"


def stat_line(fleet: Fleet, server: str) -> str:
    st, stat = fleet.haproxy.state(server), fleet.haproxy.stat(server)
    return (f"{server}: {stat.status}, admin {st.admin}, weight {stat.weight}, {stat.scur} sessions, "
            f"{stat.qcur} queued, check {stat.check_status or '-'}")


def set_server_state(fleet: Fleet, server: str, state: str, *, wait: bool = False, force: bool = False,
                     observer: Observer | None = None, say: Say, note: Say | None = None) -> None:
    """``set server BACKEND/SERVER state STATE``, guarded, then optionally wait for 0 sessions or UP."""
    from veza_canary.health import WaitTimedOut, wait_drained, wait_up

    if state not in SERVER_STATES:
        raise ConfigError("STATE", f"{state!r} is not one of {', '.join(SERVER_STATES)}")
    s = fleet.settings
    states, stats = check_server(fleet.haproxy, server)
    if not force:
        guard_last_in_rotation(states, stats, server, state, fleet.haproxy.backend)
    if (n := lock_note(fleet)) and note:
        note(n)
    before = states[server].admin
    fleet.haproxy.set_state(server, state)
    say(f"{server}: state {state} (was {before})")
    if wait:
        on_poll = observer.on_poll if observer is not None else None
        try:
            if state == "ready":
                wait_up(fleet.haproxy, server, timeout=s.timeouts.up, interval=s.timeouts.poll_interval,
                        clock=fleet.clock, on_poll=on_poll)
            else:
                wait_drained(fleet.haproxy, server, timeout=s.timeouts.drain, interval=s.timeouts.poll_interval,
                             clock=fleet.clock, on_poll=on_poll)
        except WaitTimedOut as exc:
            if state == "ready":
                raise HealthCheckFailed(str(exc), hint=f"check the node: veza-canary health {server}") from None
            raise DrainTimedOut(str(exc), hint=(
                f"the node stays {state}; its sessions are still open (veza-canary haproxy show). Wait longer "
                "(--drain-timeout) or let a rollback cut them (--drain-timeout-action shutdown-sessions)")) from None
    say(stat_line(fleet, server))


def set_server_weight(fleet: Fleet, server: str, weight: int, *, note: Say | None = None) -> str:
    if not 0 <= weight <= 256:
        raise ConfigError("N", f"{weight} is out of range (0-256)")
    check_server(fleet.haproxy, server)
    if (n := lock_note(fleet)) and note:
        note(n)
    before = fleet.haproxy.get_weight(server)[0]
    fleet.haproxy.set_weight(server, weight)
    now, initial = fleet.haproxy.get_weight(server)
    return f"{server}: weight {now} (was {before}, initial {initial})"


def restore_traffic(fleet: Fleet) -> list[str]:
    """``haproxy weight --restore``: every server at its configured weight, every canary pin removed."""
    from veza_canary.traffic import restore_all

    found = restore_all(fleet.haproxy, str(fleet.settings.traffic.pin_map))
    return found.lines() if not found.clean else ["nothing to restore: every weight is its configured one, no pin"]


def servers(fleet: Fleet) -> list[dict[str, Any]]:
    """Every server of the backend: status, admin state, weight, sessions, queue, check, address."""
    states, stats = fleet.haproxy.states(), fleet.haproxy.stats()
    return [{"server": n, "status": st.status, "admin": states[n].admin if n in states else "?",
             "weight": st.weight, "sessions": st.scur, "queued": st.qcur, "check_status": st.check_status,
             "addr": states[n].addr if n in states else None} for n, st in stats.items()]


def servers_table(backend: str, rows: list[dict[str, Any]]) -> list[str]:
    head = ("SERVER", "STATUS", "ADMIN", "WEIGHT", "SESS", "QUEUED", "CHECK", "ADDR")
    cells = [(r["server"], r["status"], r["admin"], str(r["weight"]), str(r["sessions"]), str(r["queued"]),
              r["check_status"] or "-", r["addr"] or "-") for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    return [f"backend {backend}:", *("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip()
                                     for c in (head, *cells))]


# --- health --------------------------------------------------------------------------------------------


def check_health(fleet: Fleet, node: str | None) -> str:
    """One health request to ``node`` (from inside its container) or, for None, through the LB.

    Returns the line to print on HTTP 200. A node whose container, or an LB that, cannot be reached at
    all is InfraError (10); any other answer is HealthCheckFailed (11).
    """
    from veza_canary.health import lb_health
    from veza_canary.status import version_from_body

    s = fleet.settings
    if node is None:
        what = f"LB {redact_text(s.service.lb_health_url)}"
        h = lb_health(fleet.lb_client, s.service.lb_health_url)
        if h.status is None:
            raise InfraError(f"{what}: cannot reach the load balancer: {h.error or 'no answer'}")
    else:
        n = fleet.nodes[node]
        what = f"{node} {redact_text(s.service.node_health_url)}"
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
    return line


# --- manual rollback -----------------------------------------------------------------------------------


@contextmanager
def reported(report: Report, settings: Settings, report_path: Path | None, say: Say) -> Iterator[Report]:
    """Write ``report`` (STATE_DIR/reports and ``report_path``) and print its summary, however the body ends.

    The error, if any, propagates after the report is written: its exit code is the command's.
    """
    from veza_canary.pipeline import summary_lines
    from veza_canary.report import report_paths, write_reports

    try:
        yield report
    finally:
        for path in write_reports(report, report_paths(report, settings, report_path)):
            say(f"report: {path}")
        for line in summary_lines(report):
            say(line)


def rollback_plan(fleet: Fleet, names: list[str], target: str) -> list[str]:
    """The dry run of a manual rollback: what each node would get. Changes nothing."""
    from veza_canary.artifact import private_workdir
    from veza_canary.manual_rollback import ManualRollback

    workdir = private_workdir()
    try:
        mr = ManualRollback(fleet, names, target, workdir=workdir)
        mr.plan()
        return [*mr.plan_lines(), "(dry run: nothing was changed)"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_rollback(fleet: Fleet, names: list[str], target: str, *, report_path: Path | None = None,
                 confirm: Callable[[str], bool] | None = None, observer: Observer | None = None,
                 command_line: str = "veza-canary rollback", say: Say) -> None:
    """The runbook's manual full rollback of ``names`` to ``target``; the report is written on every path."""
    from veza_canary.announce import Announcer
    from veza_canary.artifact import private_workdir
    from veza_canary.manual_rollback import ManualRollback
    from veza_canary.report import Report

    workdir = private_workdir()
    ann = Announcer.from_settings(fleet.settings, store=fleet.store, command="rollback", repo_root=Path.cwd())
    ann.learn(nodes=tuple(names))
    try:
        with reported(Report(command="rollback"), fleet.settings, report_path, say) as rep:
            try:
                ManualRollback(fleet, names, target, workdir=workdir, report=rep, confirm=confirm,
                               observer=observer, command_line=command_line, say=say, announcer=ann).run()
            finally:
                ann.post_deploy()
                rep.notifications = ann.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the SLI -------------------------------------------------------------------------------------------


def sli_node(node: str | None, settings: Settings) -> str:
    """``--node`` of the SLI commands (default CANARY_NODE), checked as a name."""
    node = node or settings.pool.canary
    problem = check_instance_name(node)
    if problem:
        raise ConfigError("--node", problem)
    return node


def sli_check(fleet: Fleet, node: str) -> dict[str, Any]:
    """One SLI probe of ``node`` keeping each query and its value; ``verdict`` says how it went.

    The caller prints it (``sli_check_lines`` or JSON) and then calls ``sli_check_outcome``.
    """
    from veza_canary.sli import Queries, thresholds_from_settings
    from veza_canary.status import check_detailed

    s = fleet.settings
    t = thresholds_from_settings(s)
    readings, smp = check_detailed(fleet.prom, Queries.from_settings(s, node), t)
    return {"node": node, "prom_url": redact_text(s.prometheus.url), "rate_window": s.sli.rate_window,
            **readings, "verdict": str(smp.verdict), "reason": smp.reason}


def sli_check_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"SLI check on {result['node']} ({result['prom_url']}, rate window {result['rate_window']}):"]
    for name in ("p95", "errors", "total"):
        r = result["queries"][name]
        lines.append(f"  {name:<7} {r['query']}")
        lines.append(f"          = {r['shown']}" + (f"    threshold {r['threshold']}" if r.get("threshold") else ""))
    ratio = result["err_ratio"]
    shown = "-" if ratio is None else format(ratio, ".4f") if isinstance(ratio, float) else str(ratio)
    lines.append(f"  5xx ratio = {shown}    threshold < {result['err_threshold']:g}")
    lines.append(f"verdict: {result['verdict']} ({result['reason']})")
    return lines


def sli_check_outcome(result: dict[str, Any]) -> None:
    """Exit 0 on pass; PrometheusError (10) on an error verdict; CheckFailed (11) on fail or no data."""
    if result["verdict"] == "error":
        raise PrometheusError(f"SLI check on {result['node']}: {result['reason']}")
    if result["verdict"] != "pass":
        raise CheckFailed(f"SLI check on {result['node']}: {result['verdict']}: {result['reason']}")


def watch_window(value: str | None, settings: Settings) -> float:
    """``--window`` of ``sli watch`` (``300``, ``5m``, ``1h``; default SLI_WINDOW), in seconds."""
    if value is None:
        secs = settings.sli.window
    else:
        try:
            secs = parse_duration(value)
        except ValueError as exc:
            raise ConfigError("--window", str(exc)) from None
    if not 0 < secs <= MAX_WATCH_S or not math.isfinite(secs):
        raise ConfigError("--window", f"{secs:g}s is out of range (0 < window <= a week)")
    if settings.sli.probe_interval > secs:
        raise ConfigError("--window", f"{secs:g}s is shorter than SLI_PROBE_INTERVAL "
                                      f"({settings.sli.probe_interval:g}s)")
    return secs


def sli_watch(fleet: Fleet, node: str, window_s: float, *, observer: Observer | None = None) -> str:
    """The SLI watch loop without a deploy. Returns the green line; SLIBreached (11) or PrometheusError (10)."""
    from veza_canary.sli import Queries, Verdict, WatchPolicy, thresholds_from_settings, watch
    from veza_canary.status import watch_probe

    s = fleet.settings
    policy = WatchPolicy(window_s=window_s, interval_s=s.sli.probe_interval, max_nodata=s.sli.max_nodata,
                         max_errors=s.sli.max_errors)
    q, t = Queries.from_settings(s, node), thresholds_from_settings(s)
    if observer is not None:
        observer.on_watch(policy, node)
    result = watch(lambda at: watch_probe(fleet, node, q, t, at), policy, fleet.clock,
                   on_sample=observer.on_sample if observer is not None else None)
    c = result.counts()
    summary = (f"{len(result.samples)} probes: {c['pass']} pass, {c['fail']} fail, {c['no-data']} no-data, "
               f"{c['error']} error")
    if result.ok:
        return result.reason
    if result.samples and result.samples[-1].verdict is Verdict.ERROR:
        raise PrometheusError(f"SLI watch on {node} stopped: {result.reason} ({summary})")
    raise SLIBreached(f"SLI watch on {node} is RED: {result.reason} ({summary})")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
