"""Two HAProxy in front of one pool (issue 18 §2): the HAProxySet's rules and whole deploys over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import SimFleet, SimHAProxy, SimOtherLB, sha, two_lb_fleet
from tests.settings_helper import make_settings
from veza_canary import traffic
from veza_canary.clock import FakeClock
from veza_canary.errors import ConfigError, ExitCode, HAProxyError, PeerRollFailed, RollbackFailed
from veza_canary.fleet import build_fleet
from veza_canary.haproxy import ADMF_FDRAIN, HAProxy
from veza_canary.health import WaitTimedOut, wait_drained, wait_up
from veza_canary.lbs import DISAGREE, HAProxySet
from veza_canary.pipeline import Deploy
from veza_canary.report import Report

NODES = ["backend-api-2", "backend-api-1", "backend-api-3"]
OLD, PREV, NEW = b"old-binary", b"prev-binary", b"#!/bin/sh\nnew-binary v2\n"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    p = tmp_path / "veza-api-new"
    p.write_bytes(NEW)
    p.chmod(0o755)
    return p


def make(artifact: Path | None, tmp_path: Path, **overrides):
    s = make_settings(
        artifact=artifact, canary_node="backend-api-2", peer_nodes=("backend-api-1", "backend-api-3"),
        sli_window=300.0, sli_probe_interval=30.0, allow_short_window=True, state_dir=tmp_path / "state",
        haproxy_containers="haproxy haproxy-2", **overrides,
    )
    return two_lb_fleet(s, SimFleet(NODES, binary=OLD, previous=PREV))


def run(fleet, tmp_path: Path):
    report = Report()
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    try:
        Deploy(fleet, workdir=work, report=report, repo_root=tmp_path).run()
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return report, exc
    return report, None


def drains(commands: list) -> list[str]:
    return [c[1].split("/")[1].split()[0] for c in commands if c[0] == "haproxy" and c[1].endswith("state drain")]


# --- settings and the fleet ----------------------------------------------------------------------------------


def test_one_haproxy_is_the_default_and_keeps_the_plain_client():
    s = make_settings()
    assert s.haproxy.lbs == ("haproxy",)
    fleet = build_fleet(s, clock=FakeClock())
    try:
        assert type(fleet.haproxy) is HAProxy
    finally:
        fleet.close()


def test_haproxy_containers_builds_a_set_and_the_store_lives_on_the_first():
    s = make_settings(haproxy_containers="lb-a, lb-b")
    assert s.haproxy.lbs == ("lb-a", "lb-b")
    fleet = build_fleet(s, clock=FakeClock())
    try:
        assert isinstance(fleet.haproxy, HAProxySet) and fleet.haproxy.names == ["lb-a", "lb-b"]
        assert fleet.store.transport.container == "lb-a"  # type: ignore[attr-defined]
    finally:
        fleet.close()


def test_a_toml_list_is_accepted():
    s = make_settings(haproxy_containers=["remote:lb-a", "lb-b"])
    assert s.haproxy.lbs == ("remote:lb-a", "lb-b")


@pytest.mark.parametrize("knobs,needle", [
    ({"haproxy_containers": "lb-a lb-a"}, "twice"),
    ({"haproxy_containers": "lb-a lb;b"}, "not a valid Incus instance name"),
    ({"haproxy_containers": "lb-a lb-b", "haproxy_container": "lb-c"}, "does not list HAPROXY_CONTAINER"),
    ({"haproxy_containers": "lb-a lb-b", "haproxy_local_socket": "/run/admin.sock"}, "HAPROXY_LOCAL_SOCKET"),
])
def test_bad_haproxy_containers_are_refused(knobs, needle):
    with pytest.raises(ConfigError) as e:
        make_settings(**knobs)
    assert needle in str(e.value) and "haproxy-containers" in str(e.value)


def test_haproxy_container_may_name_one_of_the_list():
    assert make_settings(haproxy_containers="lb-a lb-b", haproxy_container="lb-b").haproxy.lbs == ("lb-a", "lb-b")


# --- the set's rules -------------------------------------------------------------------------------------------


def test_drain_goes_to_both_and_is_seen_only_when_both_are_drained_with_no_session(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    h = fleet.haproxy
    lb2.admin["backend-api-1"] = ADMF_FDRAIN  # drained on the second HAProxy only
    assert h.state("backend-api-1").admin == "ready", "drained on one HAProxy is still in rotation"
    h.set_state("backend-api-1", "drain")
    assert sim.admin["backend-api-1"] == ADMF_FDRAIN and lb2.admin["backend-api-1"] == ADMF_FDRAIN
    assert h.state("backend-api-1").drained
    lb2.sticky_sessions["backend-api-1"] = 3  # a long session on the second HAProxy only
    assert h.stat("backend-api-1").scur == 3, "sessions are added up over the HAProxy"
    with pytest.raises(WaitTimedOut):
        wait_drained(h, "backend-api-1", timeout=5, interval=1, clock=sim.clock)
    h.shutdown_sessions("backend-api-1")
    assert wait_drained(h, "backend-api-1", timeout=5, interval=1, clock=sim.clock).scur == 0


def test_up_and_in_rotation_only_when_every_haproxy_says_so(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    h = fleet.haproxy
    assert h.in_rotation() == set(NODES)
    lb2.admin["backend-api-3"] = ADMF_FDRAIN
    assert h.in_rotation() == {"backend-api-1", "backend-api-2"}
    assert h.stat("backend-api-3").status == "DRAIN" and not h.stat("backend-api-3").is_up
    assert h.stats()["backend-api-3"].status == "DRAIN" and h.stats()["backend-api-1"].is_up
    with pytest.raises(WaitTimedOut):
        wait_up(h, "backend-api-3", timeout=3, interval=1, clock=sim.clock)
    h.set_state("backend-api-3", "ready")
    assert wait_up(h, "backend-api-3", timeout=3, interval=1, clock=sim.clock).is_up
    assert h.view("backend-api-3").state.admin == "ready"


def test_one_haproxy_unreachable_is_an_error_naming_it_and_a_drain_still_reaches_the_other(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    h = fleet.haproxy
    lb2.haproxy_down = True
    for read in (lambda: h.state("backend-api-1"), lambda: h.stat("backend-api-1"), h.states, h.stats,
                 h.in_rotation, lambda: h.get_weight("backend-api-1")):
        with pytest.raises(HAProxyError, match="HAProxy haproxy-2: "):
            read()
    with pytest.raises(HAProxyError) as e:
        h.set_state("backend-api-1", "drain")
    assert "HAProxy haproxy-2" in str(e.value) and "applied on haproxy)" in str(e.value)
    assert sim.admin["backend-api-1"] == ADMF_FDRAIN, "the HAProxy that answers got the drain"
    with pytest.raises(HAProxyError, match="haproxy-2"):
        traffic.weights(h)  # a raw read through the set's socket checks every HAProxy too


def test_weights_and_pins_go_to_both_and_a_disagreement_reads_as_skewed(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    h = fleet.haproxy
    assert traffic.set_weight(h, "backend-api-2", 25).current == 25
    assert sim.weights["backend-api-2"] == 25 and lb2.weights["backend-api-2"] == 25
    lb2.reload_haproxy()  # the second HAProxy forgets the runtime weight
    chk = traffic.check_weight(h, "backend-api-2", 25)
    assert chk.lost and chk.weight.haproxy == "haproxy-2", "a step with half the traffic at full weight fails"
    assert traffic.read_weight(h, "backend-api-2").current == DISAGREE
    assert traffic.weights(h)["backend-api-2"].current == DISAGREE and traffic.weights(h)["backend-api-2"].skewed
    traffic.restore_weight(h, "backend-api-2")
    assert sim.weights["backend-api-2"] == lb2.weights["backend-api-2"] == 100
    pins = traffic.PinMap(h, "/etc/haproxy/canary-pin.map")
    pins.add("canary-testers", "backend-api-2")
    assert sim.maps["/etc/haproxy/canary-pin.map"] == lb2.maps["/etc/haproxy/canary-pin.map"] == {
        "canary-testers": "backend-api-2"}
    assert pins.clear() and lb2.maps["/etc/haproxy/canary-pin.map"] == {}


def test_a_server_one_haproxy_does_not_know_is_unknown(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    other = SimOtherLB(SimFleet(["backend-api-2", "backend-api-1"]))
    h = HAProxySet([("haproxy", fleet.haproxy.members.items[0][1]),
                    ("haproxy-3", HAProxy(SimHAProxy(other), "api_pool"))])
    assert set(h.states()) == set(h.stats()) == {"backend-api-2", "backend-api-1"}


# --- traffic shaping over two HAProxy (traffic.py reads each one: HAProxySet.each) -------------------------------

CANARY, MAP = "backend-api-2", "/etc/haproxy/canary-pin.map"


def at_100(sim, lb2) -> None:
    """Every server configured at weight 100 (fine enough for ramp steps) on both HAProxy."""
    sim.initial_weights = dict.fromkeys(NODES, 100)
    sim.weights = dict.fromkeys(NODES, 100)
    lb2.weights = dict.fromkeys(NODES, 100)


def test_each_reads_every_haproxy_by_name_and_a_raw_read_on_the_set_is_refused(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    h = fleet.haproxy
    assert h.each(lambda m: m.get_weight(CANARY)) == {"haproxy": (1, 1), "haproxy-2": (1, 1)}
    assert HAProxy(SimHAProxy(sim), "api_pool").each(lambda m: m.backend) == {"": "api_pool"}
    with pytest.raises(RuntimeError, match="each"):
        h.command("show info")  # whose reply? never silently the first one's


def test_the_second_haproxy_reloaded_mid_step_gets_the_weight_back_there(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    guard = traffic.StepGuard.enter(fleet.haproxy, CANARY, 25)
    assert set(guard.marker or {}) == {"haproxy", "haproxy-2"} and guard.check().ok
    lb2.reload_haproxy()  # only the second HAProxy: the first keeps 25
    chk = guard.check()
    assert chk.lost and chk.reloaded and chk.weight == traffic.Weight(CANARY, 100, 100, "haproxy-2")
    assert "HAProxy haproxy-2 reloaded" in chk.reason
    assert guard.reapplied == 1 and lb2.weights[CANARY] == 25 and sim.weights[CANARY] == 25
    assert guard.check().ok, "against the second HAProxy's new process"


def test_a_reload_of_the_second_haproxy_at_full_weight_is_seen_and_remembered(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    guard = traffic.StepGuard.enter(fleet.haproxy, CANARY, 100)
    lb2.reload_haproxy()
    chk = guard.check()
    assert chk.reloaded and chk.weight.haproxy == "haproxy-2" and guard.reapplied == 0
    assert guard.check().ok


def test_someone_elses_weight_on_the_second_haproxy_fails_the_step_even_when_the_first_lost_its_own(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    guard = traffic.StepGuard.enter(fleet.haproxy, CANARY, 25)
    sim.reload_haproxy()  # the first HAProxy lost the weight ...
    lb2.weights[CANARY] = 60  # ... and someone set another one on the second
    chk = guard.check()
    assert not chk.ok and not chk.lost and "someone else" in chk.reason and chk.weight.haproxy == "haproxy-2"
    assert guard.reapplied == 0 and lb2.weights[CANARY] == 60


def test_skew_names_the_haproxy_a_weight_or_a_pin_is_left_on(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    h = fleet.haproxy
    assert traffic.traffic_skew(h, MAP).clean
    lb2.weights[CANARY] = 25
    lb2.maps[MAP] = {"team-veza": CANARY}
    skew = traffic.traffic_skew(h, MAP)
    assert skew.weights == (traffic.Weight(CANARY, 25, 100, "haproxy-2"),)
    assert skew.pins == {"team-veza": CANARY} and skew.pins_only_on == {"team-veza": ["haproxy-2"]}
    assert skew.lines() == [f"{CANARY}: weight 25, configured 100 on HAProxy haproxy-2",
                            f"pin team-veza -> {CANARY} (map {MAP}, only on haproxy-2)"]
    assert skew.to_dict()["weights"] == [{"server": CANARY, "current": 25, "initial": 100, "haproxy": "haproxy-2"}]


def test_status_shows_the_skew_of_each_haproxy(tmp_path):
    from veza_canary.status import collect

    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    sim.weights[CANARY] = 5
    lb2.weights[CANARY] = 25
    st = collect(fleet, sli=False)
    assert st.traffic is not None and st.traffic["weights"] == [
        {"server": CANARY, "current": 5, "initial": 100, "haproxy": "haproxy"},
        {"server": CANARY, "current": 25, "initial": 100, "haproxy": "haproxy-2"}]


def test_the_status_table_names_the_haproxy_of_each_skew_and_a_pin_held_by_one_only(tmp_path):
    from veza_canary.status import collect, table

    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    lb2.weights[CANARY] = 25
    lb2.maps[MAP] = {"team-veza": CANARY}
    text = "\n".join(table(collect(fleet, sli=False)))
    assert f"{CANARY}: weight 25, configured 100 on HAProxy haproxy-2" in text
    assert f"pin team-veza -> {CANARY} (map {MAP}, only on haproxy-2)" in text


def test_restore_puts_back_a_weight_and_clears_pins_left_on_the_second_haproxy_only(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    lb2.weights["backend-api-3"] = 7
    lb2.maps[MAP] = {"team-veza": CANARY}
    found = traffic.restore_all(fleet.haproxy, MAP)
    assert [w.haproxy for w in found.weights] == ["haproxy-2"] and found.pins == {"team-veza": CANARY}
    assert lb2.weights == sim.weights == dict.fromkeys(NODES, 100)
    assert lb2.maps[MAP] == sim.maps[MAP] == {}
    assert traffic.traffic_skew(fleet.haproxy, MAP).clean


def test_pins_lost_on_the_second_haproxy_only_are_put_back_there(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    pins = traffic.PinMap(fleet.haproxy, MAP)
    assert pins.ensure(["team-veza"], CANARY) == ["team-veza"]
    lb2.reload_haproxy()
    assert pins.pins() == {"team-veza": CANARY}, "the union: still pinned on the first"
    assert pins.ensure(["team-veza"], CANARY) == ["team-veza"]
    assert sim.maps[MAP] == lb2.maps[MAP] == {"team-veza": CANARY}


def test_a_pin_map_missing_on_the_second_haproxy_is_refused_naming_it(tmp_path):
    from veza_canary.errors import PreflightError

    fleet, sim, lb2 = make(None, tmp_path)
    lb2.maps = {}
    with pytest.raises(PreflightError, match="HAProxy haproxy-2 has no map"):
        traffic.PinMap(fleet.haproxy, MAP).preflight()


@pytest.mark.parametrize("algo,hash_type", [("static-rr", ""), ("source", "map-based")])
def test_a_static_algorithm_on_the_second_haproxy_refuses_the_ramp_before_any_change(tmp_path, algo, hash_type):
    from veza_canary.errors import PreflightError

    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    lb2.own(algo=algo, hash_type=hash_type)
    with pytest.raises(PreflightError, match="on HAProxy haproxy-2") as e:
        traffic.check_ramp(fleet.haproxy, CANARY, (25, 100))
    assert algo in str(e.value)
    assert lb2.weights == sim.weights == dict.fromkeys(NODES, 100)


def test_a_ramp_on_two_dynamic_haproxy_is_planned(tmp_path):
    fleet, sim, lb2 = make(None, tmp_path)
    at_100(sim, lb2)
    lb2.own(algo="leastconn")
    plan = traffic.check_ramp(fleet.haproxy, CANARY, (25, 100))
    assert plan.algo == "haproxy: roundrobin, haproxy-2: leastconn" and plan.weights == (25, 100)


def test_a_ramp_deploy_re_applies_a_weight_the_second_haproxy_lost_mid_step(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path, canary_steps="25,100", canary_step_hold=120.0)
    at_100(sim, lb2)
    seen: list[tuple[int, int]] = []

    def reload_second_once(e: str) -> None:
        if e == "prom" and CANARY in sim.weights:
            seen.append((sim.weights[CANARY], lb2.weights[CANARY]))
            if seen.count((25, 25)) == 2:
                lb2.reload_haproxy()

    sim.observers.append(reload_second_once)
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    assert [e["reason"] for e in rep.events if e["kind"] == "weight_reapplied"][0].count("haproxy-2") == 2
    after = seen[seen.index((25, 100)):]  # from the reload of the second HAProxy on
    assert next(w for w in after if w != (25, 100)) == (25, 25), "re-applied on the second, still at the 25 % step"
    assert sim.weights == lb2.weights == dict.fromkeys(NODES, 100), "the configured weight on both at the end"


def test_the_next_run_restores_a_weight_left_skewed_on_the_second_haproxy_only(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path)
    at_100(sim, lb2)
    lb2.weights["backend-api-1"] = 5  # a SIGKILLed ramp (or a hand) left it there, on the second HAProxy only
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    assert sim.weights == lb2.weights == dict.fromkeys(NODES, 100)
    assert [e["node"] for e in rep.events if e["kind"] == "weight_restored"] == ["backend-api-1"]


def test_the_next_run_clears_pins_left_on_the_second_haproxy_only(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path, canary_pins="team-veza", canary_pin_hold=60.0)
    at_100(sim, lb2)
    lb2.maps[MAP] = {"tenant-42": CANARY}
    cleared: list[dict] = []
    sim.observers.append(lambda e: cleared.append(dict(lb2.maps[MAP])) if e == "prom" else None)
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    pinned = [m for m in cleared if "team-veza" in m]
    assert pinned and not any("tenant-42" in m for m in pinned), "cleared under the lock, before the pinned stage"
    assert lb2.maps[MAP] == sim.maps[MAP] == {}


# --- whole deploys ------------------------------------------------------------------------------------------------


def test_a_deploy_over_two_haproxy_drains_on_both_and_ends_with_everything_in_rotation(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path)
    rep, err = run(fleet, tmp_path)
    assert err is None, err
    assert {sim.nodes[n].running_sha for n in NODES} == {sha(NEW)}
    assert drains(sim.commands) == drains(lb2.commands) == ["backend-api-2", "backend-api-1", "backend-api-3"]
    assert sim.admin == lb2.admin == dict.fromkeys(NODES, 0)
    assert not any(p.startswith("/var/lib/veza-canary/lock") for p in sim.state_files), "lock released"


def test_the_second_haproxy_dying_mid_roll_stops_the_roll_with_the_peer_drained(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path)
    sim.hooks["restart:backend-api-1"] = lambda _s: setattr(lb2, "haproxy_down", True)
    rep, err = run(fleet, tmp_path)
    assert isinstance(err, PeerRollFailed) and err.exit_code == ExitCode.PEER_FAILED
    assert "haproxy-2" in str(err) and "backend-api-1 left DRAINED" in str(err)
    # The documented end state: canary done and in rotation; the failed peer on the new binary, drained on the
    # HAProxy that answers (and still drained on the dead one, which never got its "ready"); the rest untouched.
    assert sim.nodes["backend-api-2"].running_sha == sha(NEW) and sim.admin["backend-api-2"] == 0
    assert sim.nodes["backend-api-1"].running_sha == sha(NEW)
    assert sim.admin["backend-api-1"] == ADMF_FDRAIN and lb2.admin["backend-api-1"] == ADMF_FDRAIN
    assert sim.nodes["backend-api-3"].running_sha == sha(OLD) and sim.nodes["backend-api-3"].restarts == 0
    assert sim.admin["backend-api-3"] == 0
    assert "haproxy-2" in rep.final_state["haproxy_error"]
    assert not any(p.startswith("/var/lib/veza-canary/lock") for p in sim.state_files), "lock released"


def test_the_second_haproxy_dying_during_the_canary_leaves_the_canary_drained(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path)
    sim.hooks["restart:backend-api-2"] = lambda _s: setattr(lb2, "haproxy_down", True)
    rep, err = run(fleet, tmp_path)
    # The canary cannot be rolled back without draining it on every HAProxy: it stays out of rotation on the
    # new binary (drained on both: the dead one never got its "ready"), and the peers are untouched.
    assert isinstance(err, RollbackFailed) and err.exit_code == ExitCode.ROLLBACK_FAILED
    assert "haproxy-2" in str(err) and "DRAINED" in str(err)
    assert sim.admin["backend-api-2"] == ADMF_FDRAIN and lb2.admin["backend-api-2"] == ADMF_FDRAIN
    assert all(sim.nodes[p].restarts == 0 and sim.admin[p] == 0 for p in ("backend-api-1", "backend-api-3"))


def test_the_first_haproxy_unreachable_at_the_start_refuses_before_any_change(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path)
    sim.haproxy_down = True  # the first HAProxy: the one with the lock
    rep, err = run(fleet, tmp_path)
    assert err is not None and err.exit_code == ExitCode.PREFLIGHT and "HAProxy haproxy:" in str(err)
    assert all(sim.nodes[n].restarts == 0 for n in NODES) and drains(lb2.commands) == []


def test_the_second_haproxy_dying_during_the_watch_stops_before_the_first_peer(artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path)
    sim.hooks["prom_query"] = lambda _s: setattr(lb2, "haproxy_down", sim.nodes["backend-api-2"].restarts > 0)
    rep, err = run(fleet, tmp_path)
    # The watch judges Prometheus (an unreadable HAProxy is logged, not a verdict); the first peer's drain
    # cannot be applied everywhere, so the roll stops there: canary done and in rotation, peers untouched.
    assert isinstance(err, PeerRollFailed) and "haproxy-2" in str(err)
    assert sim.nodes["backend-api-2"].running_sha == sha(NEW) and sim.admin["backend-api-2"] == 0
    assert all(sim.nodes[p].restarts == 0 for p in ("backend-api-1", "backend-api-3"))
    assert sim.admin["backend-api-1"] == 0 and sim.admin["backend-api-3"] == 0


def test_the_second_haproxy_dying_during_the_canary_drain_leaves_the_untouched_canary_out_of_rotation(
        artifact, tmp_path):
    fleet, sim, lb2 = make(artifact, tmp_path, drain_timeout=5.0)
    seen: list[str] = []

    def observe(event: str) -> None:
        if event == "done:haproxy:set server api_pool/backend-api-2 state drain":
            seen.append(event)
            if len(seen) == 2:  # the second HAProxy has the drain, then goes away
                lb2.haproxy_down = True

    sim.observers.append(observe)
    rep, err = run(fleet, tmp_path)
    # The drain cannot be confirmed on every HAProxy (drain timeout); the canary was never changed and is put
    # back: ready on the HAProxy that answers, still drained on the lost one; the re-enable is reported failed.
    assert isinstance(err, RollbackFailed) and err.exit_code == ExitCode.ROLLBACK_FAILED
    assert "could not be re-enabled" in str(err) and "haproxy-2" in str(err)
    assert sim.nodes["backend-api-2"].running_sha == sha(OLD) and sim.nodes["backend-api-2"].restarts == 0
    assert sim.admin["backend-api-2"] == 0 and lb2.admin["backend-api-2"] == ADMF_FDRAIN


# --- the lab's second HAProxy (`lab up --lbs 2`) ---------------------------------------------------------------


def test_the_lab_default_has_one_haproxy_and_lab_env_no_list():
    from veza_canary.lab import LabConfig
    from veza_canary.lab.lifecycle import env

    cfg = LabConfig()
    assert cfg.haproxies == ("haproxy",) and cfg.containers[-2:] == ("haproxy", "prom")
    assert "HAPROXY_CONTAINERS" not in env(cfg)


def test_a_two_haproxy_lab_has_haproxy_2_at_the_next_free_address_and_exports_the_list():
    from veza_canary.lab import LabConfig
    from veza_canary.lab.lifecycle import env
    from veza_canary.settings import load_settings

    cfg = LabConfig.with_nodes(3, lbs=2)
    assert cfg.haproxies == ("haproxy", "haproxy-2")
    ips = [cfg.ip_of(n) for n in cfg.containers]
    assert len(set(ips)) == len(ips) and cfg.ip_of("haproxy-2") == "10.213.77.12"
    assert LabConfig.from_dict(cfg.to_dict()) == cfg
    assert LabConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "lbs"}).lbs == 1  # older state
    s = load_settings({}, env(cfg), None, config={})
    assert s.haproxy.lbs == ("haproxy", "haproxy-2")


def test_the_lab_refuses_too_many_haproxy():
    from veza_canary.lab import LabConfig, LabError

    with pytest.raises(LabError):
        LabConfig(lbs=4)
    with pytest.raises(LabError):
        LabConfig(lbs=0)
