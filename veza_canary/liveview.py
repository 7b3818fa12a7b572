"""What a wait is waiting for: a live view on a TTY, one structured log line per probe otherwise.

The waits (``health.poll_until`` and its users) and the SLI watch report through an
``Observer``: ``on_poll`` for every poll of a drain, health, UP or LB wait,
``on_watch`` when an SLI watch starts, ``on_sample`` after each SLI probe.

* On a TTY, ``LiveView`` draws (with rich, imported only when a view starts) the
  elapsed/remaining time as a progress bar, the last p95 and 5xx ratio against their
  thresholds with a sparkline of recent samples, the consecutive no-data/error probes
  against their limits, and the node states. While it is up, the per-poll log lines
  are not printed (the view shows them) and every other log line and printed line
  goes above it.
* Otherwise ``LogObserver`` adds one ``sli.watch`` JSON line per probe carrying the
  same information; the waits already log one line per poll (``health.py``).

``render(state, now)`` is pure, so a frame can be snapshot-tested with a fake clock.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from veza_canary.clock import Clock
from veza_canary.log import get_logger
from veza_canary.sli import Sample, Verdict, WatchPolicy, WatchResult

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from veza_canary.haproxy import HAProxy
    from veza_canary.health import Poll
    from veza_canary.settings import Settings

log = get_logger(__name__)

#: Per-poll log events the view replaces on a TTY (they would scroll the view away).
POLL_EVENTS = frozenset({"wait.poll", "drain.poll", "health.poll", "up.poll", "lb.poll", "sli.probe"})
SPARK = "▁▂▃▄▅▆▇█"
BAR = 30
HISTORY = 40

NodeStates = Callable[[], dict[str, dict[str, Any]]]


class Observer(Protocol):
    """What the waits and the SLI watch report to."""

    def on_poll(self, poll: Poll) -> None: ...

    def on_watch(self, policy: WatchPolicy, node: str) -> None: ...

    def on_sample(self, sample: Sample, result: WatchResult) -> None: ...


# --- pure pieces -------------------------------------------------------------------------------


def sparkline(values: list[float | None], top: float) -> str:
    """One block per value, scaled to ``max(top, values)``; a missing value (no data) is ``·``."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    hi = max([top, *finite]) if finite else top
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append("·")
        else:
            i = 0 if hi <= 0 else round(max(0.0, v) / hi * (len(SPARK) - 1))
            out.append(SPARK[min(i, len(SPARK) - 1)])
    return "".join(out)


def fmt_s(seconds: float) -> str:
    """Compact duration: 42s, 3m05s, 1h02m."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class WaitState:
    what: str
    node: str | None
    started: float
    timeout: float
    attempt: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    done: bool = False


@dataclass
class WatchState:
    node: str
    policy: WatchPolicy
    started: float
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY))
    probes: int = 0
    nodata: int = 0  # consecutive
    errors: int = 0  # consecutive
    outcome: str | None = None


@dataclass
class ViewState:
    """Everything a frame shows. Updated by the observer, drawn by ``render``."""

    title: str
    p95_threshold: float
    err_threshold: float
    max_nodata: int
    max_errors: int
    wait: WaitState | None = None
    watch: WatchState | None = None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def for_settings(cls, s: Settings, title: str) -> ViewState:
        return cls(title=title, p95_threshold=s.sli.p95_threshold_s, err_threshold=s.sli.err_ratio_threshold,
                   max_nodata=s.sli.max_nodata, max_errors=s.sli.max_errors)

    def apply_poll(self, p: Poll, now: float) -> None:
        sw = self.watch
        if sw is not None and sw.outcome is None and sw.samples and sw.samples[-1].verdict == Verdict.PASS:
            # watch() reports its last (green) sample before it knows it is done; the next wait means it is.
            sw.outcome = f"green: SLI passed for {fmt_s(sw.policy.window_s)} ({sw.probes} probes)"
        w = self.wait
        if w is None or w.what != p.what or p.attempt == 1 or w.done:
            w = self.wait = WaitState(what=p.what, node=p.node, started=now - p.elapsed, timeout=p.timeout)
        w.attempt, w.fields, w.error, w.done = p.attempt, dict(p.fields), p.error, p.done
        if p.node and p.node != "LB" and not p.error:
            n = self.nodes.setdefault(p.node, {})
            if "status" in p.fields and "admin" not in p.fields:
                n.pop("admin", None)  # an UP/health poll does not read the admin state: do not show a stale one
            for k in ("status", "scur", "admin", "weight"):
                if k in p.fields:
                    n[k] = p.fields[k]
            if "http_status" in p.fields or "ok" in p.fields:
                n["health"] = p.fields.get("http_status") or "no answer"

    def start_watch(self, policy: WatchPolicy, node: str, now: float) -> None:
        self.wait = None
        self.watch = WatchState(node=node, policy=policy, started=now)

    def apply_sample(self, s: Sample, result: WatchResult, now: float) -> None:
        w = self.watch
        if w is None:  # a watch we were not told about: anchor it on the sample's own clock
            w = self.watch = WatchState(node="?", policy=WatchPolicy(s.at, s.at, self.max_nodata, self.max_errors),
                                        started=now - s.at)
        w.samples.append(s)
        w.probes += 1
        w.nodata = w.nodata + 1 if s.verdict == Verdict.NODATA else 0
        w.errors = w.errors + 1 if s.verdict == Verdict.ERROR else 0
        if result.reason:
            w.outcome = ("green: " if result.ok else "RED: ") + result.reason

    def set_nodes(self, nodes: dict[str, dict[str, Any]]) -> None:
        for name, st in nodes.items():
            self.nodes.setdefault(name, {}).update(st)

    def watch_fields(self, now: float) -> dict[str, Any]:
        """The SLI part of the view as flat, JSON-friendly fields (the non-TTY line)."""
        w = self.watch
        assert w is not None
        last = w.samples[-1] if w.samples else None
        elapsed = now - w.started
        return {
            "node": w.node, "elapsed": round(elapsed, 1), "window": w.policy.window_s,
            "remaining": round(max(0.0, w.policy.window_s - elapsed), 1), "probes": w.probes,
            "verdict": str(last.verdict) if last else None, "reason": last.reason if last else None,
            "p95": _num(last.p95) if last else None, "p95_threshold": self.p95_threshold,
            "err_ratio": _num(last.err_ratio) if last else None, "err_threshold": self.err_threshold,
            "req_rate": _num(last.req_rate) if last else None,
            **_side_fields(last),
            "nodata": w.nodata, "max_nodata": self.max_nodata, "errors": w.errors, "max_errors": self.max_errors,
            "nodes": {n: _node_line(st) for n, st in sorted(self.nodes.items())},
        }


def _side_fields(last: Any) -> dict[str, Any]:
    """The judge's evidence, when the sample carries it: canary and baseline counts, the closest rule's margin."""
    out: dict[str, Any] = {}
    for side in ("canary", "baseline"):
        st = getattr(last, side, None)
        if st is not None:
            out[side] = {"requests": st.requests, "errors": st.errors, "err_ratio": _num(st.err_ratio),
                         "err_upper": _num(st.err_upper), "slow_share": _num(st.slow_share)}
    margins = getattr(last, "margins", None) or {}
    if margins:
        rule, m = max(margins.items(), key=lambda kv: kv[1])
        out["closest_rule"], out["margin"] = rule, round(m, 3)
    return out


def _sides(last: Any, state: ViewState) -> list[Any]:
    """Canary and baseline side by side (the sound judge's counts), and how close the nearest rule is to failing."""
    from rich.text import Text

    c, b = getattr(last, "canary", None), getattr(last, "baseline", None)
    if c is None:
        return []

    def side(name: str, st: Any) -> str:
        if st is None:
            return f"{name:<9} no baseline (no peers, or a fleet-wide SLI)"
        ratio = f"{st.err_ratio:.4f}" if st.err_ratio is not None else "-"
        upper = f" (<= {st.err_upper:.4f})" if st.err_upper is not None else ""
        slow = f"{100 * st.slow_share:.1f}%" if st.slow_share is not None else "-"
        return (f"{name:<9} {int(st.requests):>7} req  5xx {int(st.errors):>5} = {ratio}{upper}  "
                f"slow {slow} (> {state.p95_threshold:g}s)")

    out = [Text(side("canary", c)), Text(side("baseline", b), style="dim")]
    margins = getattr(last, "margins", None) or {}
    if margins:
        rule, m = max(margins.items(), key=lambda kv: kv[1])
        out.append(Text(f"closest rule: {rule} at {100 * m:.0f}% of the way to failing",
                        style="bold red" if m >= 0.8 else ""))
    return out


def _num(v: float | None) -> float | str | None:
    if v is None:
        return None
    return v if math.isfinite(v) else str(v)


def _node_line(st: dict[str, Any]) -> str:
    status = str(st.get("status", "?"))
    parts = [status]
    admin = st.get("admin")
    if admin and admin != "ready" and not status.upper().startswith(str(admin).upper()):
        parts.append(f"({admin})")
    if st.get("scur") is not None:
        parts.append(f"{st['scur']} sess")
    if st.get("health") is not None:
        parts.append(f"health {st['health']}")
    return " ".join(parts)


def render(state: ViewState, now: float, *, max_nodes: int = 12) -> RenderableType:
    """One frame. Pure: the same state and ``now`` give the same frame."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    rows: list[Any] = []

    def bar(elapsed: float, total: float, label: str) -> Table:
        g = Table.grid(padding=(0, 1))
        g.add_column(width=BAR)
        g.add_column()
        g.add_row(ProgressBar(total=max(total, 1e-9), completed=min(elapsed, total), width=BAR),
                  Text(f"{fmt_s(elapsed)} / {fmt_s(total)}  {label}"))
        return g

    w = state.wait
    if w is not None:
        elapsed = min(now - w.started, w.timeout) if not w.done else now - w.started
        mark = "done" if w.done else f"poll {w.attempt}"
        rows.append(Text(f"waiting for: {w.what}  ({mark})", style="bold"))
        rows.append(bar(elapsed, w.timeout, "done" if w.done else f"{fmt_s(w.timeout - elapsed)} left"))
        rows.append(Text("last: " + (f"error: {w.error}" if w.error else _fields_line(w.fields))))

    sw = state.watch
    if sw is not None:
        pol = sw.policy
        elapsed = now - sw.started
        rows.append(Text(f"SLI watch on {sw.node}: every {fmt_s(pol.interval_s)} for {fmt_s(pol.window_s)}",
                         style="bold"))
        last = sw.samples[-1] if sw.samples else None
        left = "window closed" if elapsed >= pol.window_s else f"{fmt_s(pol.window_s - elapsed)} left"
        due = (last.at if last else 0.0) + pol.interval_s - elapsed
        rows.append(bar(min(elapsed, pol.window_s), pol.window_s, left))
        g = Table.grid(padding=(0, 2))
        for _ in range(4):
            g.add_column()
        p95s = [s.p95 for s in sw.samples]
        errs = [s.err_ratio for s in sw.samples]
        g.add_row("p95", _val(last.p95 if last else None, "{:.3f}s"), f"< {state.p95_threshold:g}s",
                  _spark(p95s, state.p95_threshold))
        g.add_row("5xx ratio", _val(last.err_ratio if last else None, "{:.4f}"), f"< {state.err_threshold:g}",
                  _spark(errs, state.err_threshold))
        rows.append(g)
        rows.extend(_sides(last, state))
        verdict = str(last.verdict) if last else "none yet"
        style = {"pass": "green", "fail": "bold red", "no-data": "yellow", "error": "yellow"}.get(verdict, "")
        line = Text("last probe: ")
        line.append(verdict, style=style)
        rate = f"  {last.req_rate:.1f} req/s" if last and last.req_rate is not None and \
            math.isfinite(last.req_rate) else ""
        nxt = "" if sw.outcome else f", next in {fmt_s(due)}" if due > 0 else ", probing"
        line.append(f"{rate}  ({sw.probes} probes{nxt})")
        rows.append(line)
        lim = Text(f"no-data {sw.nodata}/{state.max_nodata}  errors {sw.errors}/{state.max_errors}  "
                   "(in a row, against their limits)",
                   style="bold yellow" if sw.nodata or sw.errors else "")
        rows.append(lim)
        if last is not None and last.verdict != Verdict.PASS:
            rows.append(Text(f"  {last.reason}"))
        if sw.outcome:
            rows.append(Text(sw.outcome, style="bold green" if sw.outcome.startswith("green") else "bold red"))

    if state.nodes:
        t = Table.grid(padding=(0, 2))
        t.add_column()
        t.add_column()
        names = sorted(state.nodes, key=lambda n: (_healthy(state.nodes[n]), n))
        for n in names[:max_nodes]:
            st = state.nodes[n]
            t.add_row(n, Text(_node_line(st), style="" if _healthy(st) else "bold yellow"))
        if len(names) > max_nodes:
            t.add_row(f"... {len(names) - max_nodes} more", "")
        rows.append(Text("nodes:", style="bold"))
        rows.append(t)

    if not rows:
        rows.append(Text("starting..."))
    return Panel(Group(*rows), title=f"veza-canary {state.title}", title_align="left", expand=False)


def _healthy(st: dict[str, Any]) -> bool:
    return str(st.get("status", "")).startswith("UP") and st.get("admin", "ready") == "ready"


def _val(v: float | None, f: str) -> str:
    if v is None:
        return "-"
    return f.format(v) if math.isfinite(v) else str(v)


def _spark(values: list[float | None], top: float) -> str:
    return sparkline(values, top) if values else ""


def _fields_line(fields: dict[str, Any]) -> str:
    if "http_status" in fields or "ok" in fields:
        if fields.get("http_status") is None:
            return f"no answer ({fields.get('error') or '?'}) after {fields.get('latency_ms', 0):.0f} ms"
        return f"HTTP {fields['http_status']} in {fields.get('latency_ms', 0):.0f} ms"
    if "status" in fields:
        s = f"{fields['status']}"
        if "admin" in fields:
            s += f", admin {fields['admin']}"
        s += f", {fields.get('scur', 0)} sessions, {fields.get('qcur', 0)} queued"
        if "quiet_polls" in fields:
            s += f", quiet polls {fields['quiet_polls']}/2"
        if fields.get("check_status"):
            s += f", check {fields['check_status']}"
        return s
    return ", ".join(f"{k}={v}" for k, v in fields.items()) or "-"


# --- node states ----------------------------------------------------------------------------------


def haproxy_states(haproxy: HAProxy) -> NodeStates:
    """A ``states`` callable for the observers: each server's status, admin state and sessions."""

    def read() -> dict[str, dict[str, Any]]:
        states, stats = haproxy.states(), haproxy.stats()
        return {n: {"status": st.status, "scur": st.scur, "weight": st.weight,
                    "admin": states[n].admin if n in states else "?"} for n, st in stats.items()}

    return read


# --- observers --------------------------------------------------------------------------------------


class _Base:
    def __init__(self, settings: Settings, *, title: str, states: NodeStates | None, clock: Clock | None) -> None:
        self.clock = clock or Clock()
        self.state = ViewState.for_settings(settings, title)
        self.states = states
        self._lock = threading.Lock()

    def _refresh_nodes(self) -> None:
        if self.states is None:
            return
        try:
            nodes = self.states()
        except Exception as exc:  # noqa: BLE001 - a view must never break the operation it watches
            log.debug("liveview.states_failed", error=str(exc))
            return
        with self._lock:
            self.state.set_nodes(nodes)

    def on_poll(self, poll: Poll) -> None:
        with self._lock:
            self.state.apply_poll(poll, self.clock.monotonic())

    def on_watch(self, policy: WatchPolicy, node: str) -> None:
        with self._lock:
            self.state.start_watch(policy, node, self.clock.monotonic())
        self._refresh_nodes()

    def on_sample(self, sample: Sample, result: WatchResult) -> None:
        self._refresh_nodes()
        with self._lock:
            self.state.apply_sample(sample, result, self.clock.monotonic())

    def close(self) -> None:
        pass


class LogObserver(_Base):
    """Not a TTY: one structured ``sli.watch`` line per probe (the waits log their own per poll)."""

    def on_watch(self, policy: WatchPolicy, node: str) -> None:
        super().on_watch(policy, node)
        log.info("sli.watch.start", node=node, window=policy.window_s, interval=policy.interval_s,
                 p95_threshold=self.state.p95_threshold, err_threshold=self.state.err_threshold,
                 max_nodata=policy.max_nodata, max_errors=policy.max_errors)

    def on_sample(self, sample: Sample, result: WatchResult) -> None:
        super().on_sample(sample, result)
        with self._lock:
            fields = self.state.watch_fields(self.clock.monotonic())
        log.info("sli.watch", **fields)


class LiveView(_Base):
    """A TTY: a rich Live panel, started at the first event (so a confirmation prompt before it is readable)."""

    def __init__(self, settings: Settings, *, title: str, states: NodeStates | None = None,
                 clock: Clock | None = None, console: Console | None = None) -> None:
        super().__init__(settings, title=title, states=states, clock=clock)
        self.console = console
        self._live: Any = None
        self._restore_logging: Callable[[], None] | None = None

    def frame(self) -> RenderableType:
        with self._lock:
            return render(self.state, self.clock.monotonic())

    def _ensure_started(self) -> None:
        if self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live

        console = self.console or Console(file=sys.stderr)
        self._restore_logging = _quiet_poll_logs()
        # Transient: the view is for while the tool waits; the end state is printed as text after it.
        self._live = Live(console=console, get_renderable=self.frame, refresh_per_second=4, transient=True,
                          redirect_stdout=True, redirect_stderr=True)
        self._live.start()

    def on_poll(self, poll: Poll) -> None:
        super().on_poll(poll)
        self._ensure_started()

    def on_watch(self, policy: WatchPolicy, node: str) -> None:
        super().on_watch(policy, node)
        self._ensure_started()

    def on_sample(self, sample: Sample, result: WatchResult) -> None:
        super().on_sample(sample, result)
        self._ensure_started()

    def close(self) -> None:
        if self._live is not None:
            try:
                self._live.refresh()
                self._live.stop()
            finally:
                self._live = None
                if self._restore_logging:
                    self._restore_logging()
                    self._restore_logging = None


class _CurrentStream:
    """Writes to whatever ``sys.stdout``/``sys.stderr`` is *now* (rich's Live swaps in a proxy)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, s: str) -> int:
        return getattr(sys, self.name).write(s)

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def isatty(self) -> bool:
        return getattr(sys, self.name).isatty()


def current_stdout() -> Any:
    """A stream for end-of-run output that lands above a live view instead of through it."""
    return _CurrentStream("stdout")


def _quiet_poll_logs() -> Callable[[], None]:
    """While the view is up: drop the per-poll lines it shows, and print the rest above it."""
    import structlog

    from veza_canary.log import ensure_configured

    ensure_configured()
    old = structlog.get_config()

    def drop_polls(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if event_dict.get("event") in POLL_EVENTS:
            raise structlog.DropEvent
        return event_dict

    structlog.configure(processors=[drop_polls, *old["processors"]],
                        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStream("stderr")))

    def restore() -> None:
        structlog.configure(processors=old["processors"], logger_factory=old["logger_factory"])

    return restore


@contextmanager
def observing(settings: Settings, *, title: str, states: NodeStates | None = None, clock: Clock | None = None,
              tty: bool | None = None, console: Console | None = None) -> Iterator[Observer]:
    """The observer for this terminal: a ``LiveView`` on a TTY (stderr), else a ``LogObserver``."""
    if tty is None:
        tty = sys.stderr.isatty()
    obs: LiveView | LogObserver = (LiveView(settings, title=title, states=states, clock=clock, console=console)
                                   if tty else LogObserver(settings, title=title, states=states, clock=clock))
    try:
        yield obs
    finally:
        obs.close()
