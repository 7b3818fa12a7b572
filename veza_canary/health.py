"""Waits with deadlines: node health, HAProxy UP, drain complete; and the LB health request.

All waits use tenacity with an injected clock (``sleep=clock.sleep`` and a stop
on the clock's monotonic time), so policy tests never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import tenacity

from veza_canary.clock import Clock
from veza_canary.errors import HAProxyError, TransportError
from veza_canary.haproxy import HAProxy, ServerStat
from veza_canary.log import get_logger, redact_text
from veza_canary.node import HealthResult, Node

log = get_logger(__name__)
T = TypeVar("T")


class WaitTimedOut(Exception):
    """Internal: a wait hit its deadline; carries the last observation."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        super().__init__(f"{what}: not reached within {timeout:g}s (last: {last})")
        self.last = last


def poll_until(
    observe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float,
    clock: Clock,
    what: str,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``observe`` every ``interval`` until ``done(value)``; raise WaitTimedOut at the deadline."""
    start = clock.monotonic()
    last: list[object] = ["nothing observed"]

    def _observe() -> T:
        try:
            v = observe()
        except retry_on as exc:
            last[0] = f"error: {exc}"
            raise
        last[0] = v
        return v

    retry: tenacity.retry_base = tenacity.retry_if_not_result(done)
    if retry_on:
        retry = tenacity.retry_if_exception_type(retry_on) | retry
    retryer = tenacity.Retrying(
        stop=lambda rs: clock.monotonic() - start >= timeout,
        wait=tenacity.wait_fixed(interval),
        sleep=clock.sleep,
        retry=retry,
        reraise=False,
    )
    try:
        return retryer(_observe)
    except tenacity.RetryError:
        raise WaitTimedOut(what, timeout, last[0]) from None


def wait_node_healthy(node: Node, *, timeout: float, interval: float, clock: Clock) -> HealthResult:
    return poll_until(node.health, lambda h: h.ok, timeout=timeout, interval=interval, clock=clock,
                      what=f"{node.name} health 200")


def wait_up(haproxy: HAProxy, server: str, *, timeout: float, interval: float, clock: Clock) -> ServerStat:
    return poll_until(lambda: haproxy.stat(server), lambda s: s.is_up, timeout=timeout, interval=interval,
                      clock=clock, what=f"HAProxy reports {server} UP", retry_on=(HAProxyError,))


def wait_drained(haproxy: HAProxy, server: str, *, timeout: float, interval: float, clock: Clock) -> ServerStat:
    """Drained = admin state drain/maint, scur == 0 and qcur == 0 on two consecutive polls."""
    streak = [0]

    def observe() -> ServerStat:
        st = haproxy.state(server)
        stat = haproxy.stat(server)
        quiet = (st.drained or st.in_maint) and stat.scur == 0 and stat.qcur == 0
        streak[0] = streak[0] + 1 if quiet else 0
        log.info("drain.poll", server=server, status=stat.status, scur=stat.scur, qcur=stat.qcur,
                 admin=st.admin, quiet_polls=streak[0])
        return stat

    return poll_until(observe, lambda _s: streak[0] >= 2, timeout=timeout, interval=interval, clock=clock,
                      what=f"{server} drained (0 sessions)", retry_on=(HAProxyError,))


def lb_health(client: httpx.Client, url: str) -> HealthResult:
    """One request through the load balancer."""
    start = time.monotonic()
    try:
        r = client.get(url)
    except httpx.HTTPError as exc:
        return HealthResult(False, None, time.monotonic() - start, error=redact_text(str(exc) or type(exc).__name__))
    return HealthResult(r.status_code == 200, r.status_code, time.monotonic() - start, body=r.text[:2000])


def wait_lb_healthy(client: httpx.Client, url: str, *, timeout: float, interval: float,
                    clock: Clock) -> HealthResult:
    return poll_until(lambda: lb_health(client, url), lambda h: h.ok, timeout=timeout, interval=interval,
                      clock=clock, what=f"LB health {redact_text(url)}", retry_on=(TransportError,))
