"""Waits with deadlines: node health, HAProxy UP, drain complete; and the LB health request.

All waits use tenacity with an injected clock (``sleep=clock.sleep`` and a stop
on the clock's monotonic time), so policy tests never sleep. Every poll logs one
structured line (what, node, attempt, elapsed, remaining, the observation) and is
handed, as a ``Poll``, to an optional ``on_poll`` observer (the live view).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import tenacity

from veza_canary.clock import Clock
from veza_canary.errors import HAProxyError, TransportError
from veza_canary.haproxy import HAProxy, ServerStat
from veza_canary.log import get_logger, redact_text
from veza_canary.node import HealthResult, Node, ServiceState

log = get_logger(__name__)
T = TypeVar("T")


class WaitAborted(Exception):
    """Internal: a wait's ``abort`` check gave a reason to stop at once (a dead canary), before its deadline."""

    def __init__(self, what: str, reason: str, elapsed: float) -> None:
        super().__init__(f"{what}: abandoned after {elapsed:.1f}s: {reason}")
        self.reason = reason
        self.elapsed = elapsed


class WaitTimedOut(Exception):
    """Internal: a wait hit its deadline; carries the last observation."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        self.last = last
        super().__init__(f"{what}: not reached within {timeout:g}s; last seen: {self.describe_last()}")

    def describe_last(self) -> str:
        """The last observation in words (never a Python repr)."""
        last = self.last
        if isinstance(last, HealthResult):
            return last.describe()
        if isinstance(last, ServerStat):
            sessions = f", {last.scur} session(s), {last.qcur} queued" if last.scur or last.qcur else ""
            return f"{last.status}{sessions}" + (f" (check: {last.check_status})" if last.check_status else "")
        return str(last)


@dataclass(frozen=True, slots=True)
class Poll:
    """One observation made by a wait: what the live view draws and the per-poll log line says."""

    what: str
    node: str | None
    attempt: int
    elapsed: float
    timeout: float
    done: bool
    fields: dict[str, Any] = field(default_factory=dict)  # the observation, summarised (status, sessions, ...)
    error: str | None = None

    @property
    def remaining(self) -> float:
        return max(0.0, self.timeout - self.elapsed)


PollObserver = Callable[[Poll], None]

#: The first gap between two polls of a wait, doubled after each poll up to POLL_INTERVAL.
FIRST_GAP = 0.1


def poll_gaps(interval: float) -> tenacity.wait.wait_base:
    """0.1 s, 0.2 s, 0.4 s, ... capped at ``interval`` (never more often than every 0.1 s, nor than ``interval``)."""
    first = min(FIRST_GAP, interval)
    return tenacity.wait_exponential(multiplier=first, min=first, max=interval)


def summarize(value: object) -> dict[str, Any]:
    """The loggable fields of an observation."""
    if isinstance(value, ServerStat):
        return {"status": value.status, "scur": value.scur, "qcur": value.qcur, "weight": value.weight,
                "check_status": value.check_status}
    if isinstance(value, HealthResult):
        return {"ok": value.ok, "http_status": value.status, "latency_ms": round(value.latency * 1000, 1),
                "error": value.error}
    return {"value": str(value)[:200]}


def poll_until(
    observe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float,
    clock: Clock,
    what: str,
    retry_on: tuple[type[BaseException], ...] = (),
    node: str | None = None,
    event: str = "wait.poll",
    describe: Callable[[T], dict[str, Any]] = summarize,
    on_poll: PollObserver | None = None,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call ``observe`` until ``done(value)``; raise WaitTimedOut at the deadline.

    The first poll is immediate; the gaps after it start at ``FIRST_GAP`` and double up to ``interval``
    (POLL_INTERVAL): most waits end within a few tenths of a second (a drain with no sessions, a service
    that starts in 50 ms), a slow one is polled no more often than the interval. Each poll logs one
    ``event`` line and is passed to ``on_poll`` (if given) as a ``Poll``. ``abort`` (if given) is asked
    before each poll after the first: a reason ends the wait at once with WaitAborted.
    """
    start = clock.monotonic()
    last: list[object] = ["nothing observed"]
    attempt = [0]

    def _report(fields: dict[str, Any], is_done: bool, error: str | None) -> None:
        attempt[0] += 1
        p = Poll(what=what, node=node, attempt=attempt[0], elapsed=clock.monotonic() - start, timeout=timeout,
                 done=is_done, fields=fields, error=error)
        log.info(event, what=what, node=node, attempt=p.attempt, elapsed=round(p.elapsed, 3),
                 remaining=round(p.remaining, 3), done=is_done, **({"error": error} if error else {}), **fields)
        if on_poll is not None:
            on_poll(p)

    def _observe() -> T:
        why = abort() if abort is not None and attempt[0] else None  # nothing was waited for before the first
        if why:
            _report({}, False, why)
            raise WaitAborted(what, why, clock.monotonic() - start)
        try:
            v = observe()
        except retry_on as exc:
            last[0] = f"error: {exc}"
            _report({}, False, redact_text(str(exc)))
            raise
        last[0] = v
        _report(describe(v), done(v), None)
        return v

    retry: tenacity.retry_base = tenacity.retry_if_not_result(done)
    if retry_on:
        retry = tenacity.retry_if_exception_type(retry_on) | retry
    retryer = tenacity.Retrying(
        stop=lambda rs: clock.monotonic() - start >= timeout,
        wait=poll_gaps(interval),
        sleep=clock.sleep,
        retry=retry,
        reraise=False,
    )
    try:
        return retryer(_observe)
    except tenacity.RetryError:
        raise WaitTimedOut(what, timeout, last[0]) from None


def wait_node_healthy(node: Node, *, timeout: float, interval: float, clock: Clock,
                      on_poll: PollObserver | None = None,
                      fail_fast: Callable[[], str | None] | None = None) -> HealthResult:
    """Poll the node's health until 200. ``fail_fast`` (e.g. ``dead_canary(node)``) ends the wait at once
    with WaitAborted when it gives a reason: a unit systemd reports failed needs no deadline."""
    return poll_until(node.health, lambda h: h.ok, timeout=timeout, interval=interval, clock=clock,
                      what=f"{node.name} health 200", node=node.name, event="health.poll", on_poll=on_poll,
                      abort=fail_fast)


def dead_canary(node: Node) -> Callable[[], str | None]:
    """A ``fail_fast`` / ``alive`` check for ``node``: the unit failed, auto-restarting, stopped, or restarted
    by systemd since the check's first call. That first call reads the baseline (and already reports a unit
    failed or restarting); call it right after the restart or at the stage's start. Unknown state is never
    "dead"."""
    first: list[ServiceState | None] = []

    def check() -> str | None:
        now = node.service_state()
        if not first:
            first.append(now)
            return now.dead() if now is not None else None
        return now.dead(first[0]) if now is not None else None

    return check


def wait_up(haproxy: HAProxy, server: str, *, timeout: float, interval: float, clock: Clock,
            on_poll: PollObserver | None = None) -> ServerStat:
    return poll_until(lambda: haproxy.stat(server), lambda s: s.is_up, timeout=timeout, interval=interval,
                      clock=clock, what=f"HAProxy reports {server} UP", retry_on=(HAProxyError,), node=server,
                      event="up.poll", on_poll=on_poll)


def wait_drained(haproxy: HAProxy, server: str, *, timeout: float, interval: float, clock: Clock,
                 on_poll: PollObserver | None = None) -> ServerStat:
    """Drained = admin state drain/maint, scur == 0 and qcur == 0 on two consecutive polls (at least
    ``FIRST_GAP`` apart: a session HAProxy is still opening shows in the second)."""
    streak = [0]
    admin = ["?"]

    def observe() -> ServerStat:
        v = haproxy.view(server)  # admin state and sessions in one runtime-API call
        st, stat = v.state, v.stat
        quiet = (st.drained or st.in_maint) and stat.scur == 0 and stat.qcur == 0
        streak[0] = streak[0] + 1 if quiet else 0
        admin[0] = st.admin
        return stat

    return poll_until(observe, lambda _s: streak[0] >= 2, timeout=timeout, interval=interval, clock=clock,
                      what=f"{server} drained (0 sessions)", retry_on=(HAProxyError,), node=server,
                      event="drain.poll", on_poll=on_poll,
                      describe=lambda s: {**summarize(s), "server": server, "admin": admin[0],
                                          "quiet_polls": streak[0]})


def lb_health(client: httpx.Client, url: str) -> HealthResult:
    """One request through the load balancer."""
    start = time.monotonic()
    try:
        r = client.get(url)
    except httpx.HTTPError as exc:
        return HealthResult(False, None, time.monotonic() - start, error=redact_text(str(exc) or type(exc).__name__))
    return HealthResult(r.status_code == 200, r.status_code, time.monotonic() - start, body=r.text[:2000])


def wait_lb_healthy(client: httpx.Client, url: str, *, timeout: float, interval: float,
                    clock: Clock, on_poll: PollObserver | None = None) -> HealthResult:
    return poll_until(lambda: lb_health(client, url), lambda h: h.ok, timeout=timeout, interval=interval,
                      clock=clock, what=f"LB health {redact_text(url)}", retry_on=(TransportError,), node="LB",
                      event="lb.poll", on_poll=on_poll)
