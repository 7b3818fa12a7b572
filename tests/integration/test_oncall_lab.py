"""The on-call commands on the real lab (Incus, HAProxy 2.6, Prometheus 2.42, stand-in nodes).

Commands run as real subprocesses (real exit codes). Read-only tests run freely; tests that change
the lab hold ``exclusive_lab()`` and put every node back (1.0.0, ready, weight 100, UP, no lock)
before releasing it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.deploy_helpers import (
    deploy_env,
    exclusive_lab,
    live_state,
    reset_state_dir,
    run_deploy,
    wait_all_up,
    wait_sli_green,
)
from tests.unit.test_runbooks import Command, runbook_commands
from veza_canary.lab import Faults, build_standin
from veza_canary.transport import IncusTransport

pytestmark = [pytest.mark.integration, pytest.mark.lab]

VC = [sys.executable, "-m", "veza_canary"]
FAST = {"SLI_WINDOW": "9", "SLI_PROBE_INTERVAL": "3"}
LOCK = "/var/lib/veza-canary/lock.json"


def vc(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*VC, "--log-format", "json", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def status(env: dict[str, str]) -> dict:
    r = vc(env, "status", "--format", "json")
    errors = json.loads(r.stdout).get("errors") if r.stdout.startswith("{") else r.stdout[-1000:]
    assert r.returncode == 0, f"status exited {r.returncode}; errors: {errors}; {r.stderr[-1000:]}"
    return json.loads(r.stdout)


def sha_of(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("oncall-builds")
    return {"1.1.0": build_standin("1.1.0", Faults(), d / "veza-api-1.1.0"),
            "1.2.0": build_standin("1.2.0", Faults(), d / "veza-api-1.2.0")}


@pytest.fixture
def env(lab) -> dict[str, str]:
    return deploy_env(lab.env)


@pytest.fixture
def baseline(lab, env) -> Iterator[dict[str, str]]:
    """Read-only, but from the baseline: held under the lab lock so no other session is mid-change."""
    with exclusive_lab():
        wait_all_up(env)
        yield env


@pytest.fixture
def owned(lab, env) -> Iterator[dict[str, str]]:
    """The lab held exclusively, from a baseline (every node ready and UP, no lock); restored after."""
    with exclusive_lab():
        from veza_canary.lab import restore_node

        reset_state_dir(env)
        nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
        wait_all_up(env)
        try:
            yield env
        finally:
            reset_state_dir(env)
            for n in nodes:
                restore_node(n)
            wait_all_up(env)


# --- read-only (from the baseline) ------------------------------------------------------------


def test_status_json_shape_on_the_lab(lab, baseline):
    env = baseline
    d = status(env)
    assert [n["name"] for n in d["nodes"]] == [env["CANARY_NODE"], *env["PEER_NODES"].split()]
    for n in d["nodes"]:
        assert len(n["sha256"]) == 64 and n["previous_exists"] is True and len(n["previous_sha256"]) == 64
        assert n["status"] is not None and n["admin"] in ("ready", "drain", "maint")
        assert n["health"]["http_status"] is not None and n["version"] and n["version_source"] == "health"
        assert isinstance(n["weight"], int) and isinstance(n["sessions"], int)
    assert d["backend"] == "api_pool" and d["errors"] == []
    assert d["sli"]["thresholds"]["p95_s"] == 0.5 and d["sli"]["probes"]


def test_health_sli_check_and_haproxy_show_on_the_lab(lab, baseline):
    env = baseline
    node = env["PEER_NODES"].split()[0]
    r = vc(env, "health", node)
    assert r.returncode == 0 and "HTTP 200" in r.stdout and "(version " in r.stdout
    assert vc(env, "health", "--lb").returncode == 0
    r = vc(env, "sli", "check", "--format", "json", "--node", node)
    assert r.returncode in (0, 11), r.stderr[-1000:]  # 11 only if another test made the SLI red just now
    d = json.loads(r.stdout)
    assert d["queries"]["total"]["values"] and d["verdict"] in ("pass", "fail", "no-data")
    servers = json.loads(vc(env, "haproxy", "show", "--format", "json").stdout)["servers"]
    assert {s["server"] for s in servers} == set(lab.nodes)


def _read_only(c: Command) -> bool:
    """Runbook commands that change nothing and finish quickly (``sli watch`` takes its window)."""
    args = c.argv[1:]
    if c.env or not args:
        return False
    return (args[0] in ("status", "health") or args[:2] in (["haproxy", "show"], ["sli", "check"])
            or (args[0] in ("rollback", "deploy") and "--dry-run" in args))


def test_the_runbooks_read_only_commands_work_on_the_lab(lab, baseline, builds):
    env = baseline
    cmds = [c for c in runbook_commands() if c.argv[0] == "veza-canary" and _read_only(c)]
    assert len(cmds) >= 10
    for c in cmds:
        argv = [str(builds["1.1.0"]) if a.startswith(("/srv/releases/", "/tmp/veza-api-")) else a for a in c.argv[1:]]
        r = vc(env, *argv)
        # 11: a check may be red for a moment while another engineer's deploy runs; 2 or 1 never.
        assert r.returncode in (0, 11), f"{c.doc}: `{c.line}` exited {r.returncode}: {r.stderr[-1500:]}"


# --- changing the lab (exclusive, restored) --------------------------------------------------------


def test_status_after_a_deploy_then_rollback_of_the_fully_rolled_fleet_to_previous(owned, builds, tmp_path):
    env = owned
    before = status(env)
    prev = {n["name"]: n["previous_sha256"] for n in before["nodes"]}
    new = builds["1.1.0"]
    wait_sli_green(env)  # an earlier test's faulty build may still be in the rate window
    run = run_deploy(deploy_env(env, **FAST), new, tmp_path / "deploy.json")
    assert run.code == 0, run.stdout + run.stderr[-2000:]

    after = status(env)
    assert after["mixed"] is False and after["versions"] == {sha_of(new): [n["name"] for n in after["nodes"]]}
    assert all(n["version"] == "1.1.0" and n["in_rotation"] and n["health"]["http_status"] == 200
               for n in after["nodes"])
    assert {n["name"]: n["previous_sha256"] for n in after["nodes"]} == prev, ".previous is not the deploy's job"
    assert after["lock"] is None

    report = tmp_path / "rollback.json"
    t0 = time.monotonic()
    r = vc(env, "rollback", "--yes", "--nodes", "all", "--to", "previous", "--report", str(report))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]  # stdout: the plan and every node's end state
    live = live_state(env)
    assert {n: s["sha256"] for n, s in live.items()} == prev
    assert all(s["admin"] == "ready" and s["status"].startswith("UP") for s in live.values())
    rep = json.loads(report.read_text())
    assert rep["command"] == "rollback" and rep["outcome"] == "success" and rep["exit_code"] == 0
    assert {n: st["binary"] for n, st in rep["final_state"]["nodes"].items()} == dict.fromkeys(prev, "target")
    assert [s["node"] for s in rep["steps"] if s["name"] == "rollback"] == list(prev)
    final = status(env)
    assert {n["version"] for n in final["nodes"]} == {"0.9.0"} and final["lock"] is None
    print(f"rollback of {len(prev)} nodes took {took:.1f}s")


def test_mixed_version_fleet_status_then_rollback_of_the_odd_node_to_a_local_binary(owned, builds, tmp_path):
    from veza_canary.lab import install_build

    env = owned
    canary = env["CANARY_NODE"]
    baseline = tmp_path / "veza-api-baseline"
    IncusTransport(canary).pull("/opt/veza/backend-api/veza-api", baseline)
    baseline.chmod(0o755)
    install_build(canary, str(builds["1.2.0"]))
    wait_all_up(env)

    d = status(env)
    assert d["mixed"] is True
    odd = {n["name"]: (n["odd_one_out"], n["version"]) for n in d["nodes"]}
    assert odd[canary] == (True, "1.2.0")
    assert all(v == (False, "1.0.0") for n, v in odd.items() if n != canary)
    table = vc(env, "status").stdout
    assert "MIXED VERSIONS:" in table and f"(1.2.0) on {canary}" in table

    r = vc(env, "rollback", "--yes", "--to", str(baseline))  # all nodes: the two on it already are skipped
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "skip (already on the target and in rotation)" in r.stdout
    d = status(env)
    assert d["mixed"] is False and {n["version"] for n in d["nodes"]} == {"1.0.0"}


def test_haproxy_commands_on_the_lab(owned):
    env = owned
    node = env["PEER_NODES"].split()[-1]

    def show() -> dict:
        return {s["server"]: s for s in json.loads(vc(env, "haproxy", "show", "--format", "json").stdout)["servers"]}

    r = vc(env, "haproxy", "drain", node, "--wait")
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"drain.poll"' in r.stderr and show()[node]["admin"] == "drain" and show()[node]["sessions"] == 0
    r = vc(env, "haproxy", "maint", node)
    assert r.returncode == 0 and show()[node]["status"] == "MAINT"
    r = vc(env, "haproxy", "ready", node, "--wait")
    assert r.returncode == 0 and show()[node]["status"].startswith("UP")
    r = vc(env, "haproxy", "weight", node, "50")
    assert r.returncode == 0 and r.stdout.startswith(f"{node}: weight 50 (was 100, initial ")
    assert show()[node]["weight"] == 50
    assert vc(env, "haproxy", "weight", node, "100").returncode == 0
    assert vc(env, "haproxy", "drain", "backend-api-99").returncode == 2
    assert all(s["admin"] == "ready" and s["weight"] == 100 for s in show().values())


def test_last_server_guard_on_the_lab(owned):
    env = owned
    nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
    for n in nodes[1:]:
        assert vc(env, "haproxy", "drain", n).returncode == 0
    r = vc(env, "haproxy", "drain", nodes[0])
    assert r.returncode == 3 and "last server in rotation" in r.stderr
    assert live_state(env)[nodes[0]]["admin"] == "ready"
    for n in nodes[1:]:
        assert vc(env, "haproxy", "ready", n, "--wait").returncode == 0


def _place_lock(env: dict[str, str], *, host: str, pid: int) -> None:
    import socket

    data = {"holder": "ci", "host": host or socket.gethostname(), "pid": pid, "artifact_sha256": "ab" * 32,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "command": "veza-canary deploy",
            "token": "test-oncall-lab"}
    t = IncusTransport(env["HAPROXY_CONTAINER"])
    t.run(("mkdir", "-p", "/var/lib/veza-canary"))
    t.run(("sh", "-c", f"cat > {LOCK}"), input=json.dumps(data))


def _lock_exists(env: dict[str, str]) -> bool:
    return IncusTransport(env["HAPROXY_CONTAINER"]).run(("test", "-e", LOCK), check=False).exit_code == 0


def test_unlock_on_the_lab(owned):
    import socket

    env = owned
    assert vc(env, "unlock").stdout.startswith("lock: free")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _place_lock(env, host=socket.gethostname(), pid=dead.pid)
    r = vc(env, "status", "--format", "json", "--no-sli")
    assert json.loads(r.stdout)["lock"]["pid"] == dead.pid
    r = vc(env, "unlock")
    assert r.returncode == 0 and "holder process is gone" in r.stdout and not _lock_exists(env)

    _place_lock(env, host="someone-elses-laptop", pid=4242)
    r = vc(env, "rollback", "--yes", "--nodes", env["CANARY_NODE"])
    assert r.returncode == 8, r.stderr[-1000:]
    r = vc(env, "unlock")
    assert r.returncode == 8 and _lock_exists(env)
    r = vc(env, "unlock", "--force")
    assert r.returncode == 0 and "released (forced)" in r.stdout and not _lock_exists(env)


# --- hostile input on the real lab: honest status, codes, secrets ------------------------------------------


def test_status_says_unknown_when_haproxy_and_the_lock_cannot_be_read_on_the_lab(baseline):
    """A HAProxy container Incus does not have: HAProxy *and* the lock beside it are unknown, never free/0."""
    env = {**baseline, "HAPROXY_CONTAINER": "no-such-haproxy"}
    r = vc(env, "status", "--no-sli")
    assert r.returncode == 10, r.stderr[-1000:]
    assert "in rotation: unknown" in r.stdout and "lock: unknown" in r.stdout
    assert "lock: free" not in r.stdout and " 0 in rotation" not in r.stdout
    r = vc(env, "status", "--no-sli", "--format", "json")
    d = json.loads(r.stdout)
    assert r.returncode == 10 and d["in_rotation"] == "unknown" and d["lock_state"] == "unknown"
    assert all(n["sha256"] and n["in_rotation"] is None for n in d["nodes"]), "the nodes were still read"


def test_unreachable_lb_and_node_are_both_10_on_the_lab(baseline):
    assert vc({**baseline, "LB_URL": "http://127.0.0.1:1"}, "health", "--lb").returncode == 10
    r = vc(baseline, "health", "no-such-node")
    assert r.returncode == 10 and "cannot reach the container" in r.stderr


def test_secrets_in_urls_stay_in_the_process_on_the_lab(baseline):
    secret = "Lab-S3cr3t-0ncall"  # noqa: S105 - must never be printed
    prom = baseline["PROM_URL"].split("://", 1)[1]
    env = {**baseline, "PROM_URL": f"http://u:p@{secret}@{prom}",  # the lab's Prometheus ignores basic auth
           "NODE_HEALTH_URL": f"http://probe:p@{secret}@127.0.0.1:8080"}
    node = baseline["PEER_NODES"].split()[0]
    for args in (("health", node, "-v"), ("sli", "check", "--format", "json", "--node", node, "-v"),
                 ("status", "--format", "json", "-v")):
        r = vc(env, *args)
        assert r.returncode in (0, 11), (args, r.stderr[-1000:])  # 11 only if the SLI is red just now
        assert secret not in r.stdout + r.stderr, args
