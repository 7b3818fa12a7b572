"""The canary pipeline end to end on the real lab: Incus, HAProxy 2.6, Prometheus 2.42, stand-in nodes.

Each test asserts the end state from live HAProxy and node state, not only the exit code.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import exclusive_lab
from tests.integration.deploy_helpers import (
    deploy_env,
    finish,
    live_state,
    reset_state_dir,
    run_deploy,
    sigkill,
    signal_when,
    start_deploy,
    temp_files_in_install_dir,
    wait_all_up,
    wait_sli_green,
)
from veza_canary.lab import Faults, build_standin
from veza_canary.transport import IncusTransport

pytestmark = [pytest.mark.integration, pytest.mark.lab]

FAST = {"SLI_WINDOW": "9", "SLI_PROBE_INTERVAL": "3"}


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("builds")
    specs = {
        "good": ("1.1.0", Faults()),
        "good2": ("1.2.0", Faults()),
        "health500": ("1.1.1", Faults(health_status=500)),
        "slow": ("1.1.2", Faults(latency=0.9)),
        "erroring": ("1.1.3", Faults(error_rate=0.3)),
        "crashing": ("1.1.4", Faults(crash_after=4.0)),
        "good3": ("1.3.0", Faults()),
        "good4": ("1.4.0", Faults()),
    }
    return {k: build_standin(v, f, d / f"veza-api-{v}") for k, (v, f) in specs.items()}


@pytest.fixture
def fleet(lab, tmp_path):
    """The lab, held exclusively, with a local copy of its baseline binary as ROLLBACK_BINARY; restored after."""
    with exclusive_lab():
        from veza_canary.lab import restore_node

        env = dict(lab.env)
        reset_state_dir(env)
        nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
        baseline = tmp_path / "veza-api-baseline"
        IncusTransport(env["CANARY_NODE"]).pull("/opt/veza/backend-api/veza-api", baseline)
        baseline.chmod(0o755)
        before = wait_all_up(env)
        wait_sli_green(env)
        env["ROLLBACK_BINARY"] = str(baseline)
        yield env, before, tmp_path
        reset_state_dir(env)
        for n in nodes:
            restore_node(n)
        wait_all_up(env)


def shas(state: dict) -> dict[str, str]:
    return {n: s["sha256"] for n, s in state.items()}


def sha_of(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_good_build_reaches_every_node(fleet, builds):
    env, before, tmp = fleet
    run = run_deploy(deploy_env(env, **FAST), builds["good"], tmp / "r.json")
    assert run.code == 0, run.stderr[-3000:]
    after = wait_all_up(env)
    assert set(shas(after).values()) == {sha_of(builds["good"])}
    assert run.report["outcome"] == "success" and run.report["exit_code"] == 0
    assert [s["name"] for s in run.report["steps"]][:4] == ["preflight", "migration-gate", "lock", "confirm"]
    assert run.report["sli_samples"] and run.report["sli_samples"][-1]["verdict"] == "pass"
    assert not any(s["verdict"] == "fail" for s in run.report["sli_samples"])
    assert all(not temp_files_in_install_dir(n) for n in after)


def test_health_500_build_is_rolled_back_then_refused(fleet, builds):
    env, before, tmp = fleet
    e = deploy_env(env, **FAST, NODE_HEALTH_TIMEOUT="8")
    run = run_deploy(e, builds["health500"], tmp / "r.json")
    assert run.code == 5, run.stderr[-3000:]
    after = wait_all_up(env)
    assert shas(after) == shas(before), "canary back on the old binary, peers untouched"
    assert run.node(env["CANARY_NODE"])["binary"] == "rollback"
    again = run_deploy(e, builds["health500"], tmp / "r2.json")
    assert again.code == 9 and "rolled back" in again.stderr


@pytest.mark.parametrize("build,needle", [("slow", "p95"), ("erroring", "5xx ratio")])
def test_sli_breach_is_rolled_back_by_the_watch(fleet, builds, build, needle):
    env, before, tmp = fleet
    run = run_deploy(deploy_env(env, SLI_WINDOW="60", SLI_PROBE_INTERVAL="3"), builds[build], tmp / "r.json")
    assert run.code == 5, run.stderr[-3000:]
    assert needle in run.report["message"]
    verdicts = [s["verdict"] for s in run.report["sli_samples"]]
    assert verdicts[-1] == "fail" and "fail" not in verdicts[:-1]
    step = next(s for s in run.report["steps"] if s["name"] == "sli-watch")
    assert step["outcome"] == "failed", "rolled back by the watch, not by a health check"
    assert shas(wait_all_up(env)) == shas(before)


def test_crashing_build_is_rolled_back(fleet, builds):
    env, before, tmp = fleet
    run = run_deploy(deploy_env(env, SLI_WINDOW="60", SLI_PROBE_INTERVAL="3"), builds["crashing"], tmp / "r.json")
    assert run.code == 5, run.stderr[-3000:]
    assert shas(wait_all_up(env)) == shas(before)


def test_peer_failure_stops_the_roll_and_reports_the_fleet(fleet, builds):
    env, before, tmp = fleet
    peer, last = env["PEER_NODES"].split()[0], env["PEER_NODES"].split()[-1]
    t = IncusTransport(peer)
    t.run(("mkdir", "-p", "/etc/systemd/system/veza-backend-api.service.d"))
    t.run(("sh", "-c", "printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' "
                       "> /etc/systemd/system/veza-backend-api.service.d/broken.conf"))
    t.run(("systemctl", "daemon-reload"))
    try:
        run = run_deploy(deploy_env(env, **FAST, NODE_HEALTH_TIMEOUT="6"), builds["good"], tmp / "r.json")
        assert run.code == 6, run.stderr[-3000:]
        st = live_state(env)
        assert st[env["CANARY_NODE"]]["sha256"] == sha_of(builds["good"]) and st[env["CANARY_NODE"]]["admin"] == "ready"
        assert st[peer]["admin"] == "drain", "a failed peer stays out of rotation"
        assert st[last]["sha256"] == before[last]["sha256"], "the roll stops at the failed peer"
        assert "re-run" in run.report["resume"]
        assert f"{peer}" in run.stdout and "drain" in run.stdout
    finally:
        t.run(("rm", "-f", "/etc/systemd/system/veza-backend-api.service.d/broken.conf"))
        t.run(("systemctl", "daemon-reload"))


def test_sigint_during_the_sli_watch_rolls_the_canary_back(fleet, builds):
    env, before, tmp = fleet
    proc = start_deploy(deploy_env(env, SLI_WINDOW="120", SLI_PROBE_INTERVAL="2"), builds["good"], tmp / "r.json")
    signal_when(proc, '"sli.probe"', signal.SIGINT)
    run = finish(proc, tmp / "r.json")
    assert run.code == 130, run.stderr[-3000:]
    after = wait_all_up(env, timeout=10)
    assert shas(after) == shas(before)
    assert all(s["admin"] == "ready" for s in after.values()), "nothing left drained"


def test_second_concurrent_deploy_is_refused_with_the_holder_named(fleet, builds):
    env, before, tmp = fleet
    first = start_deploy(deploy_env(env, SLI_WINDOW="120", SLI_PROBE_INTERVAL="3"), builds["good"], tmp / "a.json")
    try:
        signal_when(first, '"lock.acquired"', 0)
        second = run_deploy(deploy_env(env, **FAST), builds["good"], tmp / "b.json")
        assert second.code == 8, second.stderr[-2000:]
        assert f"pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        finish(first, tmp / "a.json")


def test_rerun_after_sigkill_reconciles_and_completes(fleet, builds):
    env, before, tmp = fleet
    e = deploy_env(env, **FAST)
    proc = start_deploy(e, builds["good2"], tmp / "r.json")
    signal_when(proc, '"node.install.done"', 0)
    sigkill(proc)
    st = live_state(env)
    assert st[env["CANARY_NODE"]]["admin"] == "drain", "the killed run left the canary drained"
    run = run_deploy(e, builds["good2"], tmp / "r2.json")
    assert run.code == 0, run.stderr[-3000:]
    after = wait_all_up(env)
    assert set(shas(after).values()) == {sha_of(builds["good2"])}
    assert any(ev["kind"] == "reconcile" for ev in run.report["events"])
    assert all(not temp_files_in_install_dir(n) for n in after)


def test_dry_run_touches_nothing(fleet, builds):
    env, before, tmp = fleet
    r = subprocess.run(["veza-canary", "deploy", "--dry-run", "--artifact", str(builds["good"])],
                       env=deploy_env(env), capture_output=True, text=True, check=False,
                       executable=str(Path(__file__).resolve().parents[2] / ".venv/bin/veza-canary"))
    assert r.returncode == 0 and "set server api_pool" in r.stdout
    assert shas(live_state(env)) == shas(before)


def test_make_deploy_canary_and_the_script_work_with_the_runbook_env(fleet, builds):
    """The interface people already use: `make deploy-canary ARTIFACT=...` and scripts/deploy-canary.sh."""
    env, before, tmp = fleet
    root = Path(__file__).resolve().parents[2]
    e = deploy_env(env, **FAST)
    made = subprocess.run(["make", "-s", "deploy-canary", f"ARTIFACT={builds['good3']}", "DEPLOY_ARGS=--yes"],
                          cwd=root, env=e, capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0, made.stderr[-3000:]
    assert set(shas(wait_all_up(env)).values()) == {sha_of(builds["good3"])}
    # The runbook's direct invocation: knobs as env vars only (ROLLBACK_BINARY = the build now deployed).
    wait_sli_green(env)
    e2 = deploy_env(env, **FAST, ARTIFACT=str(builds["good4"]), ROLLBACK_BINARY=str(builds["good3"]))
    script = subprocess.run(["bash", "scripts/deploy-canary.sh"], cwd=root, env=e2, capture_output=True,
                            text=True, timeout=300, check=False)
    assert script.returncode == 0, script.stderr[-3000:]
    assert set(shas(wait_all_up(env)).values()) == {sha_of(builds["good4"])}
    missing = subprocess.run(["make", "-s", "deploy-canary"], cwd=root, env=e, capture_output=True, text=True,
                             check=False)
    assert missing.returncode == 2 and "usage" in missing.stderr


def _main_pids(env: dict[str, str]) -> dict[str, str]:
    nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
    return {n: IncusTransport(n).run(("systemctl", "show", "-p", "MainPID", "--value", "veza-backend-api")).stdout
            for n in nodes}


def test_a_failing_build_rolls_the_canary_back_to_the_build_that_was_running(fleet, builds):
    """Deploy A everywhere, then a build whose health answers 500: the canary goes back to A by sha256 --
    not to veza-api.previous (an older build) -- with no ROLLBACK_BINARY set."""
    env, before, tmp = fleet
    env = {k: v for k, v in env.items() if k != "ROLLBACK_BINARY"}
    first = run_deploy(deploy_env(env, **FAST), builds["good"], tmp / "a.json")
    assert first.code == 0, first.stderr[-3000:]
    wait_sli_green(env)
    a = sha_of(builds["good"])
    bad = run_deploy(deploy_env(env, **FAST, NODE_HEALTH_TIMEOUT="8"), builds["health500"], tmp / "b.json")
    assert bad.code == 5, bad.stderr[-3000:]
    after = wait_all_up(env)
    assert set(shas(after).values()) == {a}, "canary back on A, the peers still on A: one version in play"
    assert bad.report["rollback_source"]["kind"] == "running" and bad.report["rollback_source"]["sha256"] == a
    kept = IncusTransport(env["CANARY_NODE"]).run(("sha256sum", "/opt/veza/backend-api/.veza-api.last-good"))
    assert kept.stdout.split()[0] == a
    previous = IncusTransport(env["CANARY_NODE"]).run(("sha256sum", "/opt/veza/backend-api/veza-api.previous"))
    assert previous.stdout.split()[0] != a, "the lab's veza-api.previous is an older build (untouched)"


def test_deploying_the_build_that_already_runs_everywhere_changes_nothing(fleet, builds):
    env, before, tmp = fleet
    first = run_deploy(deploy_env(env, **FAST), builds["good2"], tmp / "a.json")
    assert first.code == 0, first.stderr[-3000:]
    wait_all_up(env)
    pids = _main_pids(env)
    again = run_deploy(deploy_env(env, **FAST), builds["good2"], tmp / "b.json")
    assert again.code == 0, again.stderr[-3000:]
    assert "nothing was changed" in again.report["message"]
    assert _main_pids(env) == pids, "no service was restarted"
    assert not again.report["sli_samples"], "nothing to watch"
    assert all(s["outcome"] == "skipped" for s in again.report["steps"] if s["name"] in ("drain-canary", "peers"))


def _hook(d: Path, name: str, script: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("#!/bin/sh\n" + script + "\n")
    (d / name).chmod(0o755)


def test_a_pre_deploy_hook_that_refuses_changes_nothing(fleet, builds):
    env, before, tmp = fleet
    hooks = tmp / "hooks"
    _hook(hooks, "pre-deploy", 'echo "change freeze for $VEZA_SHA256" >&2; exit 1')
    pids = _main_pids(env)
    run = run_deploy(deploy_env(env, **FAST, HOOKS_DIR=str(hooks)), builds["good3"], tmp / "r.json")
    assert run.code == 13, run.stderr[-3000:]
    assert "change freeze" in run.stderr
    assert shas(live_state(env)) == shas(before) and _main_pids(env) == pids
    assert all(s["admin"] == "ready" for s in live_state(env).values())


def test_a_confirm_promotion_hook_that_refuses_rolls_the_canary_back_and_leaves_the_peers(fleet, builds):
    env, before, tmp = fleet
    hooks = tmp / "hooks"
    _hook(hooks, "confirm-promotion", "exit 1")
    peers = env["PEER_NODES"].split()
    pids = _main_pids(env)
    run = run_deploy(deploy_env(env, **FAST, HOOKS_DIR=str(hooks)), builds["good4"], tmp / "r.json")
    assert run.code == 5, run.stderr[-3000:]
    assert next(s for s in run.report["steps"] if s["name"] == "confirm-promotion")["outcome"] == "failed"
    after = wait_all_up(env)
    assert shas(after) == shas(before), "canary back on the build before; peers untouched"
    assert all(_main_pids(env)[p] == pids[p] for p in peers), "no peer was restarted"
    assert not any(e["kind"] == "release_blocked" for e in run.report["events"]), "the build was not found bad"
