"""The weighted ramp and the pinned stage on the real lab (HAProxy 2.6, Prometheus, stand-in nodes, loadgen).

Every test holds ``exclusive_lab()`` and ends with ``restore_all`` (every weight configured, no pin), so
the lab is left as ``lab up`` made it. Shares are counted from the stand-ins' own ``/metrics`` (what each
node served), and compared with what Prometheus says (``measured_share``) and what the weights predict.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.deploy_helpers import exclusive_lab, extra_load, haproxy, wait_all_up
from veza_canary import traffic
from veza_canary.errors import PreflightError
from veza_canary.haproxy import HAProxy, IncusSocat
from veza_canary.lab.configs import PIN_COOKIE, PIN_HEADER, PIN_MAP
from veza_canary.prometheus import Prometheus
from veza_canary.transport import IncusTransport

pytestmark = [pytest.mark.integration, pytest.mark.lab]

HEALTH = "/api/v1/health"
_COUNT_RE = re.compile(r'^veza_gin_http_request_duration_seconds_count\{([^}]*)\} (\d+)$', re.M)


def served(lab, node: str, *, path: str | None = None) -> int:
    """Requests the node's stand-in counted (its own /metrics): API requests, or those recorded under ``path``."""
    text = httpx.get(f"http://{lab.ips[node]}:8080/metrics", timeout=5).text
    total = 0
    for labels, n in _COUNT_RE.findall(text):
        p = re.search(r'path="([^"]*)"', labels).group(1)  # type: ignore[union-attr]
        if (path is None and p not in (HEALTH, "unmatched")) or p == path:
            total += int(n)
    return total


def counts(lab, **kw) -> dict[str, int]:
    return {n: served(lab, n, **kw) for n in lab.nodes}


@pytest.fixture
def owned(lab) -> Iterator[HAProxy]:
    with exclusive_lab():
        wait_all_up(lab.env)
        h = haproxy(lab.env)
        traffic.restore_all(h, PIN_MAP)
        try:
            yield h
        finally:
            traffic.restore_all(haproxy(lab.env), PIN_MAP)


def test_the_lab_pool_takes_a_ramp_and_reads_its_algorithm(lab, owned):
    h = owned
    assert traffic.backend_algo(h) == "roundrobin"
    plan = traffic.check_ramp(h, lab.canary, (5, 25, 100))
    assert plan.initial == 100 and plan.weights == (5, 25, 100) and not plan.probed
    assert traffic.PinMap(h, PIN_MAP).preflight().used
    assert traffic.traffic_skew(h, PIN_MAP).clean


def measure(lab, h: HAProxy, percent: int, seconds: float) -> dict[str, float]:
    traffic.set_weight(h, lab.canary, percent)
    before = counts(lab)
    time.sleep(seconds)
    after = counts(lab)
    delta = {n: after[n] - before[n] for n in lab.nodes}
    total = sum(delta.values())
    expected = traffic.expected_share({n: w.current for n, w in traffic.weights(h).items()}, lab.canary)
    return {"served": delta[lab.canary], "total": total, "share": delta[lab.canary] / total if total else 0.0,
            "expected": expected or 0.0}


def test_the_canary_at_a_weight_step_serves_that_share_of_real_traffic(lab, owned):
    h = owned
    prom = Prometheus(httpx.Client(timeout=5), lab.prom_url)
    seen = {}
    # A second load generator doubles the lab's ~20 req/s: 12 s a step hold as many requests as 20 s did (~480),
    # and Prometheus's 10 s window starts 2 s after the weight changed.
    with extra_load(lab.env, 20.0):
        for percent in (5, 25, 100):
            m = measure(lab, h, percent, 12)
            share = traffic.measured_share(prom, traffic.DEFAULT_SHARE_TEMPLATE, canary=lab.canary, pool=lab.nodes,
                                           window_s=10)
            seen[percent] = (m, share.share)
            print(f"weight {percent}%: canary served {m['served']}/{m['total']} = {m['share']:.3f} "
                  f"(expected {m['expected']:.3f}); Prometheus over 10 s: {share.share}")
            assert m["total"] > 240, "the two load generators send ~40 req/s through the LB"
            assert abs(m["share"] - m["expected"]) < 0.04, (percent, m)
    assert seen[5][0]["share"] < seen[25][0]["share"] < seen[100][0]["share"]
    assert seen[25][1] is not None and abs(seen[25][1] - seen[25][0]["expected"]) < 0.06
    assert traffic.restore_weight(h, lab.canary).current == 100


def test_a_reload_mid_step_is_detected_and_the_weight_and_pins_reapplied(lab, owned):
    h = owned
    guard = traffic.StepGuard.enter(h, lab.canary, 25)
    pins = traffic.PinMap(h, PIN_MAP)
    pins.ensure(["team-veza"], lab.canary)
    marker = guard.marker
    assert guard.check().ok
    IncusTransport(lab.haproxy).run(("systemctl", "reload", "haproxy"), timeout=30)
    deadline = time.monotonic() + 20
    while traffic.runtime_marker(h) == marker and time.monotonic() < deadline:
        time.sleep(0.2)
    check = guard.check()
    print(f"after the reload: {check.to_dict()}")
    assert check.lost and check.reloaded and check.weight.current == check.weight.initial == 100
    assert guard.reapplied == 1 and traffic.read_weight(h, lab.canary).current == 25
    assert pins.ensure(["team-veza"], lab.canary) == ["team-veza"]  # a reload empties the map too
    assert guard.check().ok and guard.marker != marker
    wait_all_up(lab.env)


def test_pinned_requests_reach_only_the_canary_and_others_never_do(lab, owned):
    h = owned
    pins = traffic.PinMap(h, PIN_MAP)
    pins.preflight()
    traffic.set_weight(h, lab.canary, 0)  # the pinned stage: no random traffic, pinned requests only
    pins.add("team-veza", lab.canary)
    probe = f"/pin-probe-{uuid.uuid4().hex[:8]}"  # no route: the stand-in records it as path="unmatched"
    before = counts(lab, path="unmatched")
    with httpx.Client(base_url=lab.lb_url, timeout=5) as c:
        for _ in range(30):
            c.get(probe, headers={PIN_HEADER: "team-veza", "Connection": "close"})
        for _ in range(10):
            c.get(probe, headers={"Cookie": f"{PIN_COOKIE}=team-veza", "Connection": "close"})
        mid = counts(lab, path="unmatched")
        for _ in range(45):
            c.get(probe, headers={PIN_HEADER: "someone-else", "Connection": "close"})
        for _ in range(15):
            c.get(probe, headers={"Connection": "close"})
    after = counts(lab, path="unmatched")
    pinned = {n: mid[n] - before[n] for n in lab.nodes}
    other = {n: after[n] - mid[n] for n in lab.nodes}
    print(f"pinned requests served: {pinned}; unpinned: {other}")
    assert pinned[lab.canary] == 40 and sum(pinned.values()) == 40
    assert other[lab.canary] == 0 and sum(other.values()) == 60
    assert pins.clear() == {"team-veza": lab.canary} and traffic.restore_all(h, PIN_MAP).weights


def test_a_static_algorithm_is_refused_by_a_real_haproxy(lab, owned):
    """A throwaway HAProxy 2.6 in the lab's HAProxy container: a static-rr backend and a map-based hash one."""
    t = IncusTransport(lab.haproxy)
    sock, pid = "/run/veza-static-probe.sock", "/run/veza-static-probe.pid"
    cfg = "\n".join([
        "global", f"    stats socket {sock} mode 600 level admin",
        "defaults", "    mode http", "    timeout connect 1s", "    timeout client 1s", "    timeout server 1s",
        "backend static_pool", "    balance static-rr", "    server s1 127.0.0.1:9 weight 100 disabled",
        "backend hash_pool", "    balance uri", "    server s1 127.0.0.1:9 weight 100 disabled",
        "backend consistent_pool", "    balance uri", "    hash-type consistent",
        "    server s1 127.0.0.1:9 weight 100 disabled", ""])
    t.run(("sh", "-c", 'printf "%s" "$1" > /run/veza-static-probe.cfg', "sh", cfg), timeout=10)
    t.run(("haproxy", "-D", "-f", "/run/veza-static-probe.cfg", "-p", pid), timeout=10)
    try:
        for backend, refused in (("static_pool", True), ("hash_pool", True), ("consistent_pool", False)):
            h = HAProxy(IncusSocat(t, sock), backend)
            if refused:
                with pytest.raises(PreflightError, match="cannot be ramped"):
                    traffic.check_ramp(h, "s1", (5, 25, 100))
            else:
                assert traffic.check_ramp(h, "s1", (5, 25, 100)).probed
            assert traffic.read_weight(h, "s1") == traffic.Weight("s1", 100, 100)
    finally:
        t.run(("sh", "-c", 'kill "$(cat "$1")"; rm -f "$1" /run/veza-static-probe.cfg /run/veza-static-probe.sock', "sh", pid),
              check=False, timeout=10)
