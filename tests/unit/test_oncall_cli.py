"""The on-call commands through CliRunner on a simulated fleet: arguments, output, exit codes, rollback policy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from tests.fakes import Behaviour, SimFleet, sha, sim_fleet
from veza_canary.cli import build_app
from veza_canary.errors import ExitCode
from veza_canary.haproxy import ADMF_FDRAIN
from veza_canary.lock import FleetLock, LockInfo
from veza_canary.settings import KNOBS

NODES = ["backend-api-2", "backend-api-1", "backend-api-3"]
OLD, PREV, GOOD = b"old-binary", b"prev-binary", b"#!/bin/sh\nknown-good\n"
BIN = "/opt/veza/backend-api/veza-api"
PREV_PATH = BIN + ".previous"
ENV = {"CANARY_NODE": "backend-api-2", "PEER_NODES": "backend-api-1 backend-api-3", "POLL_INTERVAL": "0.5"}


@pytest.fixture(autouse=True)
def _restore_structlog():
    """CliRunner runs the root callback, which points structlog at a stream that closes after the call."""
    cfg = structlog.get_config()
    yield
    structlog.configure(**cfg)


@pytest.fixture
def sim(monkeypatch, tmp_path) -> SimFleet:
    """A three-node simulated fleet; no knob leaks in from the environment."""
    for k in KNOBS:
        monkeypatch.delenv(k.env, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    sim = SimFleet(NODES, binary=OLD, previous=PREV)
    sim.behaviours[sha(OLD)] = Behaviour(version="1.0.0")
    sim.behaviours[sha(PREV)] = Behaviour(version="0.9.0")
    return sim


def invoker(sim: SimFleet, **app_kw):
    """``veza-canary ARGS`` on the real app, whose fleet factory builds a fleet over ``sim``."""
    app = build_app(fleet_factory=lambda settings: sim_fleet(settings, sim)[0], **app_kw)

    def vc(*args: str, input: str | None = None):  # noqa: A002 - CliRunner's name
        return CliRunner().invoke(app, ["--log-format", "json", *args], input=input)

    return vc


@pytest.fixture
def vc(sim):
    return invoker(sim)


def errors(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("veza-canary: error:")]


def binaries(sim: SimFleet) -> dict[str, str]:
    return {n: sim.nodes[n].running_sha for n in NODES}


def in_rotation(sim: SimFleet) -> bool:
    return all(a == 0 for a in sim.admin.values())


def state_changes(sim: SimFleet) -> list[str]:
    return [c for _w, c in sim.commands if c.startswith(("set server", "shutdown", "mv ", "cp ", "systemctl"))]


# --- help ---------------------------------------------------------------------------------------


def test_sub_apps_list_their_commands(vc):
    assert all(c in vc("haproxy", "--help").output for c in ("drain", "ready", "maint", "weight", "show"))
    assert all(c in vc("sli", "--help").output for c in ("check", "watch"))


def test_the_cli_modules_import_neither_rich_nor_httpx():
    """--help stays fast: rich, httpx and the pipeline load inside the commands, not with the CLI."""
    code = ("import sys, veza_canary.cli; print(sorted(m for m in ('rich', 'httpx', 'veza_canary.pipeline', "
            "'veza_canary.liveview', 'veza_canary.status') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


# --- status -------------------------------------------------------------------------------------


def test_status_table(sim, vc):
    r = vc("status")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "backend api_pool: 3 server(s), 3 in rotation"
    assert "backend-api-2  canary  UP" in r.stdout and "1.0.0" in r.stdout
    assert "lock: free" in r.stdout and "blocked releases: none" in r.stdout
    assert state_changes(sim) == []


def test_status_json_on_a_mixed_fleet(sim, vc):
    sim.nodes["backend-api-1"].files[BIN] = PREV
    sim.nodes["backend-api-1"].running_sha = sha(PREV)
    r = vc("status", "--format", "json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["mixed"] is True
    assert {n["name"]: (n["version"], n["odd_one_out"]) for n in d["nodes"]} == {
        "backend-api-2": ("1.0.0", False), "backend-api-1": ("0.9.0", True), "backend-api-3": ("1.0.0", False)}


def test_status_exits_10_when_haproxy_cannot_be_read_but_still_prints(sim, vc):
    sim.haproxy_down = True
    r = vc("status", "--format", "json", "--no-sli")
    assert r.exit_code == ExitCode.INFRA
    assert json.loads(r.stdout)["errors"][0].startswith("HAProxy:")


def test_status_bad_format_is_a_usage_error(sim, vc):
    assert vc("status", "--format", "yaml").exit_code == 2


# --- haproxy ------------------------------------------------------------------------------------


def test_haproxy_drain_wait_ready_wait(sim, vc):
    sim.sessions["backend-api-1"] = 3
    r = vc("haproxy", "drain", "backend-api-1", "--wait")
    assert r.exit_code == 0, r.output
    assert sim.admin["backend-api-1"] == ADMF_FDRAIN
    assert "backend-api-1: state drain (was ready)" in r.stdout
    assert "backend-api-1: DRAIN, admin drain, weight 0, 0 sessions" in r.stdout
    assert sum(1 for ln in r.stderr.splitlines() if '"drain.poll"' in ln) == 2, "one log line per poll"
    r = vc("haproxy", "ready", "backend-api-1", "--wait")
    assert r.exit_code == 0 and sim.admin["backend-api-1"] == 0
    assert "backend-api-1: UP, admin ready" in r.stdout


def test_haproxy_drain_wait_times_out_with_11(sim, vc):
    sim.sticky_sessions["backend-api-1"] = 2
    r = vc("haproxy", "drain", "backend-api-1", "--wait", "--drain-timeout", "5")
    assert r.exit_code == ExitCode.CHECK_FAILED
    assert "not reached within 5s" in errors(r)[0]
    assert sim.admin["backend-api-1"] == ADMF_FDRAIN, "the drain asked for stays"


def test_draining_the_last_server_in_rotation_needs_force(sim, vc):
    sim.admin["backend-api-1"] = sim.admin["backend-api-3"] = ADMF_FDRAIN
    r = vc("haproxy", "maint", "backend-api-2")
    assert r.exit_code == ExitCode.PREFLIGHT and "last server in rotation" in errors(r)[0]
    assert sim.admin["backend-api-2"] == 0
    assert vc("haproxy", "drain", "backend-api-2", "--force").exit_code == 0
    assert sim.admin["backend-api-2"] == ADMF_FDRAIN


def test_haproxy_weight_and_show(sim, vc):
    r = vc("haproxy", "weight", "backend-api-3", "50")
    assert r.exit_code == 0 and "backend-api-3: weight 50 (was 1, initial 1)" in r.stdout
    assert vc("haproxy", "weight", "backend-api-3", "300").exit_code == 2
    r = vc("haproxy", "show", "--format", "json")
    servers = {s["server"]: s for s in json.loads(r.stdout)["servers"]}
    assert servers["backend-api-3"]["weight"] == 50 and servers["backend-api-1"]["status"] == "UP"
    r = vc("haproxy", "show")
    assert r.stdout.splitlines()[1].split() == ["SERVER", "STATUS", "ADMIN", "WEIGHT", "SESS", "QUEUED", "CHECK",
                                                "ADDR"]


@pytest.mark.parametrize("args", [["drain", "backend-api-9"], ["ready", "nope;show"], ["weight", "x", "1"]])
def test_haproxy_unknown_or_bad_server_is_a_usage_error(sim, args, vc):
    r = vc("haproxy", *args)
    assert r.exit_code == 2
    assert state_changes(sim) == []


def test_haproxy_unreachable_is_10(sim, vc):
    sim.haproxy_down = True
    r = vc("haproxy", "drain", "backend-api-1")
    assert r.exit_code == ExitCode.INFRA and "admin socket" in errors(r)[0]


def test_haproxy_commands_note_a_held_lock(sim, vc):
    hold_lock(sim, pid=os.getpid())
    r = vc("haproxy", "weight", "backend-api-1", "2")
    assert r.exit_code == 0 and "note: a deploy holds the fleet lock" in r.stderr


# --- health -------------------------------------------------------------------------------------


def test_health_of_a_node_prints_status_latency_and_version(sim, vc):
    r = vc("health", "backend-api-1")
    assert r.exit_code == 0
    assert r.stdout.startswith("backend-api-1 http://127.0.0.1:8080/api/v1/health: ")
    assert "HTTP 200 in " in r.stdout
    assert r.stdout.rstrip().endswith("(version 1.0.0)")


def test_health_not_200_is_11(sim, vc):
    sim.broken_nodes.add("backend-api-1")
    r = vc("health", "backend-api-1")
    assert r.exit_code == ExitCode.CHECK_FAILED and "HTTP 500" in errors(r)[0]


def test_health_of_a_stopped_container_is_10(sim, vc):
    sim.nodes["backend-api-3"].stopped = True
    assert vc("health", "backend-api-3").exit_code == ExitCode.INFRA


def test_health_of_the_lb(sim, vc):
    assert vc("health", "--lb").exit_code == 0
    for n in NODES:
        sim.admin[n] = ADMF_FDRAIN
    r = vc("health", "--lb")
    assert r.exit_code == ExitCode.CHECK_FAILED and "HTTP 503" in errors(r)[0]


@pytest.mark.parametrize("args", [[], ["backend-api-1", "--lb"], ["Bad_Name"]])
def test_health_needs_exactly_one_valid_target(sim, args, vc):
    assert vc("health", *args).exit_code == 2


# --- sli ----------------------------------------------------------------------------------------


def test_sli_check_prints_each_query_value_threshold_and_verdict(sim, vc):
    r = vc("sli", "check")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "SLI check on backend-api-2" in out
    assert 'histogram_quantile(0.95, sum by (le) (rate(veza_gin_http_request_duration_seconds_bucket{node=' \
           '"backend-api-2"' in out
    assert "= 0.05 s    threshold < 0.5 s" in out and "5xx ratio = 0.0000    threshold < 0.005" in out
    assert out.rstrip().splitlines()[-1].startswith("verdict: pass")


@pytest.mark.parametrize("behaviour,code", [(Behaviour(p95=0.9), 11), (Behaviour(req_rate=0.0), 11)])
def test_sli_check_red_or_no_data_is_11(sim, behaviour, code, vc):
    sim.behaviours[sha(OLD)] = behaviour
    assert vc("sli", "check", "--node", "backend-api-1").exit_code == code


def test_sli_check_json_and_prometheus_down(sim, vc):
    d = json.loads(vc("sli", "check", "--format", "json").stdout)
    assert d["verdict"] == "pass" and d["p95_threshold"] == 0.5 and d["queries"]["total"]["values"] == [10.0]
    sim.prom_down = True
    assert vc("sli", "check").exit_code == ExitCode.INFRA


def test_sli_watch_green_red_and_errors(sim, vc):
    assert vc("sli", "watch", "--window", "1m", "--sli-probe-interval", "20").exit_code == 0
    sim.behaviours[sha(OLD)] = Behaviour(err_ratio=0.5)
    r = vc("sli", "watch", "--window", "60")
    assert r.exit_code == ExitCode.CHECK_FAILED and "RED" in errors(r)[0] and "5xx ratio" in errors(r)[0]
    sim.prom_down = True
    r = vc("sli", "watch", "--window", "60", "--sli-probe-interval", "5")
    assert r.exit_code == ExitCode.INFRA and "4 consecutive Prometheus errors" in errors(r)[0]


def test_sli_watch_of_a_node_haproxy_reports_down_is_red(sim, vc):
    sim.broken_nodes.add("backend-api-2")
    r = vc("sli", "watch", "--window", "60")
    assert r.exit_code == ExitCode.CHECK_FAILED and "is DOWN in HAProxy" in errors(r)[0]


@pytest.mark.parametrize("window", ["0", "soon", "9d", "10"])  # 10 < the 30 s default probe interval
def test_sli_watch_bad_window_is_a_usage_error(sim, window, vc):
    r = vc("sli", "watch", "--window", window)
    assert r.exit_code == 2 and "--window" in errors(r)[0]


# --- rollback -----------------------------------------------------------------------------------


def test_rollback_all_to_previous_one_node_at_a_time(sim, tmp_path, vc):
    report = tmp_path / "rb.json"
    r = vc("rollback", "--report", str(report))
    assert r.exit_code == 0, r.output
    assert binaries(sim) == dict.fromkeys(NODES, sha(PREV)) and in_rotation(sim)
    assert all(sim.nodes[n].files[BIN] == PREV for n in NODES)
    # One node at a time: each is drained, restored, restarted and back in before the next is drained.
    drains = [c.split()[2].split("/")[1] for _w, c in sim.commands if c.endswith("state drain")]
    readies = [c.split()[2].split("/")[1] for _w, c in sim.commands if c.endswith("state ready")]
    assert drains == readies == NODES
    sets = [c for _w, c in sim.commands if c.startswith("set server")]
    assert sets == [f"set server api_pool/{n} state {s}" for n in NODES for s in ("drain", "ready")]
    rep = json.loads(report.read_text())
    assert rep["command"] == "rollback" and rep["exit_code"] == 0 and rep["outcome"] == "success"
    assert [(s["name"], s["node"], s["outcome"]) for s in rep["steps"] if s["name"] == "rollback"] == [
        ("rollback", n, "ok") for n in NODES]
    assert {n: st["binary"] for n, st in rep["final_state"]["nodes"].items()} == dict.fromkeys(NODES, "target")
    assert "outcome: success (exit 0)" in r.stdout
    assert list((tmp_path / "state" / "reports").glob("rollback-*.json")), "a copy goes under STATE_DIR"
    assert not any(p.endswith("lock.json") for p in sim.state_files), "lock released"


def test_rollback_on_a_mixed_fleet_skips_nodes_already_there(sim, vc):
    sim.nodes["backend-api-1"].files[BIN] = PREV
    sim.nodes["backend-api-1"].running_sha = sha(PREV)
    r = vc("rollback", "--nodes", "all")
    assert r.exit_code == 0, r.output
    assert binaries(sim) == dict.fromkeys(NODES, sha(PREV))
    assert sim.nodes["backend-api-1"].restarts == 0
    assert "skip (already on the target and in rotation)" in r.stdout


def test_rollback_to_a_local_binary_on_chosen_nodes(sim, tmp_path, vc):
    good = tmp_path / "veza-api-good"
    good.write_bytes(GOOD)
    good.chmod(0o755)
    r = vc("rollback", "--nodes", "backend-api-3,backend-api-1", "--to", str(good))
    assert r.exit_code == 0, r.output
    assert binaries(sim) == {"backend-api-2": sha(OLD), "backend-api-1": sha(GOOD), "backend-api-3": sha(GOOD)}
    assert [c.split()[2] for _w, c in sim.commands if c.endswith("state drain")] == [
        "api_pool/backend-api-3", "api_pool/backend-api-1"]


def test_rollback_defaults_to_rollback_binary_when_set(sim, tmp_path, monkeypatch, vc):
    good = tmp_path / "veza-api-good"
    good.write_bytes(GOOD)
    good.chmod(0o755)
    monkeypatch.setenv("ROLLBACK_BINARY", str(good))
    assert vc("rollback", "--nodes", "backend-api-1").exit_code == 0
    assert sim.nodes["backend-api-1"].running_sha == sha(GOOD)


def test_rollback_dry_run_changes_nothing(sim, vc):
    r = vc("rollback", "--dry-run")
    assert r.exit_code == 0
    assert "backend-api-2" in r.stdout and f"{sha(OLD)[:12]} -> {sha(PREV)[:12]}" in r.stdout
    assert state_changes(sim) == [] and not sim.state_files


def test_rollback_refuses_when_a_previous_is_missing_and_changes_nothing(sim, vc):
    del sim.nodes["backend-api-3"].files[PREV_PATH]
    r = vc("rollback")
    assert r.exit_code == ExitCode.PREFLIGHT and "backend-api-3" in errors(r)[0]
    assert state_changes(sim) == []


@pytest.mark.parametrize("args,code", [
    (["--nodes", "backend-api-1,backend-api-1"], 2),
    (["--nodes", "bad_name"], 2),
    (["--nodes", "backend-api-9"], 3),  # valid name, not a server of the backend
    (["--to", "/nonexistent/veza-api"], 2),
])
def test_rollback_bad_arguments(sim, args, code, vc):
    r = vc("rollback", *args)
    assert r.exit_code == code, r.output
    assert state_changes(sim) == []


def test_rollback_whose_target_does_not_start_leaves_that_node_drained_and_stops(sim, tmp_path, vc):
    sim.behaviours[sha(PREV)] = Behaviour(starts=False)
    report = tmp_path / "rb.json"
    r = vc("rollback", "--node-health-timeout", "3", "--report", str(report))
    assert r.exit_code == ExitCode.ROLLBACK_FAILED
    msg = errors(r)[0]
    assert "ROLLBACK FAILED on backend-api-2" in msg and "left DRAINED" in msg
    assert "Not rolled: backend-api-1, backend-api-3" in msg
    assert sim.admin == {"backend-api-2": ADMF_FDRAIN, "backend-api-1": 0, "backend-api-3": 0}
    assert sim.nodes["backend-api-1"].restarts == sim.nodes["backend-api-3"].restarts == 0
    rep = json.loads(report.read_text())
    assert rep["exit_code"] == 7
    assert rep["resume"] == ("veza-canary rollback --nodes backend-api-2,backend-api-1,backend-api-3 "
                             "--to previous")


def test_rollback_drain_timeout_puts_the_node_back_unchanged(sim, vc):
    sim.sticky_sessions["backend-api-2"] = 1
    r = vc("rollback", "--drain-timeout", "3")
    assert r.exit_code == ExitCode.ROLLBACK_FAILED
    assert "could not be drained" in errors(r)[0] and "unchanged and back in rotation" in errors(r)[0]
    assert binaries(sim) == dict.fromkeys(NODES, sha(OLD)) and in_rotation(sim)


def test_rollback_with_the_lock_held_is_8(sim, vc):
    hold_lock(sim, pid=os.getpid())
    r = vc("rollback")
    assert r.exit_code == ExitCode.LOCKED
    assert state_changes(sim) == []


def test_rollback_asks_on_a_tty_and_no_changes_nothing(sim, vc):
    asked = []
    no = invoker(sim, confirm=lambda q: asked.append(q) or False)
    r = no("rollback")
    assert asked and "roll" in asked[0].lower()
    assert r.exit_code == ExitCode.PREFLIGHT and "not confirmed" in errors(r)[0]
    assert state_changes(sim) == []
    assert no("rollback", "--yes").exit_code == 0


def test_sigint_while_replacing_a_binary_finishes_that_node_then_stops(sim, vc):
    sim.hooks["restart:backend-api-2"] = lambda _s: os.kill(os.getpid(), signal.SIGINT)
    r = vc("rollback")
    assert r.exit_code == ExitCode.INTERRUPTED
    assert "after finishing backend-api-2" in errors(r)[0] and "not rolled: backend-api-1, backend-api-3" in \
        errors(r)[0]
    assert binaries(sim) == {"backend-api-2": sha(PREV), "backend-api-1": sha(OLD), "backend-api-3": sha(OLD)}
    assert in_rotation(sim)


def test_sigint_while_draining_puts_the_node_back_and_stops(sim, tmp_path):
    from veza_canary.manual_rollback import ManualRollback
    from veza_canary.settings import load_settings

    class SignalOnSecondDrain:
        def on_poll(self, poll):
            if poll.what.startswith("backend-api-1 drained"):
                os.kill(os.getpid(), signal.SIGINT)

        def on_watch(self, policy, node): ...

        def on_sample(self, sample, result): ...

    sim.sticky_sessions["backend-api-1"] = 1
    fleet, _ = sim_fleet(load_settings({}, dict(os.environ)), sim)
    mr = ManualRollback(fleet, list(NODES), workdir=tmp_path, observer=SignalOnSecondDrain())
    with pytest.raises(Exception) as exc_info:
        mr.run()
    err = exc_info.value
    assert err.exit_code == ExitCode.INTERRUPTED and "while draining backend-api-1" in str(err)
    assert "backend-api-1 unchanged and back in rotation" in str(err)
    assert binaries(sim) == {"backend-api-2": sha(PREV), "backend-api-1": sha(OLD), "backend-api-3": sha(OLD)}
    assert in_rotation(sim) and not lock_held(sim)
    assert err.report.resume == "veza-canary rollback --nodes backend-api-1,backend-api-3 --to previous"


# --- unlock -------------------------------------------------------------------------------------


def hold_lock(sim: SimFleet, *, pid: int, host: str | None = None, started_at: str = "") -> LockInfo:
    from tests.settings_helper import make_settings

    fleet, _ = sim_fleet(make_settings(canary_node="backend-api-2",
                                            peer_nodes=("backend-api-1", "backend-api-3")), sim)
    info = LockInfo(holder="alice", host=host or socket.gethostname(), pid=pid,
                    started_at=started_at or fleet.clock.now().isoformat(timespec="seconds"),
                    artifact_sha256="ab" * 32, command="veza-canary deploy --artifact /tmp/x", token="tok")
    assert fleet.store.link_exclusive(fleet.store.write_staged(asdict(info)), FleetLock.NAME)
    return info


def lock_held(sim: SimFleet) -> bool:
    return any(p.endswith("/lock.json") for p in sim.state_files)


def test_unlock_with_no_lock(sim, vc):
    r = vc("unlock")
    assert r.exit_code == 0 and "lock: free" in r.stdout


def test_unlock_refuses_a_live_holder_without_force(sim, vc):
    hold_lock(sim, pid=os.getpid(), host="another-host")
    r = vc("unlock")
    assert r.exit_code == ExitCode.LOCKED and "looks live" in errors(r)[0]
    assert "lock: held by alice@another-host" in r.stdout and lock_held(sim)
    r = vc("unlock", "--force")
    assert r.exit_code == 0 and "lock: released (forced)" in r.stdout and not lock_held(sim)


def test_unlock_releases_a_dead_local_holder(sim, vc):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    hold_lock(sim, pid=p.pid)
    r = vc("unlock")
    assert r.exit_code == 0 and "holder process is gone" in r.stdout and not lock_held(sim)


def test_unlock_releases_a_stale_lock(sim, vc):
    sim.clock.t = 1_700_000_000.0 + 7201  # LOCK_STALE_AFTER is 7200 s
    hold_lock(sim, pid=1, host="another-host", started_at="2023-11-14T22:13:20+00:00")
    r = vc("unlock")
    assert r.exit_code == 0 and "STALE" in r.stdout and not lock_held(sim)


def test_a_released_lock_lets_a_rollback_run(sim, tmp_path, vc):
    hold_lock(sim, pid=os.getpid(), host="another-host")
    assert vc("rollback", "--nodes", "backend-api-1").exit_code == ExitCode.LOCKED
    assert vc("unlock", "--force").exit_code == 0
    assert vc("rollback", "--nodes", "backend-api-1").exit_code == 0


def test_report_path_is_written_even_on_failure(sim, tmp_path, vc):
    del sim.nodes["backend-api-1"].files[PREV_PATH]
    report = tmp_path / "r.json"
    vc("rollback", "--report", str(report))
    assert json.loads(Path(report).read_text())["exit_code"] == 3


def test_haproxy_weight_restore_puts_every_weight_back_and_removes_the_pins(sim, vc):
    sim.weights = dict.fromkeys(sim.nodes, 100)
    sim.initial_weights = dict.fromkeys(sim.nodes, 100)
    sim.weights["backend-api-2"] = 5  # a killed ramp left it there
    sim.maps["/etc/haproxy/canary-pin.map"] = {"team-veza": "backend-api-2"}
    r = vc("haproxy", "weight", "--restore")
    assert r.exit_code == 0, r.output
    assert sim.weights == dict.fromkeys(sim.nodes, 100) and sim.maps["/etc/haproxy/canary-pin.map"] == {}
    assert "backend-api-2" in r.stdout
    again = vc("haproxy", "weight", "--restore")
    assert again.exit_code == 0 and "nothing to restore" in again.stdout
    assert vc("haproxy", "weight").exit_code == 2
    assert vc("haproxy", "weight", "--restore", "backend-api-2").exit_code == 2
