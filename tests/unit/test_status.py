"""status.collect on a simulated fleet: what it reads, how it renders, and that it changes nothing."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict

import pytest

from tests.fakes import Behaviour, SimFleet, sha, sim_fleet
from tests.settings_helper import make_settings
from veza_canary.clock import FakeClock
from veza_canary.errors import CommandFailed
from veza_canary.lock import FleetLock, LockInfo
from veza_canary.sli import Queries, Verdict, thresholds_from_settings
from veza_canary.status import check_detailed, collect, read_shas, table
from veza_canary.transport.base import Transport

NODES = ["backend-api-2", "backend-api-1", "backend-api-3"]
OLD, PREV, NEW = b"old-binary", b"prev-binary", b"new-binary"
MUTATING = ("set server", "set weight", "add map", "del map", "clear map", "shutdown", "mv", "cp", "rm", "sh -c", "systemctl",
            "chmod", "ln", "install")


def make(**overrides):
    s = make_settings(canary_node="backend-api-2", peer_nodes=("backend-api-1", "backend-api-3"), **overrides)
    sim = SimFleet(NODES, binary=OLD, previous=PREV)
    sim.behaviours[sha(OLD)] = Behaviour(version="1.0.0")
    sim.behaviours[sha(NEW)] = Behaviour(version="1.1.0")
    return sim_fleet(s, sim)


def mutating_commands(sim: SimFleet) -> list[tuple[str, str]]:
    return [(w, c) for w, c in sim.commands if c.split(" ")[0] in MUTATING or c.startswith(MUTATING)]


def test_uniform_fleet_reads_every_column_and_changes_nothing():
    fleet, sim = make()
    st = collect(fleet)
    assert [r.name for r in st.nodes] == NODES
    for r in st.nodes:
        assert (r.status, r.admin, r.sessions, r.check_status) == ("UP", "ready", 0, "L7OK")
        assert r.sha256 == sha(OLD) and r.previous_exists and r.previous_sha256 == sha(PREV)
        assert (r.version, r.version_source) == ("1.0.0", "health")
        assert r.health is not None and r.health["ok"] and r.health["http_status"] == 200
        assert r.in_rotation and not r.odd_one_out
    assert [r.role for r in st.nodes] == ["canary", "peer", "peer"]
    assert not st.mixed and st.lock is None and st.blocked_releases == [] and st.errors == []
    assert [(r.scope, r.verdict) for r in st.sli] == [(n, "pass") for n in NODES]
    assert mutating_commands(sim) == []


def test_mixed_fleet_marks_the_odd_node_and_says_mixed():
    fleet, sim = make()
    node = sim.nodes["backend-api-2"]
    node.files["/opt/veza/backend-api/veza-api"] = NEW
    node.running_sha = sha(NEW)
    st = collect(fleet)
    assert st.mixed
    assert st.versions == {sha(NEW): ["backend-api-2"], sha(OLD): ["backend-api-1", "backend-api-3"]}
    assert [r.odd_one_out for r in st.nodes] == [True, False, False]
    assert st.nodes[0].version == "1.1.0"
    lines = table(st)
    mixed = [ln for ln in lines if ln.startswith("MIXED VERSIONS")]
    assert mixed == [f"MIXED VERSIONS: {sha(OLD)[:12]} (1.0.0) on backend-api-1, backend-api-3; "
                     f"{sha(NEW)[:12]} (1.1.0) on backend-api-2"]
    assert f"{sha(NEW)[:12]} !" in lines[2], "the odd node's sha is flagged in its row"


def test_version_falls_back_to_dash_dash_version_when_the_service_is_down():
    fleet, sim = make()
    sim.behaviours[sha(OLD)] = Behaviour(version="1.0.0", starts=False)
    row = collect(fleet, sli=False).nodes[1]
    assert (row.version, row.version_source) == ("1.0.0", "--version")
    assert row.health == {"ok": False, "http_status": None, "latency_ms": row.health["latency_ms"],
                          "error": "curl: (7) Failed to connect to 127.0.0.1 port 8080"}
    assert row.status == "DOWN" and not row.in_rotation


def test_lock_and_blocked_releases_are_shown():
    fleet, sim = make(lock_stale_after=60.0)
    clock = FakeClock(start=1_700_000_000.0)
    fleet.clock = clock
    info = LockInfo(holder="alice", host="laptop", pid=4242, started_at=clock.now().isoformat(timespec="seconds"),
                    artifact_sha256=sha(NEW), command="veza-canary deploy --artifact x", token="t0k")
    hold_lock(fleet, info)
    fleet.blocked().block(sha(NEW), "sli-watch: p95 0.9s >= 0.5s", clock.now())
    clock.advance(120)
    st = collect(fleet, sli=False)
    assert st.lock is not None and st.lock["holder"] == "alice" and st.lock["stale"] is True
    assert st.lock["age_s"] == 120 and "token" not in st.lock
    assert [b["sha256"] for b in st.blocked_releases] == [sha(NEW)]
    text = "\n".join(table(st))
    assert "lock: HELD STALE by alice@laptop pid 4242" in text
    assert f"{sha(NEW)[:12]}" in text and "p95 0.9s" in text


def hold_lock(fleet, info: LockInfo) -> None:
    """Put ``info`` in place as the fleet lock, as another deploy would."""
    assert fleet.store.link_exclusive(fleet.store.write_staged(asdict(info)), FleetLock.NAME)


def test_unreachable_haproxy_is_an_error_but_the_nodes_are_still_read():
    fleet, sim = make()
    sim.haproxy_down = True
    st = collect(fleet, sli=False)
    assert st.errors and st.errors[0].startswith("HAProxy: ")
    assert all(r.sha256 == sha(OLD) and r.status is None for r in st.nodes)
    assert "could not read: HAProxy" in "\n".join(table(st))


def test_stopped_container_is_reported_on_its_row():
    fleet, sim = make()
    sim.nodes["backend-api-3"].stopped = True
    st = collect(fleet, sli=False)
    row = st.nodes[2]
    assert row.sha256 is None and row.health is None and row.errors
    assert any(e.startswith("backend-api-3: binary:") for e in st.errors)


def test_missing_previous_is_shown_as_missing():
    fleet, sim = make()
    del sim.nodes["backend-api-1"].files["/opt/veza/backend-api/veza-api.previous"]
    st = collect(fleet, sli=False)
    assert st.nodes[1].previous_exists is False and st.nodes[1].previous_sha256 is None
    assert "MISSING" in table(st)[3]


def test_read_shas_reads_both_files_in_one_command():
    fleet, sim = make()
    n = len(sim.commands)
    assert read_shas(fleet.nodes["backend-api-1"]) == (sha(OLD), sha(PREV))
    assert len(sim.commands) == n + 1


def test_sli_for_an_unscoped_selector_is_one_fleet_probe():
    fleet, _ = make(sli_selector='job="veza"')
    st = collect(fleet)
    assert [(r.scope, r.verdict) for r in st.sli] == [("fleet", "pass")]


def test_drained_node_is_not_probed_and_json_is_serialisable():
    fleet, sim = make()
    fleet.haproxy.set_state("backend-api-3", "drain")
    sim.commands.clear()
    st = collect(fleet)
    assert [r.scope for r in st.sli] == ["backend-api-2", "backend-api-1"]
    d = json.loads(st.to_json())
    assert d["nodes"][2]["admin"] == "drain" and d["nodes"][2]["in_rotation"] is False
    assert set(d) == {"backend", "in_rotation", "nodes", "mixed", "versions", "lock_state", "lock",
                      "blocked_releases", "sli", "traffic", "errors"}
    assert d["in_rotation"] == 2 and d["lock_state"] == "free" and d["lock"] is None
    assert d["sli"]["thresholds"] == {"p95_s": 0.5, "err_ratio": 0.005, "min_requests": 5.0}


@pytest.mark.parametrize("behaviour,verdict", [
    (Behaviour(), Verdict.PASS),
    (Behaviour(p95=0.9), Verdict.FAIL),
    (Behaviour(req_rate=0.0), Verdict.NODATA),
])
def test_check_detailed_keeps_each_query_and_its_value(behaviour, verdict):
    fleet, sim = make()
    sim.behaviours[sha(OLD)] = behaviour
    s = fleet.settings
    readings, smp = check_detailed(fleet.prom, Queries.from_settings(s), thresholds_from_settings(s))
    assert smp.verdict is verdict
    q = readings["queries"]
    assert q["p95"]["query"].startswith("histogram_quantile(0.95") and q["p95"]["threshold"] == "< 0.5 s"
    assert q["errors"]["query"].endswith("or vector(0)")
    if verdict is not Verdict.NODATA:
        assert q["total"]["values"] == [10.0] and "600 requests in the rate window" in q["total"]["shown"]


def test_check_detailed_with_prometheus_down_is_an_error_verdict():
    fleet, sim = make()
    sim.prom_down = True
    s = fleet.settings
    readings, smp = check_detailed(fleet.prom, Queries.from_settings(s), thresholds_from_settings(s))
    assert smp.verdict is Verdict.ERROR
    assert readings["queries"]["p95"]["shown"].startswith("error: Prometheus")


def test_own_dead_process_lock_helper_matches_this_host():
    # Guard for the unlock command, which relies on the lock module's liveness check (public: holder_is_gone).
    from veza_canary.lock import holder_is_gone

    me = LockInfo("me", socket.gethostname(), os.getpid(), "", "x" * 64, "c", "t")
    assert holder_is_gone(me) is False
    fleet, _ = make()
    lock = fleet.lock()
    assert lock.why_releasable(me) == "it is STALE (older than LOCK_STALE_AFTER)", "no start time: stale"
    fresh = LockInfo("me", socket.gethostname(), os.getpid(), fleet.clock.now().isoformat(), "x" * 64, "c", "t")
    assert lock.why_releasable(fresh) is None


def test_unreadable_haproxy_is_unknown_never_zero_in_rotation():
    fleet, sim = make()
    sim.haproxy_down = True
    st = collect(fleet, sli=False)
    assert st.in_rotation is None and st.lock_state == "free"
    d = json.loads(st.to_json())
    assert d["in_rotation"] == "unknown" and all(n["in_rotation"] is None for n in d["nodes"])
    text = "\n".join(table(st))
    assert "in rotation: unknown" in text and "0 in rotation" not in text


def test_unreadable_lock_is_unknown_never_free():
    fleet, sim = make()

    def refuse(event: str) -> None:
        if event.startswith("state:"):
            raise CommandFailed("[haproxy] cat: Input/output error")

    sim.observers.append(refuse)
    st = collect(fleet, sli=False)
    assert st.lock_state == "unknown" and any(e.startswith("lock: ") for e in st.errors)
    d = json.loads(st.to_json())
    assert d["lock"] == "unknown" and d["lock_state"] == "unknown" and d["blocked_releases"] == "unknown"
    text = "\n".join(table(st))
    assert "lock: unknown" in text and "lock: free" not in text and "blocked releases: unknown" in text
    assert d["in_rotation"] == 3, "HAProxy was read"


class Canned(Transport):
    """A transport that answers every command with one canned reply (output lost on the way, etc.)."""

    name = "canned"

    def __init__(self, code: int, out: str, err: str) -> None:
        self.reply = (code, out.encode(), err.encode())

    def _run(self, argv, input, timeout):
        return self.reply


BIN, PREV_PATH = "/opt/veza/backend-api/veza-api", "/opt/veza/backend-api/veza-api.previous"


@pytest.mark.parametrize("code,out,err,expected", [
    (0, f"{'a' * 64}  {BIN}\n{'b' * 64}  {PREV_PATH}\n", "", ("a" * 64, "b" * 64)),
    (1, f"{'a' * 64}  {BIN}\n", f"sha256sum: {PREV_PATH}: No such file or directory\n", ("a" * 64, None)),
    (0, f"{'a' * 64}  {BIN}\n", "", CommandFailed),  # a line lost, exit 0: not "no .previous"
    (1, "", "", CommandFailed),  # output and error lost
    (1, f"{'a' * 64}  {BIN}\n", "sha256sum: /other: No such file or directory\n", CommandFailed),
])
def test_read_shas_never_mistakes_lost_output_for_a_missing_file(code, out, err, expected):
    from veza_canary.node import Node

    node = Node("backend-api-1", Canned(code, out, err), install_dir="/opt/veza/backend-api", restart_argv=(),
                health_url="http://127.0.0.1:8080/api/v1/health")
    if isinstance(expected, tuple):
        assert read_shas(node) == expected
    else:
        with pytest.raises(expected):
            read_shas(node)


def test_status_shows_a_weight_off_its_configured_value_and_a_pin_left_behind():
    from veza_canary.status import collect, table

    fleet, sim = make()
    sim.weights = dict.fromkeys(sim.nodes, 100)
    sim.initial_weights = dict.fromkeys(sim.nodes, 100)
    sim.weights["backend-api-2"] = 25
    sim.maps["/etc/haproxy/canary-pin.map"] = {"team-veza": "backend-api-2"}
    st = collect(fleet, sli=False)
    assert st.traffic is not None and not st.traffic["clean"]
    text = "\n".join(table(st))
    assert ("TRAFFIC NOT AS CONFIGURED: backend-api-2: weight 25, configured 100; "
            "pin team-veza -> backend-api-2 (map /etc/haproxy/canary-pin.map)") in text
    assert st.to_dict()["traffic"]["weights"] == [{"server": "backend-api-2", "current": 25, "initial": 100}]
