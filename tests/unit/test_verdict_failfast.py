"""A dead canary ends the node-health wait and the SLI watch at once, not at their deadlines."""

from __future__ import annotations

import math

import pytest

from veza_canary.clock import FakeClock
from veza_canary.health import WaitAborted, dead_canary, wait_node_healthy
from veza_canary.node import Node
from veza_canary.transport.base import Transport
from veza_canary.verdict import Evidence, Outcome, Policy, Side, watch


class UnitTransport(Transport):
    """A node whose health answers 503 and whose unit follows ``states`` (one per ``systemctl show``)."""

    name = "unit-fake"

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.argvs: list[tuple[str, ...]] = []

    def _run(self, argv, input, timeout):  # noqa: A002 - the base class's name
        self.argvs.append(argv)
        if argv[:2] == ("systemctl", "show"):
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return 0, state.encode(), b""
        if argv[0] == "curl":
            return 0, b"starting\n503", b""
        return 127, b"", b"unknown"


def unit(active: str, sub: str, restarts: int) -> str:
    return f"ActiveState={active}\nSubState={sub}\nNRestarts={restarts}\nMainPID=42\n"


def node(states: list[str]) -> Node:
    return Node("backend-api-2", UnitTransport(states), install_dir="/opt/x", restart_argv=("true",),
                health_url="http://127.0.0.1:8080/h", service="veza-backend-api")


def test_service_state_is_one_systemctl_show():
    n = node([unit("active", "running", 0)])
    st = n.service_state()
    assert st is not None and (st.active, st.sub, st.restarts, st.pid) == ("active", "running", 0, 42)
    assert n.transport.argvs == [("systemctl", "show", "-p", "ActiveState", "-p", "SubState", "-p", "NRestarts",
                                  "-p", "MainPID", "--", "veza-backend-api")]


def test_a_unit_failing_at_start_ends_the_health_wait_at_the_first_poll():
    n = node([unit("activating", "start", 0), unit("failed", "failed", 0)])
    clock = FakeClock()
    with pytest.raises(WaitAborted) as exc:
        wait_node_healthy(n, timeout=60, interval=0.5, clock=clock, fail_fast=dead_canary(n))
    assert "failed" in exc.value.reason and sum(clock.slept) < 1


def test_a_restart_counter_rising_ends_the_health_wait():
    n = node([unit("active", "running", 0), unit("active", "running", 0), unit("active", "running", 1)])
    clock = FakeClock()
    with pytest.raises(WaitAborted) as exc:
        wait_node_healthy(n, timeout=60, interval=0.5, clock=clock, fail_fast=dead_canary(n))
    assert "NRestarts 0 -> 1" in exc.value.reason and sum(clock.slept) <= 1.0


def test_a_live_unit_waits_until_the_deadline_as_before():
    from veza_canary.health import WaitTimedOut

    n = node([unit("active", "running", 0)])
    with pytest.raises(WaitTimedOut):
        wait_node_healthy(n, timeout=5, interval=0.5, clock=FakeClock(), fail_fast=dead_canary(n))


def test_an_unknown_unit_state_is_never_dead():
    n = Node("n", UnitTransport(["0\n"]), install_dir="/opt/x", restart_argv=("true",), health_url="http://x/h",
             service="svc")
    assert n.service_state() is None and dead_canary(n)() is None


def test_a_unit_dying_mid_watch_ends_the_watch_within_seconds():
    n = node([unit("active", "running", 0)] * 30 + [unit("activating", "auto-restart", 1)])
    les = (0.5, math.inf)
    clock = FakeClock(0.0)
    r = watch(lambda at: Evidence(canary=Side(les, (10 * at, 10 * at), 0)), Policy(alive_interval_s=2), clock,
              alive=dead_canary(n))
    assert r.outcome is Outcome.BREACH and r.rule == "dead-canary" and "auto-restart" in r.reason
    assert r.samples[-1].at <= 62  # 30 polls of 2 s, then the next one sees it
