"""Two HAProxy on the real lab (issue 18 §2): `lab up --lbs 2`, deploys with HAPROXY_CONTAINERS.

The module brings up ``haproxy-2`` (same config as ``haproxy``, at the next free address) and puts
the lab back to its default shape (one HAProxy) at the end, whatever happened. Every state is read
from each HAProxy directly, not through the tool.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import exclusive_lab
from tests.integration.deploy_helpers import (
    deploy_env,
    finish,
    reset_state_dir,
    run_deploy,
    signal_when,
    start_deploy,
    wait_sli_green,
)
from veza_canary import traffic
from veza_canary.haproxy import HAProxy, IncusSocat
from veza_canary.lab import Faults, build_standin
from veza_canary.lab.configs import PIN_MAP
from veza_canary.transport import IncusTransport

# Last: reshaping the lab (a second HAProxy, then back) restarts HAProxy and Prometheus; the tests that judge
# the SLI must not see that burst in their baseline history.
pytestmark = [pytest.mark.integration, pytest.mark.lab, pytest.mark.lab_last]

FAST = {"SLI_WINDOW": "9", "SLI_PROBE_INTERVAL": "3"}
# A two-step ramp (as tests/integration/test_ramp_deploy_lab.py): the loadgen sends ~20 req/s through `haproxy`
# only, so at 25 % the canary gets ~2/s there and a 20 s step gathers a few probes of evidence.
RAMP = {**FAST, "CANARY_STEPS": "25,100", "CANARY_STEP_HOLD": "20", "SLI_MIN_REQUESTS": "2"}
SECOND = "haproxy-2"


def lb(name: str) -> HAProxy:
    return HAProxy(IncusSocat(IncusTransport(name), "/run/haproxy/admin.sock"), "api_pool")


def per_lb(env: dict[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Each HAProxy's (admin, status) of every node, read from that HAProxy alone."""
    out = {}
    for name in env["HAPROXY_CONTAINERS"].split():
        h = lb(name)
        states, stats = h.states(), h.stats()
        out[name] = {n: (states[n].admin, stats[n].status) for n in stats}
    return out


def sha_on(node: str) -> str:
    r = IncusTransport(node).run(("sha256sum", "/opt/veza/backend-api/veza-api"))
    return r.stdout.split()[0]


def sha_of(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def wait_all_up_on_both(env: dict[str, str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = per_lb(env)
        if all(a == "ready" and s.startswith("UP") for lbst in st.values() for a, s in lbst.values()):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"not every node ready and UP on every HAProxy: {st}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_lbs(lab) -> Iterator[dict[str, str]]:
    """The lab with two HAProxy, held exclusively for the module; back to one HAProxy afterwards."""
    from veza_canary.lab import LabConfig, lab_up

    with exclusive_lab():
        try:
            info = lab_up(LabConfig(lbs=2), progress=lambda line: print(f"lab: {line}", flush=True))
            env = dict(info.env)
            assert env["HAPROXY_CONTAINERS"] == f"haproxy {SECOND}"
            yield env
        finally:
            lab_up(LabConfig(), progress=lambda line: print(f"lab: {line}", flush=True))


@pytest.fixture
def fleet(two_lbs, tmp_path) -> Iterator[tuple[dict[str, str], Path]]:
    from veza_canary.lab import restore_node

    env = dict(two_lbs)
    reset_state_dir(env)
    nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
    baseline = tmp_path / "veza-api-baseline"
    IncusTransport(env["CANARY_NODE"]).pull("/opt/veza/backend-api/veza-api", baseline)
    baseline.chmod(0o755)
    env["ROLLBACK_BINARY"] = str(baseline)
    wait_all_up_on_both(env)
    wait_sli_green(env)
    try:
        yield env, tmp_path
    finally:
        IncusTransport(SECOND).run(("systemctl", "start", "haproxy"), check=False, timeout=60)
        for name in env["HAPROXY_CONTAINERS"].split():  # no weight left reduced, no pin, whatever the test did
            traffic.restore_all(lb(name), PIN_MAP)
        reset_state_dir(env)
        for n in nodes:
            restore_node(n)
        wait_all_up_on_both(env)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return build_standin("1.5.0", Faults(), tmp_path_factory.mktemp("builds") / "veza-api-1.5.0")


class Watcher:
    """Reads both HAProxy every 0.2 s during a deploy; remembers which (node, HAProxy) were seen drained and,
    given ``weight_of``, which (HAProxy, weight) that server was seen at (``get weight``, from each HAProxy)."""

    def __init__(self, env: dict[str, str], weight_of: str | None = None) -> None:
        self.env, self.drained, self.errors = env, set(), []
        self.weight_of, self.weights = weight_of, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._t.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for name, st in per_lb(self.env).items():
                    self.drained |= {(n, name) for n, (admin, _s) in st.items() if admin == "drain"}
                    if self.weight_of:
                        self.weights.append((name, lb(name).get_weight(self.weight_of)[0]))
            except Exception as exc:  # noqa: BLE001 - recorded, asserted on
                self.errors.append(str(exc))
            self._stop.wait(0.2)


def test_a_deploy_drains_each_node_on_both_haproxy_and_ends_ready_on_both(fleet, good):
    env, tmp = fleet
    with Watcher(env) as w:
        run = run_deploy(deploy_env(env, **FAST), good, tmp / "r.json")
    assert run.code == 0, run.stderr[-3000:]
    nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
    assert w.drained == {(n, h) for n in nodes for h in ("haproxy", SECOND)}, "every node drained on both"
    wait_all_up_on_both(env)
    assert {sha_on(n) for n in nodes} == {sha_of(good)}


def runs(seen: list[tuple[str, int]], name: str) -> list[int]:
    """The weights one HAProxy was seen at, in order, each run of equal readings kept once."""
    out: list[int] = []
    for n, weight in seen:
        if n == name and (not out or out[-1] != weight):
            out.append(weight)
    return out


def test_a_ramp_sets_each_step_on_both_haproxy_reapplies_it_after_a_reload_of_one_and_restores_both(fleet, good):
    env, tmp = fleet
    canary = env["CANARY_NODE"]
    with Watcher(env, weight_of=canary) as w:
        proc = start_deploy(deploy_env(env, **RAMP), good, tmp / "r.json")
        signal_when(proc, '"stage": "25%"', 0)  # the 25 % step has begun (signal 0: nothing is sent)
        time.sleep(4)  # a probe or so at the step, on both
        IncusTransport(SECOND).run(("systemctl", "reload", "haproxy"), timeout=60)  # forgets its runtime weight
        run = finish(proc, tmp / "r.json")
    reapplied = [e["reason"] for e in run.report["events"] if e["kind"] == "weight_reapplied"]
    print(f"canary weight seen on haproxy: {runs(w.weights, 'haproxy')}, on {SECOND}: {runs(w.weights, SECOND)}; "
          f"re-applied: {reapplied}; watcher read errors: {len(w.errors)}")
    assert run.code == 0, run.stderr[-3000:]
    # Configured, the 25 % step, the configured weight again (the last step) -- on each HAProxy; on haproxy-2 the
    # step's weight was lost to its reload and set again there, within the step.
    assert runs(w.weights, "haproxy") == [100, 25, 100]
    assert runs(w.weights, SECOND) == [100, 25, 100, 25, 100]
    assert reapplied and f"HAProxy {SECOND}" in reapplied[0]
    for name in ("haproxy", SECOND):  # every weight configured, no pin, read from each HAProxy alone
        assert traffic.traffic_skew(lb(name), PIN_MAP).lines() == [], name
    assert {sha_on(n) for n in [canary, *env["PEER_NODES"].split()]} == {sha_of(good)}


def test_the_second_haproxy_stopped_mid_roll_stops_the_roll_with_the_peer_drained(fleet, good):
    env, tmp = fleet
    canary, peers = env["CANARY_NODE"], env["PEER_NODES"].split()
    first, last = peers[0], peers[-1]
    before_last = sha_on(last)
    proc = start_deploy(deploy_env(env, **FAST), good, tmp / "r.json")
    lines: list[str] = []
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    stopped_at = None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "drain.poll" and ev.get("node") == first and ev.get("done"):
            IncusTransport(SECOND).run(("systemctl", "stop", "haproxy"), timeout=60)
            stopped_at = time.monotonic()
            break
    assert stopped_at is not None, f"never saw {first}'s drain end; last lines: {lines[-5:]}"
    run = finish(proc, tmp / "r.json")
    assert run.code == 6, run.stderr[-3000:]
    assert SECOND in run.report["message"] and f"{first} left DRAINED" in run.report["message"]
    # The documented end state (docs/multi-lb.md): the canary on the new build and in rotation; the peer being
    # rolled drained on the HAProxy that answers, with the new build in place; the last peer untouched.
    st = lb("haproxy")
    assert sha_on(canary) == sha_of(good) and st.state(canary).admin == "ready" and st.stat(canary).is_up
    assert st.state(first).admin == "drain" and sha_on(first) == sha_of(good)
    assert st.state(last).admin == "ready" and sha_on(last) == before_last
    assert "haproxy_error" in run.report["final_state"]
