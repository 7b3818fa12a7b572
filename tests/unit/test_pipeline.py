"""The deploy pipeline's policy on a simulated fleet (fakes subclass the real seams; a fake clock)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.fakes import Behaviour, SimFleet, sha, sim_fleet
from tests.settings_helper import make_settings
from veza_canary.errors import (
    CanaryRolledBack,
    ConfigError,
    ExitCode,
    Interrupted,
    LockHeld,
    PeerRollFailed,
    PreflightError,
    ReleaseBlocked,
    RollbackFailed,
)
from veza_canary.pipeline import STEPS, Deploy, DeployInterrupt, plan
from veza_canary.report import Report

NODES = ["backend-api-2", "backend-api-1", "backend-api-3"]
OLD, PREV, NEW = b"old-binary", b"prev-binary", b"#!/bin/sh\nnew-binary v2\n"
BIN = "/opt/veza/backend-api/veza-api"
PREVIOUS = "/opt/veza/backend-api/veza-api.previous"
LAST_GOOD = "/opt/veza/backend-api/.veza-api.last-good"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    p = tmp_path / "veza-api-new"
    p.write_bytes(NEW)
    p.chmod(0o755)
    return p


def make(artifact: Path, tmp_path: Path, **overrides):
    s = make_settings(
        artifact=artifact, canary_node="backend-api-2", peer_nodes=("backend-api-1", "backend-api-3"),
        sli_window=300.0, sli_probe_interval=30.0, allow_short_window=True, state_dir=tmp_path / "state",
        **overrides,
    )
    fleet, sim = sim_fleet(s, SimFleet(NODES, binary=OLD, previous=PREV))
    return fleet, sim


def run(fleet, tmp_path: Path, **kw):
    report = Report()
    d = Deploy(fleet, workdir=_workdir(tmp_path), report=report, repo_root=tmp_path, **kw)
    try:
        d.run()
    except Exception as exc:
        return report, exc
    return report, None


def _workdir(tmp_path: Path) -> Path:
    w = tmp_path / "work"
    w.mkdir(exist_ok=True)
    return w


def running(sim: SimFleet) -> dict[str, str]:
    return {n: sim.nodes[n].running_sha for n in NODES}


def assert_all_in_rotation(sim: SimFleet) -> None:
    assert sim.admin == dict.fromkeys(NODES, 0), f"a node was left out of rotation: {sim.admin}"


def test_steps_are_listed_in_runbook_order():
    assert [s.name for s in STEPS] == [
        "preflight", "migration-gate", "lock", "confirm", "pre-deploy-hook", "drain-canary", "install-canary",
        "canary-health", "ready-canary", "lb-health", "sli-watch", "confirm-promotion", "peers",
    ]


def test_good_build_rolls_every_node_and_reports_success(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    rep, err = run(fleet, tmp_path)
    assert err is None
    assert running(sim) == dict.fromkeys(NODES, sha(NEW))
    assert_all_in_rotation(sim)
    assert rep.outcome == "success" and rep.exit_code == 0
    assert len(rep.sli_samples) == 10 and rep.sli_samples[-1]["verdict"] == "pass"
    assert {s["verdict"] for s in rep.sli_samples[:-1]} <= {"watch", "pass"}
    assert {n: st["binary"] for n, st in rep.final_state["nodes"].items()} == dict.fromkeys(NODES, "artifact")
    assert not any(p.startswith("/var/lib/veza-canary/lock") for p in sim.state_files), "lock not released"
    json.dumps(rep.to_dict())  # the report is JSON


def test_health_500_build_is_rolled_back_and_blocked(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, node_health_timeout=10.0)
    sim.behaviours[sha(NEW)] = Behaviour(health_status=500)
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and err.exit_code == ExitCode.ROLLED_BACK
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert sim.nodes["backend-api-1"].running_sha == sha(OLD) and sim.nodes["backend-api-1"].restarts == 0
    assert_all_in_rotation(sim)
    assert rep.exit_code == 5 and rep.final_state["nodes"]["backend-api-2"]["binary"] == "rollback"
    assert f"/var/lib/veza-canary/blocked/{sha(NEW)}.json" in sim.state_files


@pytest.mark.parametrize("behaviour,needle", [
    (Behaviour(p95=0.9), "p95"),
    (Behaviour(err_ratio=0.05), "5xx ratio"),
])
def test_sli_breach_rolls_the_canary_back(artifact, tmp_path, behaviour, needle):
    fleet, sim = make(artifact, tmp_path)
    sim.behaviours[sha(NEW)] = behaviour
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack)
    assert needle in str(err)
    assert rep.sli_samples[0]["verdict"] == "fail", "first red probe must roll back"
    assert len(rep.sli_samples) == 1
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert_all_in_rotation(sim)


def test_binary_that_fails_to_start_is_rolled_back(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.behaviours[sha(NEW)] = Behaviour(starts=False)
    _, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack)
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert_all_in_rotation(sim)


def test_rollback_binary_given_locally_is_what_the_canary_ends_on(artifact, tmp_path):
    rb = tmp_path / "veza-api-good"
    rb.write_bytes(b"known-good")
    rb.chmod(0o755)
    fleet, sim = make(artifact, tmp_path, rollback_binary=rb)
    sim.behaviours[sha(NEW)] = Behaviour(err_ratio=0.5)
    _, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack)
    assert sim.nodes["backend-api-2"].running_sha == sha(b"known-good")
    assert not [p for p in sim.nodes["backend-api-2"].files if ".veza-api.new-" in p], "temp file left behind"


def test_no_data_during_the_watch_never_passes(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.behaviours[sha(NEW)] = Behaviour(req_rate=0.0)
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack)
    assert "no-data" in str(err)
    assert [s["verdict"] for s in rep.sli_samples] == ["no-data"] * 4


def test_prometheus_down_during_the_watch_rolls_back_after_the_error_limit(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)

    sim.hooks["restart:backend-api-2"] = lambda sim_: setattr(sim_, "prom_down", True)  # after preflight
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack)
    assert "Prometheus errors" in str(err)
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)


def test_corrupted_push_never_reaches_the_binary_path(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.corrupt_next_push = True
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack)
    assert "corrupted" in str(err)
    canary = sim.nodes["backend-api-2"]
    assert canary.running_sha == sha(OLD) and canary.files["/opt/veza/backend-api/veza-api"] == OLD
    assert not [p for p in canary.files if ".veza-api.new-" in p]
    assert "untouched" in str(err)
    assert_all_in_rotation(sim)


def test_drain_timeout_fails_closed_and_re_enables_the_untouched_canary(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, drain_timeout=5.0)
    sim.sticky_sessions["backend-api-2"] = 3
    _, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and "drain" in str(err)
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert_all_in_rotation(sim)


def test_drain_timeout_with_shutdown_sessions_goes_on(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, drain_timeout=5.0, drain_timeout_action="shutdown-sessions")
    sim.sticky_sessions["backend-api-2"] = 3
    rep, err = run(fleet, tmp_path)
    assert err is None
    assert ("haproxy", "shutdown sessions server api_pool/backend-api-2") in sim.commands
    assert any(e["kind"] == "shutdown_sessions" for e in rep.events)


def test_peer_failure_stops_the_roll_and_leaves_the_peer_drained(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, node_health_timeout=5.0)
    sim.hooks["restart:backend-api-1"] = lambda s: s.broken_nodes.add("backend-api-1")
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, PeerRollFailed) and err.exit_code == ExitCode.PEER_FAILED
    assert sim.admin["backend-api-1"] != 0, "an unhealthy peer must not be re-enabled"
    assert sim.admin["backend-api-2"] == 0 and sim.admin["backend-api-3"] == 0
    assert sim.nodes["backend-api-3"].running_sha == sha(OLD), "the roll must stop at the failed peer"
    assert "DRAINED" in str(err) and "re-run" in (err.hint or "")
    assert rep.resume


def test_peer_push_failure_puts_the_unchanged_peer_back_in_rotation(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.fail_push_on.add("backend-api-1")
    _, err = run(fleet, tmp_path)
    assert isinstance(err, PeerRollFailed)
    assert sim.nodes["backend-api-1"].running_sha == sha(OLD)
    assert_all_in_rotation(sim)


def test_interrupt_during_the_sli_watch_rolls_the_canary_back(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    calls = {"n": 0}

    def ctrl_c(sim_: SimFleet) -> None:
        calls["n"] += 1
        if calls["n"] == 15:
            raise DeployInterrupt("SIGINT")

    sim.hooks["prom_query"] = ctrl_c
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, Interrupted) and err.exit_code == ExitCode.INTERRUPTED
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert_all_in_rotation(sim)
    assert any(s.outcome == "interrupted" for s in rep.steps)


def test_interrupt_during_preflight_changes_nothing(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.hooks["prom_query"] = lambda s: (_ for _ in ()).throw(DeployInterrupt("SIGTERM"))
    _, err = run(fleet, tmp_path)
    assert isinstance(err, Interrupted) and "nothing was changed" in str(err)
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]


def test_second_deploy_is_refused_while_the_lock_is_held(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.state_files["/var/lib/veza-canary/lock.json"] = json.dumps({
        "holder": "alice", "host": "laptop-of-alice", "pid": 4242, "started_at": "2026-11-25T03:00:00+00:00",
        "artifact_sha256": "ab" * 32, "command": "veza-canary deploy", "token": "t"}).encode()
    _, err = run(fleet, tmp_path)
    assert isinstance(err, LockHeld) and err.exit_code == ExitCode.LOCKED
    assert "alice@laptop-of-alice" in str(err)
    assert_all_in_rotation(sim)
    assert "/var/lib/veza-canary/lock.json" in sim.state_files, "someone else's lock must not be removed"


def test_release_removes_only_a_lock_file_with_our_token(tmp_path):
    from tests.fakes import SimFleet, SimStateTransport
    from veza_canary.lock import FleetLock, LockInfo, StateStore

    sim = SimFleet(["backend-api-1", "backend-api-2"])
    lock = FleetLock(StateStore(SimStateTransport(sim), "/var/lib/veza-canary"))
    lock.acquire(LockInfo.mine("ab" * 32, "veza-canary deploy"))
    path = "/var/lib/veza-canary/lock.json"
    theirs = json.loads(sim.state_files[path])
    theirs["token"] = "someone-else"  # broken and retaken by another run meanwhile
    sim.state_files[path] = json.dumps(theirs, indent=2).encode()
    lock.release()
    assert path in sim.state_files, "another run's lock must survive our release"
    del sim.state_files[path]
    lock.acquire(LockInfo.mine("ab" * 32, "veza-canary deploy"))
    lock.release()
    assert path not in sim.state_files and not [p for p in sim.state_files if "staged" in p]


def test_a_lock_left_by_a_dead_local_process_is_taken_over(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.state_files["/var/lib/veza-canary/lock.json"] = json.dumps({
        "holder": "ci", "host": socket.gethostname(), "pid": 2**22 + 12345, "started_at": "2026-11-25T03:00:00+00:00",
        "artifact_sha256": "ab" * 32, "command": "veza-canary deploy", "token": "t"}).encode()
    _, err = run(fleet, tmp_path)
    assert err is None


def test_blocked_release_is_refused_without_force(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.state_files[f"/var/lib/veza-canary/blocked/{sha(NEW)}.json"] = json.dumps(
        {"sha256": sha(NEW), "reason": "sli-watch: p95", "at": "2026-11-24T10:00:00+00:00"}).encode()
    _, err = run(fleet, tmp_path)
    assert isinstance(err, ReleaseBlocked) and err.exit_code == ExitCode.RELEASE_BLOCKED
    fleet2, sim2 = make(artifact, tmp_path)
    sim2.state_files.update(sim.state_files)
    _, err2 = run(fleet2, tmp_path, force=True)
    assert err2 is None


def test_rerun_after_a_killed_run_reconciles_and_finishes(artifact, tmp_path):
    """A SIGKILLed run left the canary drained, the new file renamed in place but not restarted, and a temp."""
    fleet, sim = make(artifact, tmp_path)
    canary = sim.nodes["backend-api-2"]
    canary.files[LAST_GOOD] = OLD  # the killed run kept the running build before its push
    canary.write(BIN, NEW, sim.tick())
    canary.files["/opt/veza/backend-api/.veza-api.new-deadbeef"] = b"half"
    sim.admin["backend-api-2"] = 0x08
    rep, err = run(fleet, tmp_path)
    assert err is None
    assert running(sim) == dict.fromkeys(NODES, sha(NEW))
    assert canary.restarts >= 1, "the renamed-but-not-restarted binary must be restarted"
    assert not [p for p in canary.files if ".veza-api.new-" in p]
    assert_all_in_rotation(sim)
    assert any(e["kind"] == "reconcile" for e in rep.events)


def test_rerun_skips_peers_already_on_the_artifact(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    sim.nodes["backend-api-2"].files[LAST_GOOD] = OLD  # kept by the earlier run
    for n in ("backend-api-2", "backend-api-1"):
        sim.nodes[n].write(BIN, NEW, sim.tick())
        sim.nodes[n].running_sha, sim.nodes[n].started_at = sha(NEW), sim.tick()
    rep, err = run(fleet, tmp_path)
    assert err is None
    assert sim.nodes["backend-api-1"].restarts == 0
    assert [s.outcome for s in rep.steps if s.name == "peer"] == ["skipped", "ok"]


def test_failed_rollback_leaves_the_canary_drained_and_says_so(artifact, tmp_path):
    broken = tmp_path / "broken-rollback"
    broken.write_bytes(b"#!/bin/sh\nbroken rollback\n")
    broken.chmod(0o755)
    fleet, sim = make(artifact, tmp_path, node_health_timeout=5.0, rollback_binary=broken)
    sim.behaviours[sha(NEW)] = Behaviour(health_status=500)
    sim.behaviours[sha(broken.read_bytes())] = Behaviour(health_status=500)  # the rollback binary is broken too
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, RollbackFailed) and err.exit_code == ExitCode.ROLLBACK_FAILED
    assert "DRAINED" in str(err)
    assert sim.admin["backend-api-2"] == 0x08
    assert rep.exit_code == 7


def test_no_rollback_source_is_a_preflight_failure(artifact, tmp_path):
    """The canary already has the artifact (an earlier run) and nothing kept the build before it."""
    s = make_settings(artifact=artifact, canary_node="backend-api-2", peer_nodes=("backend-api-1",),
                      state_dir=tmp_path / "state")
    sim = SimFleet(["backend-api-2", "backend-api-1"], binary=OLD, previous=None)
    sim.nodes["backend-api-2"].files[BIN] = NEW
    sim.nodes["backend-api-2"].running_sha = sha(NEW)
    fleet, sim = sim_fleet(s, sim)
    _, err = run(fleet, tmp_path)
    assert isinstance(err, PreflightError) and err.exit_code == ExitCode.PREFLIGHT
    assert "last-known-good" in str(err) and "no copy of the build before it was kept" in str(err)
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]


def test_rollback_target_is_the_build_the_canary_ran_not_an_older_previous(artifact, tmp_path):
    """Deploy A everywhere, then a failing build: the canary goes back to A by sha256, never to .previous."""
    fleet, sim = make(artifact, tmp_path, node_health_timeout=5.0)  # every node runs OLD (A); .previous is PREV
    sim.behaviours[sha(NEW)] = Behaviour(health_status=500)
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack)
    canary = sim.nodes["backend-api-2"]
    assert canary.running_sha == sha(OLD) and canary.files[BIN] == OLD
    assert canary.files[LAST_GOOD] == OLD and canary.files[PREVIOUS] == PREV  # .previous is never written
    assert rep.rollback_source["kind"] == "running" and rep.rollback_source["sha256"] == sha(OLD)
    assert any(e["kind"] == "previous_not_running" for e in rep.events)


def test_rerun_after_the_canary_got_the_artifact_rolls_back_to_the_copy_kept_before(artifact, tmp_path):
    """A run killed during the watch leaves the canary on the artifact; the re-run's target is the kept copy."""
    fleet, sim = make(artifact, tmp_path)
    queries = {"n": 0}

    def turn_red(sim_: SimFleet) -> None:  # green at preflight, red during the watch
        queries["n"] += 1
        if queries["n"] == 14:  # preflight asks 4 queries on each of 3 nodes
            sim_.behaviours[sha(NEW)] = Behaviour(err_ratio=0.2)

    sim.hooks["prom_query"] = turn_red
    canary = sim.nodes["backend-api-2"]
    canary.write(BIN, NEW, sim.tick())
    canary.write(LAST_GOOD, OLD, sim.tick())
    canary.running_sha, canary.started_at = sha(NEW), sim.tick()
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and "sli-watch" in str(err)
    assert canary.running_sha == sha(OLD)
    assert rep.rollback_source["kind"] == "kept"
    assert any(e["kind"] == "rollback_target_from_earlier_run" for e in rep.events)


def test_deploying_what_already_runs_everywhere_changes_nothing(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    for n in NODES:
        sim.nodes[n].write(BIN, NEW, sim.tick())
        sim.nodes[n].running_sha, sim.nodes[n].started_at = sha(NEW), sim.tick()
    rep, err = run(fleet, tmp_path)
    assert err is None and rep.exit_code == 0 and "nothing was changed" in rep.message
    assert all(sim.nodes[n].restarts == 0 for n in NODES)
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]
    assert not [p for p in sim.state_files if p.endswith("lock.json")], "lock not released"
    assert {s.name: s.outcome for s in rep.steps}["drain-canary"] == "skipped"


def test_a_canary_already_on_the_artifact_is_not_drained_again_but_the_peers_wait_for_its_watch(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    canary = sim.nodes["backend-api-2"]
    canary.write(BIN, NEW, sim.tick())
    canary.write(LAST_GOOD, OLD, sim.tick())
    canary.running_sha, canary.started_at = sha(NEW), sim.tick()
    rep, err = run(fleet, tmp_path)
    assert err is None
    assert canary.restarts == 0
    assert not [c for c in sim.commands if c == ("haproxy", "set server api_pool/backend-api-2 state drain")]
    assert len(rep.sli_samples) == 10  # the watch still ran before the peers
    assert running(sim) == dict.fromkeys(NODES, sha(NEW))


def test_a_binary_renamed_into_place_but_never_restarted_is_restarted(artifact, tmp_path):
    """Installed file == artifact but the service started before it changed (a run killed mid-install)."""
    fleet, sim = make(artifact, tmp_path)
    canary = sim.nodes["backend-api-2"]
    canary.write(LAST_GOOD, OLD, sim.tick())
    canary.write(BIN, NEW, sim.tick())  # after the service started: it still runs OLD
    rep, err = run(fleet, tmp_path)
    assert err is None
    assert canary.restarts == 1 and canary.running_sha == sha(NEW)
    assert ("haproxy", "set server api_pool/backend-api-2 state drain") in sim.commands


@pytest.mark.parametrize("setup,needle", [
    (lambda sim: sim.admin.__setitem__("backend-api-3", 0x01), "MAINT"),
    (lambda sim: sim.broken_nodes.add("backend-api-3"), "DOWN"),
    (lambda sim: setattr(sim, "prom_down", True), "Prometheus"),
    (lambda sim: setattr(sim, "haproxy_down", True), "admin socket"),
    (lambda sim: sim.behaviours.__setitem__(sha(OLD), Behaviour(p95=2.0)), "already red"),
])
def test_preflight_refuses_and_changes_nothing(artifact, tmp_path, setup, needle):
    fleet, sim = make(artifact, tmp_path)
    setup(sim)
    _, err = run(fleet, tmp_path)
    assert isinstance(err, PreflightError), err
    assert needle in str(err)
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]
    assert all(n.restarts == 0 for n in sim.nodes.values())


def test_unknown_node_is_refused_before_anything_changes(artifact, tmp_path):
    s = make_settings(artifact=artifact, canary_node="backend-api-2", peer_nodes=("backend-api-9",),
                           state_dir=tmp_path / "state")
    sim = SimFleet(NODES, binary=OLD, previous=PREV)
    fleet, _ = sim_fleet(s.replace(peer_nodes=("backend-api-1",)), sim)
    fleet.settings = s
    _, err = run(fleet, tmp_path)
    assert isinstance(err, PreflightError) and "backend-api-9" in str(err)


def test_missing_artifact_is_a_config_error(tmp_path):
    fleet, sim = make(tmp_path / "nope", tmp_path)
    _, err = run(fleet, tmp_path)
    assert isinstance(err, ConfigError) and err.exit_code == ExitCode.USAGE
    assert "no such file" in str(err)


def test_declined_confirmation_changes_nothing(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    _, err = run(fleet, tmp_path, confirm=lambda q: False)
    assert isinstance(err, PreflightError) and "not confirmed" in str(err)
    assert_all_in_rotation(sim)
    assert not any(p.endswith("lock.json") for p in sim.state_files)


def test_dry_run_plan_names_every_step_and_node():
    s = make_settings(peer_nodes=("backend-api-1", "backend-api-3"))
    text = "\n".join(plan(s))
    for step in STEPS:
        assert step.name in text
    for n in ("backend-api-2", "backend-api-1", "backend-api-3"):
        assert f"set server api_pool/{n} state drain" in text


def test_a_crash_looping_canary_is_red_even_when_healthy_between_crashes(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    calls = {"n": 0}

    def crash(sim_: SimFleet) -> None:
        calls["n"] += 1
        if calls["n"] == 20:  # during the watch (preflight asks 4 queries per node)
            sim_.nodes["backend-api-2"].crashes += 1

    sim.hooks["prom_query"] = crash
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and "systemd restarted the unit" in str(err)
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)


def _hook(dir_: Path, name: str, body: str) -> None:
    dir_.mkdir(parents=True, exist_ok=True)
    p = dir_ / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)


def _run_with_hooks(fleet, tmp_path: Path):
    from veza_canary.announce import Announcer

    ann = Announcer.from_settings(fleet.settings, store=None, repo_root=tmp_path)
    report = Report()
    d = Deploy(fleet, workdir=_workdir(tmp_path), report=report, repo_root=tmp_path, announcer=ann)
    try:
        d.run()
    except Exception as exc:
        return report, exc
    return report, None


def test_a_pre_deploy_hook_that_refuses_stops_the_deploy_before_any_change(artifact, tmp_path):
    hooks = tmp_path / "hooks"
    _hook(hooks, "pre-deploy", 'echo "change freeze" >&2; exit 1')
    fleet, sim = make(artifact, tmp_path, hooks_dir=str(hooks))
    rep, err = _run_with_hooks(fleet, tmp_path)
    assert err is not None and err.exit_code == ExitCode.HOOK_REFUSED and "change freeze" in str(err)
    assert all(sim.nodes[n].restarts == 0 for n in NODES)
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]
    assert not [p for p in sim.state_files if p.endswith("lock.json")]


def test_a_confirm_promotion_hook_that_refuses_rolls_the_canary_back_and_leaves_the_peers(artifact, tmp_path):
    hooks = tmp_path / "hooks"
    _hook(hooks, "confirm-promotion", 'echo "$VEZA_SHA256" > "$0.seen"; exit 3')
    fleet, sim = make(artifact, tmp_path, hooks_dir=str(hooks))
    rep, err = _run_with_hooks(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and "confirm-promotion" in str(err)
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert all(sim.nodes[p].restarts == 0 for p in ("backend-api-1", "backend-api-3"))
    assert_all_in_rotation(sim)
    assert not any(e["kind"] == "release_blocked" for e in rep.events), "a refused promotion blocks nothing"
    assert (hooks / "confirm-promotion.seen").read_text().strip() == sha(NEW)


FIVE = ["backend-api-2", "backend-api-1", "backend-api-3", "backend-api-4", "backend-api-5"]


def _five(artifact: Path, tmp_path: Path, **knobs):
    s = make_settings(artifact=artifact, canary_node="backend-api-2",
                      peer_nodes=("backend-api-1", "backend-api-3", "backend-api-4", "backend-api-5"),
                      sli_window=300.0, sli_probe_interval=30.0, allow_short_window=True,
                      state_dir=tmp_path / "state", **knobs)
    return sim_fleet(s, SimFleet(FIVE, binary=OLD, previous=PREV))


def _in_rotation(sim: SimFleet) -> int:
    return sum(1 for n in sim.nodes if sim.admin[n] == 0 and sim.healthy(n))


def test_peers_roll_in_batches_and_never_below_min_in_rotation(artifact, tmp_path):
    fleet, sim = _five(artifact, tmp_path, peer_batch="2", min_in_rotation="3")
    seen: list[int] = []
    sim.observers.append(lambda e: seen.append(_in_rotation(sim)) if e.startswith("haproxy:") else None)
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    assert {sim.nodes[n].running_sha for n in FIVE} == {sha(NEW)}
    assert min(seen) >= 3, f"in rotation dropped to {min(seen)}"
    drains = [c[1].split("/")[1].split()[0] for c in sim.commands if c[0] == "haproxy" and c[1].endswith("drain")]
    assert drains == ["backend-api-2", "backend-api-1", "backend-api-3", "backend-api-4", "backend-api-5"]
    assert [s.node for s in rep.steps if s.name == "peer"] == ["backend-api-1,backend-api-3",
                                                               "backend-api-4,backend-api-5"]


def test_a_batch_that_cannot_keep_min_in_rotation_is_refused_before_any_change(artifact, tmp_path):
    fleet, sim = _five(artifact, tmp_path, peer_batch="50%", min_in_rotation="80%")
    _, err = run(fleet, tmp_path)
    assert isinstance(err, PreflightError) and "MIN_IN_ROTATION" in str(err)
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]


def test_a_drain_waits_for_capacity_and_refuses_when_it_does_not_come_back(artifact, tmp_path):
    fleet, sim = _five(artifact, tmp_path, peer_batch="1", min_in_rotation="4", up_timeout=5.0)
    # backend-api-5 goes DOWN once the canary has restarted (before that, preflight would refuse a degraded fleet)
    sim.hooks["restart:backend-api-2"] = lambda sim_: sim_.broken_nodes.add("backend-api-5")
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, PeerRollFailed) and "MIN_IN_ROTATION" in str(err)
    assert sim.nodes["backend-api-1"].running_sha == sha(OLD) and sim.admin["backend-api-1"] == 0, \
        "the peer was never drained"


def test_a_failed_node_in_a_batch_stops_the_roll_after_its_batch_is_settled(artifact, tmp_path):
    fleet, sim = _five(artifact, tmp_path, peer_batch="2", min_in_rotation="1", node_health_timeout=5.0)
    def break_it(sim_: SimFleet) -> None:
        sim_.broken_nodes.add("backend-api-3")

    sim.hooks["restart:backend-api-3"] = break_it
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, PeerRollFailed) and "peer backend-api-3 failed" in str(err)
    assert sim.admin["backend-api-3"] == 0x08, "the failed node stays drained"
    assert sim.admin["backend-api-1"] == 0 and sim.nodes["backend-api-1"].running_sha == sha(NEW), \
        "its healthy batch-mate is finished and back in rotation"
    assert sim.nodes["backend-api-4"].running_sha == sha(OLD), "the next batch is not touched"
    assert "backend-api-1 is in rotation on the new binary" in str(err)


def _weights(sim: SimFleet, w: int = 100) -> SimFleet:
    sim.weights = dict.fromkeys(sim.nodes, w)
    sim.initial_weights = dict.fromkeys(sim.nodes, w)
    return sim


def test_a_good_build_ramps_through_each_step_and_ends_at_its_configured_weight(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, canary_steps="5,25,100", canary_step_hold=60.0)
    _weights(sim)
    seen: list[int] = []
    sim.observers.append(lambda e: seen.append(sim.weights["backend-api-2"]) if e == "prom" else None)
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    stages = [e["stage"] for e in rep.events if e["kind"] == "stage_verdict"]
    assert stages == ["5%", "25%", "100%"]
    i5 = seen.index(5)
    i25 = seen.index(25, i5)
    assert 100 in seen[i25:], "5 % first, then 25 %, then the configured weight"
    assert sim.weights == dict.fromkeys(NODES, 100), "every node ends at its configured weight"
    assert {s["stage"] for s in rep.sli_samples} == {"5%", "25%", "100%"}


def test_a_bad_build_is_rolled_back_at_the_first_step_and_no_weight_is_left_reduced(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, canary_steps="5,25,100", canary_step_hold=300.0)
    _weights(sim)
    sim.behaviours[sha(NEW)] = Behaviour(err_ratio=0.3)
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and "at 5%" in str(err)
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert sim.weights == dict.fromkeys(NODES, 100)
    assert all(sim.nodes[p].restarts == 0 for p in ("backend-api-1", "backend-api-3"))


def test_a_ramp_on_a_static_algorithm_is_refused_before_any_change(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, canary_steps="5,100")
    _weights(sim)
    sim.algo = "static-rr"
    _, err = run(fleet, tmp_path)
    assert isinstance(err, PreflightError) and "static" in str(err)
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set server")]


def test_a_haproxy_reload_mid_ramp_is_detected_and_the_weight_reapplied(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, canary_steps="25,100", canary_step_hold=120.0)
    _weights(sim)
    polls = {"n": 0}

    def reload_once(e: str) -> None:
        if e == "prom" and sim.weights["backend-api-2"] == 25:
            polls["n"] += 1
            if polls["n"] == 2:
                sim.reload_haproxy()
                sim.admin["backend-api-2"] = 0  # a reload forgets runtime states: ready, weight back to 100

    sim.observers.append(reload_once)
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    assert any(e["kind"] == "weight_reapplied" for e in rep.events)
    assert sim.weights == dict.fromkeys(NODES, 100)


def test_sigint_mid_ramp_restores_the_weight(artifact, tmp_path):
    from veza_canary.pipeline import DeployInterrupt as Interrupt

    fleet, sim = make(artifact, tmp_path, canary_steps="5,100", canary_step_hold=120.0)
    _weights(sim)

    def interrupt(e: str) -> None:
        if e == "prom" and sim.weights["backend-api-2"] == 5:
            sim.observers.clear()
            raise Interrupt("SIGINT")

    sim.observers.append(interrupt)
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, Interrupted)
    assert sim.weights == dict.fromkeys(NODES, 100) and sim.nodes["backend-api-2"].running_sha == sha(OLD)
    assert_all_in_rotation(sim)


def test_a_rerun_after_a_killed_ramp_restores_the_reduced_weight_first(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path)
    _weights(sim)
    sim.weights["backend-api-2"] = 5  # a SIGKILLed ramp left it there
    rep, err = run(fleet, tmp_path)
    assert err is None
    assert sim.weights == dict.fromkeys(NODES, 100)
    assert any(e["kind"] == "weight_restored" for e in rep.events)


def test_pinned_traffic_is_judged_first_and_the_pins_are_removed_on_every_path(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, canary_pins="team-veza", canary_pin_hold=60.0)
    _weights(sim)
    pinned: list[dict] = []
    sim.observers.append(lambda e: pinned.append(dict(sim.maps["/etc/haproxy/canary-pin.map"]))
                         if e == "prom" else None)
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    assert {"team-veza": "backend-api-2"} in pinned, "the pin was in the map during the pinned stage"
    assert [e["stage"] for e in rep.events if e["kind"] == "stage_verdict"] == ["pinned", "100%"]
    assert sim.maps["/etc/haproxy/canary-pin.map"] == {}
    assert sim.weights == dict.fromkeys(NODES, 100)


def test_a_fleet_wide_incident_rolls_the_canary_back_without_blaming_it(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, sli_hold_limit=120.0)

    def incident(sim_: SimFleet) -> None:  # every node answers 30 % 5xx once the canary is in rotation
        for b in (sha(NEW), sha(OLD)):
            sim_.behaviours[b] = Behaviour(err_ratio=0.3)

    sim.hooks["restart:backend-api-2"] = incident
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and "fleet-wide incident" in str(err)
    assert not any(e["kind"] == "release_blocked" for e in rep.events), "the release is not blocked"
    assert all(sim.nodes[p].restarts == 0 for p in ("backend-api-1", "backend-api-3")), "peers held"


def test_a_unit_that_fails_at_start_is_rolled_back_within_seconds_not_at_the_health_deadline(artifact, tmp_path):
    fleet, sim = make(artifact, tmp_path, node_health_timeout=60.0, poll_interval=0.5)
    sim.behaviours[sha(NEW)] = Behaviour(crash_loop=True)
    t0 = {}
    sim.hooks["restart:backend-api-2"] = lambda s: t0.setdefault("t", s.clock.monotonic())
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, CanaryRolledBack) and "systemd" in str(err)
    rollback = next(e for e in rep.events if e["kind"] == "rollback_start")
    assert rollback and sim.nodes["backend-api-2"].running_sha == sha(OLD)
    health = next(s for s in rep.steps if s.name == "canary-health")
    assert health.outcome == "failed"
    assert sim.clock.monotonic() - t0["t"] < 60, "not the 60 s deadline"
