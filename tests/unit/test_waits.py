"""The waits' policy with a fake clock: drain needs two quiet polls, deadlines hold, HAProxy errors are retried."""

from __future__ import annotations

import pytest

from tests.fakes import SimFleet, SimHAProxy
from veza_canary.clock import FakeClock
from veza_canary.errors import HAProxyError
from veza_canary.haproxy import HAProxy
from veza_canary.health import WaitTimedOut, poll_until, wait_drained, wait_up

NODES = ["backend-api-1", "backend-api-2"]


def test_drain_completes_only_after_two_consecutive_quiet_polls():
    sim = SimFleet(NODES)
    h = HAProxy(SimHAProxy(sim), "api_pool")
    h.set_state("backend-api-1", "drain")
    clock = FakeClock()
    wait_drained(h, "backend-api-1", timeout=10, interval=0.5, clock=clock)
    assert clock.slept == [0.1], "one poll, a pause of the first gap, a second quiet poll"


def test_drain_that_never_empties_times_out_at_the_deadline():
    sim = SimFleet(NODES)
    sim.sticky_sessions["backend-api-1"] = 2
    h = HAProxy(SimHAProxy(sim), "api_pool")
    h.set_state("backend-api-1", "drain")
    clock = FakeClock()
    with pytest.raises(WaitTimedOut) as ei:
        wait_drained(h, "backend-api-1", timeout=5, interval=0.5, clock=clock)
    assert 5.0 <= clock.t - 1000.0 <= 5.5
    assert "scur" in str(ei.value) or "2" in str(ei.value)


def test_a_server_that_is_not_drained_is_not_quiet_even_with_zero_sessions():
    sim = SimFleet(NODES)
    h = HAProxy(SimHAProxy(sim), "api_pool")
    with pytest.raises(WaitTimedOut):
        wait_drained(h, "backend-api-1", timeout=2, interval=0.5, clock=FakeClock())


def test_wait_up_retries_through_haproxy_errors():
    sim = SimFleet(NODES)
    h = HAProxy(SimHAProxy(sim), "api_pool")
    flaky = {"n": 0}
    real_send = h.sock.send

    def send(cmd: str) -> str:
        flaky["n"] += 1
        if flaky["n"] <= 2:
            raise HAProxyError("admin socket unreachable")
        return real_send(cmd)

    h.sock.send = send  # type: ignore[method-assign]
    assert wait_up(h, "backend-api-2", timeout=10, interval=1, clock=FakeClock()).is_up


def test_poll_until_returns_the_first_good_observation():
    values = iter([1, 2, 3, 4])
    clock = FakeClock()
    assert poll_until(lambda: next(values), lambda v: v >= 3, timeout=10, interval=1, clock=clock, what="x") == 3
    assert clock.slept == [0.1, 0.2]


def test_gaps_start_short_and_double_up_to_the_poll_interval():
    values = iter(range(100))
    clock = FakeClock()
    poll_until(lambda: next(values), lambda v: v >= 7, timeout=60, interval=0.5, clock=clock, what="x")
    assert clock.slept == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5]
    clock = FakeClock()
    values = iter(range(100))
    poll_until(lambda: next(values), lambda v: v >= 3, timeout=60, interval=0.05, clock=clock, what="x")
    assert clock.slept == [0.05, 0.05, 0.05], "an interval under the first gap is never exceeded"


def test_abort_is_asked_before_every_poll_but_the_first():
    asked: list[int] = []
    polls = iter(range(100))

    def abort() -> str | None:
        asked.append(1)
        return "unit failed" if len(asked) == 2 else None

    from veza_canary.health import WaitAborted

    with pytest.raises(WaitAborted, match="unit failed"):
        poll_until(lambda: next(polls), lambda v: False, timeout=60, interval=0.5, clock=FakeClock(), what="x",
                   abort=abort)
    assert len(asked) == 2 and next(polls) == 2, "polled at once, asked before polls 2 and 3, aborted before 3"
