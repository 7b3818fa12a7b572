"""The lab on real Incus: containers, HAProxy, Prometheus, traffic, and every stand-in fault.

Fault tests push a faulty build to ONE node and put the 1.0.0 build back (``restore_node``)
before they release the lab lock, so other tests always find the state ``lab up`` left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import LabHandle, exclusive_lab
from veza_canary.lab import (
    Faults,
    build_standin,
    daemon,
    fleet,
    install_build,
    lab_env,
    lab_status,
    lab_up,
    probe,
    restore_node,
)
from veza_canary.lab.config import GUARD_TABLE, LabConfig
from veza_canary.transport import IncusTransport

pytestmark = [pytest.mark.integration, pytest.mark.lab]

#: The node the fault tests break (a peer, so the canary default stays untouched).
VICTIM = "backend-api-3"
HIST = "veza_gin_http_request_duration_seconds"


def q(lab: LabHandle, query: str) -> list[dict]:
    r = httpx.get(f"{lab.prom_url}/api/v1/query", params={"query": query}, timeout=5)
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(lab: LabHandle, query: str) -> float | None:
    res = q(lab, query)
    return float(res[0]["value"][1]) if res else None


def p95(node: str | None = None, window: str = "10s") -> str:
    sel = 'job="veza-backend-api",path!="/api/v1/health"' + (f',node="{node}"' if node else "")
    return f"histogram_quantile(0.95, sum by (le) (rate({HIST}_bucket{{{sel}}}[{window}])))"


def error_ratio(node: str | None = None, window: str = "10s") -> str:
    sel = 'job="veza-backend-api",path!="/api/v1/health"' + (f',node="{node}"' if node else "")
    return (f'(sum(rate({HIST}_count{{{sel},status=~"5.."}}[{window}])) or vector(0))'
            f" / sum(rate({HIST}_count{{{sel}}}[{window}]))")


def server_status(lab: LabHandle, node: str) -> str:
    cfg = LabConfig()
    return {s.name: s.status for s in probe.server_stats(cfg)}[node]


def health_code(node: str) -> str:
    """The node's own health answer, from inside its container ("000": nothing listening)."""
    return IncusTransport(node).run(("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2",
                                     "http://127.0.0.1:8080/api/v1/health"), check=False).stdout


def poll(cond, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture
def baseline(lab: LabHandle) -> Iterator[None]:
    """Hold the lab lock: other sessions' deploy tests cannot change the fleet while we look at it."""
    with exclusive_lab():
        yield


@pytest.fixture
def faulty(lab: LabHandle, tmp_path: Path):
    """Install a faulty build on VICTIM; restore 1.0.0 (ready, UP) afterwards, under the lab lock."""
    with exclusive_lab():
        def install(faults: Faults, version: str = "6.6.6") -> float:
            path = build_standin(version, faults, tmp_path / f"veza-api-{version}")
            install_build(VICTIM, str(path))
            return time.monotonic()

        try:
            yield install
        finally:
            restore_node(VICTIM)


# --- the lab as `lab up` leaves it -----------------------------------------------------------------

def test_every_container_runs_systemd_in_running_state(lab: LabHandle, baseline: None) -> None:
    for name in (*lab.nodes, lab.haproxy, lab.prom):
        r = IncusTransport(name).run(("systemctl", "is-system-running"), check=False)
        if r.stdout.strip() != "running":
            failed = IncusTransport(name).run(("systemctl", "--failed", "--no-legend"), check=False).stdout
            pytest.fail(f"{name}: systemd is {r.stdout.strip()!r}; failed units: {failed.strip()}")


def test_containers_have_their_static_addresses(lab: LabHandle) -> None:
    found = fleet.list_lab_containers()
    for name, ip in lab.ips.items():
        assert found[name]["status"] == "Running"
        assert fleet.ipv4_of(found[name]) == ip


def test_nft_guard_is_loaded(lab: LabHandle) -> None:
    assert daemon.guard_loaded()


def test_show_servers_state_answers_for_the_pool(lab: LabHandle, baseline: None) -> None:
    reply = probe.haproxy_command(LabConfig(), "show servers state api_pool")
    lines = reply.strip().splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("# be_id be_name srv_id srv_name")
    names = {ln.split()[3] for ln in lines[2:]}
    assert names == set(lab.nodes)


def test_all_servers_are_up(lab: LabHandle, baseline: None) -> None:
    stats = probe.server_stats(LabConfig())
    assert {s.name: s.status for s in stats} == {n: "UP" for n in lab.nodes}


def test_every_node_serves_version_1_0_0_with_0_9_0_as_previous(lab: LabHandle, baseline: None) -> None:
    for n in lab.nodes:
        t = IncusTransport(n)
        assert t.run(("/opt/veza/backend-api/veza-api", "--version")).stdout.strip() == "1.0.0"
        assert t.run(("/opt/veza/backend-api/veza-api.previous", "--version")).stdout.strip() == "0.9.0"
        assert t.run(("systemctl", "is-active", "veza-backend-api")).stdout.strip() == "active"


def test_lb_url_routes_to_the_pool(lab: LabHandle, baseline: None) -> None:
    r = httpx.get(f"{lab.lb_url}/api/v1/health", timeout=5)
    assert r.status_code == 200
    assert r.json()["version"] == "1.0.0"


def test_prometheus_scrapes_every_target(lab: LabHandle) -> None:
    targets = probe.prom_targets(LabConfig())
    nodes = {t.node for t in targets if t.job == "veza-backend-api"}
    assert nodes == set(lab.nodes)
    assert value(lab, "count(up == 1)") == len(targets)


def test_prometheus_has_p95_and_error_ratio_for_the_traffic(lab: LabHandle, baseline: None) -> None:
    # Poll a little: a fault test that just restored its node may still be inside the [10s] window.
    poll(lambda: (v := value(lab, p95())) is not None and 0 < v < 0.5, 20, "fleet p95 below 0.5 s")
    poll(lambda: value(lab, error_ratio()) == 0.0, 20, "fleet 5xx ratio of 0")


def test_every_node_gets_api_traffic(lab: LabHandle, baseline: None) -> None:
    def rates() -> dict[str, float] | None:
        res = q(lab, f'sum by (node) (rate({HIST}_count{{job="veza-backend-api",path!="/api/v1/health"}}[10s]))')
        r = {x["metric"]["node"]: float(x["value"][1]) for x in res}
        return r if set(r) == set(lab.nodes) and all(v > 1.0 for v in r.values()) else None

    poll(rates, 20, "API traffic above 1 req/s on every node")


def test_lab_env_builds_valid_settings(lab: LabHandle) -> None:
    from veza_canary.settings import load_settings

    env = lab_env()
    assert env == lab.env
    s = load_settings({}, env, None, config={})
    assert s.prometheus.url == lab.prom_url and s.service.lb_url == lab.lb_url
    assert s.pool.canary == "backend-api-2" and set(s.pool.peers) == {"backend-api-1", "backend-api-3"}
    assert s.sli.window == 30 and s.safety.allow_short_window


def test_status_reports_a_healthy_lab(lab: LabHandle, baseline: None) -> None:
    st = lab_status()
    assert st.healthy, st.problems
    assert st.traffic_rate and st.traffic_rate > 5


def test_second_up_reconciles_quickly(lab: LabHandle) -> None:
    with exclusive_lab():
        t0 = time.monotonic()
        info = lab_up(LabConfig())
        assert time.monotonic() - t0 < 15
    assert info.env == lab.env


# --- each fault of the stand-in, observed through the real stack -------------------------------------------

def test_health_status_fault_marks_the_node_down_in_haproxy(lab: LabHandle, faulty) -> None:
    faulty(Faults(health_status=500))
    # "000" until the restarted process listens.
    assert poll(lambda: (c := health_code(VICTIM)) != "000" and c, 5, "the node to answer") == "500"
    poll(lambda: server_status(lab, VICTIM).startswith("DOWN"), 15, f"{VICTIM} DOWN in HAProxy")


def test_latency_fault_shows_in_the_nodes_p95(lab: LabHandle, faulty) -> None:
    faulty(Faults(latency=0.8))
    got = poll(lambda: (v := value(lab, p95(VICTIM))) is not None and v >= 0.6 and v, 30,
               f"p95 of {VICTIM} >= 0.6 s")
    assert got <= 1.0
    poll(lambda: (v := value(lab, p95("backend-api-1"))) is not None and v < 0.5, 15, "backend-api-1 p95 < 0.5")


def test_error_rate_fault_shows_in_the_nodes_5xx_ratio(lab: LabHandle, faulty) -> None:
    faulty(Faults(error_rate=0.5))
    got = poll(lambda: (v := value(lab, error_ratio(VICTIM))) is not None and v >= 0.3 and v, 30,
               f"5xx ratio of {VICTIM} >= 0.3")
    assert got <= 0.8
    poll(lambda: value(lab, error_ratio("backend-api-1")) == 0.0, 15, "no 5xx on backend-api-1")


def test_crash_after_fault_takes_the_node_down(lab: LabHandle, faulty) -> None:
    faulty(Faults(crash_after=1.0))
    poll(lambda: server_status(lab, VICTIM).startswith("DOWN"), 20, f"{VICTIM} DOWN after the crash")
    r = IncusTransport(VICTIM).run(("journalctl", "-u", "veza-backend-api", "--no-pager", "-n", "50"), check=False)
    assert "injected crash" in r.stdout


def test_fail_start_fault_leaves_the_service_failed_and_the_node_down(lab: LabHandle, faulty) -> None:
    faulty(Faults(fail_start=True))
    t = IncusTransport(VICTIM)
    poll(lambda: t.run(("systemctl", "is-active", "veza-backend-api"), check=False).stdout.strip()
         in ("failed", "activating"), 10, "veza-backend-api not active")
    poll(lambda: server_status(lab, VICTIM).startswith("DOWN"), 15, f"{VICTIM} DOWN")


def test_onset_delays_the_faults(lab: LabHandle, faulty) -> None:
    started = faulty(Faults(health_status=503, onset=5.0))
    first = poll(lambda: (c := health_code(VICTIM)) != "000" and c, 5, "the node to answer", interval=0.1)
    assert first == "200" and time.monotonic() - started < 5
    poll(lambda: health_code(VICTIM) == "503", 10, "health 503 after the onset")


# --- last: a full down/up cycle (leaves the lab up) ---------------------------------------------------------------

@pytest.mark.lab_last
def test_down_then_up_leaves_nothing_behind_and_comes_back(lab: LabHandle) -> None:
    with lab.users.sole(timeout=300) as alone:
        if not alone:
            msg = "another test session kept using the lab for 5 min; not cycling it down under its feet"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(msg)
            pytest.skip(msg)
        with exclusive_lab():
            _cycle(lab)
    assert lab_status().healthy


def _cycle(lab: LabHandle) -> None:
    from veza_canary.lab import lab_down
    from veza_canary.lab.state import LabState

    started_incusd = LabState.load().incusd_started
    lab_down(force=True)  # the caller holds the users lock exclusively
    try:
        family, table = GUARD_TABLE
        assert not daemon.guard_loaded()
        assert not daemon.host().run(("nft", "list", "table", family, table), check=False).ok
        if started_incusd:
            assert not daemon.incusd_answers()
            assert daemon.leftover_processes() == []
            assert daemon.ip_forward() == "0"
        else:
            assert fleet.list_lab_containers() == {}
        assert not Path("/sys/class/net/vezabr0").exists()
        assert not _lab_processes(), _lab_processes()
    finally:
        info = lab_up(LabConfig())
    assert info.env == lab.env


def _lab_processes() -> list[str]:
    """Live processes of Incus or of lab containers (lxc cgroups), zombies excluded."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or d.name == str(os.getpid()):
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (d / "stat").read_text().rsplit(") ", 1)[1]
            cgroup = (d / "cgroup").read_text()
        except OSError:
            continue
        if stat.startswith("Z"):
            continue
        if "lxc.payload." in cgroup or "lxc.monitor." in cgroup or "[lxc monitor]" in cmd or "vezabr0" in cmd \
                or cmd.startswith("/usr/libexec/incus/incusd"):
            out.append(f"{d.name} {cmd[:120]}")
    return out
