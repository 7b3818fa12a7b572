"""The weighted ramp and the pinned stage (veza_canary/traffic.py) against SimHAProxy and canned 2.6 replies."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest

from tests.fakes import SimFleet, SimHAProxy
from tests.settings_helper import make_settings
from veza_canary import traffic
from veza_canary.errors import HAProxyError, PreflightError
from veza_canary.haproxy import AdminSocket, HAProxy
from veza_canary.prometheus import Prometheus

NODES = ["backend-api-1", "backend-api-2", "backend-api-3"]
CANARY = "backend-api-2"
MAP = "/etc/haproxy/canary-pin.map"


@pytest.fixture
def sim() -> SimFleet:
    sim = SimFleet(NODES)
    sim.weights = dict.fromkeys(NODES, 100)
    sim.initial_weights = dict.fromkeys(NODES, 100)
    return sim


@pytest.fixture
def h(sim: SimFleet) -> HAProxy:
    return HAProxy(SimHAProxy(sim), "api_pool")


def haproxy_commands(sim: SimFleet) -> list[str]:
    return [c for where, c in sim.commands if where == "haproxy"]


def writes(sim: SimFleet) -> list[str]:
    return [c for c in haproxy_commands(sim) if not c.startswith(("show ", "get "))]


# --- replies measured on HAProxy 2.6.12 ------------------------------------------------------------------------

SERVERS_STATE = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port\n"
    "4 api_pool 1 backend-api-1 10.213.77.101 2 0 100 1 2 15 3 3 6 0 0 0 - 8080 - 0 0 - - 0\n"
    "4 api_pool 2 backend-api-2 10.213.77.102 2 0 25 100 3 15 3 3 6 0 0 0 - 8080 - 0 0 - - 0\n\n"
)


def test_weights_are_read_from_show_servers_state_in_one_read():
    w = traffic.parse_weights(SERVERS_STATE, "api_pool")
    assert w["backend-api-1"] == traffic.Weight("backend-api-1", 100, 1)
    assert w["backend-api-2"].current == 25 and w["backend-api-2"].initial == 100
    assert w["backend-api-2"].skewed and w["backend-api-2"].percent == 25.0


def test_weights_error_reply_is_an_haproxy_error():
    with pytest.raises(HAProxyError, match="Can't find backend"):
        traffic.parse_weights("Can't find backend.\n", "api_pool")


def test_backend_algo_is_the_backend_rows_algo_column():
    reply = ("# pxname,svname,status,weight,algo,\napi_pool,backend-api-1,UP,100,,\n"
             "api_pool,BACKEND,UP,300,static-rr,\n\n")
    assert traffic.parse_backend_algo(reply, "api_pool") == "static-rr"
    with pytest.raises(HAProxyError, match="no backend"):
        traffic.parse_backend_algo(reply, "other")
    with pytest.raises(HAProxyError, match="no algo column"):
        traffic.parse_backend_algo("# pxname,svname,status\napi_pool,BACKEND,UP\n", "api_pool")


def test_show_info_gives_the_answering_process():
    reply = "Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 8749\nUptime_sec: 4\nStart_time_sec: 1796530528\n\n"
    assert traffic.parse_info(reply) == traffic.RuntimeMarker(8749, 1796530528)
    with pytest.raises(HAProxyError):
        traffic.parse_info("Unknown command.\n")


def test_show_map_lists_loaded_maps_and_whether_a_rule_reads_them():
    reply = ("# id (file) description\n0 (/etc/haproxy/canary-pin.map) pattern loaded from file "
             "'/etc/haproxy/canary-pin.map' used by map at file '/etc/haproxy/haproxy.cfg' line 31. "
             "curr_ver=0 next_ver=0 entry_cnt=0\n\n")
    [m] = traffic.parse_map_list(reply)
    assert m.path == MAP and m.used
    assert traffic.parse_map_entries("0x7fc8400465b0 team s2\n0x7fc8400465c0 tenant-42 s2\n\n") == {
        "team": "s2", "tenant-42": "s2"}


def test_step_weight_rounds_down_like_haproxy():
    assert [traffic.step_weight(100, p) for p in (5, 25, 100)] == [5, 25, 100]
    assert traffic.step_weight(1, 25) == 0 and traffic.step_weight(3, 50) == 1


def test_expected_share_is_weight_over_the_sum_in_rotation():
    assert traffic.expected_share({"a": 100, "b": 25, "c": 100}, "b") == pytest.approx(25 / 225)
    assert traffic.expected_share({"a": 0}, "a") is None


# --- set / read / restore ------------------------------------------------------------------------------------------


def test_set_weight_sends_a_percentage_and_checks_what_haproxy_set(sim, h):
    w = traffic.set_weight(h, CANARY, 25)
    assert w == traffic.Weight(CANARY, 25, 100) and sim.weights[CANARY] == 25
    assert "set server api_pool/backend-api-2 weight 25%" in haproxy_commands(sim)
    assert traffic.restore_weight(h, CANARY).current == 100


def test_set_weight_refused_by_a_static_backend_is_an_haproxy_error(sim, h):
    sim.algo = "static-rr"
    with pytest.raises(HAProxyError, match="static LB algorithm"):
        traffic.set_weight(h, CANARY, 25)
    assert sim.weights[CANARY] == 100


def test_set_weight_refuses_names_that_would_inject_commands(h):
    with pytest.raises(HAProxyError, match="refusing"):
        traffic.set_weight(h, "x;show info", 25)


# --- check_ramp: refuse before any change ----------------------------------------------------------------------------


def test_a_ramp_on_a_roundrobin_backend_is_planned_with_expected_shares(sim, h):
    plan = traffic.check_ramp(h, CANARY, (5, 25, 100))
    assert plan.weights == (5, 25, 100) and plan.algo == "roundrobin" and not plan.probed
    assert plan.shares[1] == pytest.approx(25 / 225)
    assert writes(sim) == []


def test_expected_shares_leave_out_servers_out_of_rotation(sim, h):
    sim.admin["backend-api-3"] = 0x08  # drained: takes no new requests
    assert traffic.rotation_weights(h) == {"backend-api-1": 100, CANARY: 100}
    assert traffic.check_ramp(h, CANARY, (25, 100)).shares == (pytest.approx(25 / 125), pytest.approx(0.5))


@pytest.mark.parametrize("algo,hash_type", [("static-rr", ""), ("source", "map-based"), ("uri", "map-based")])
def test_a_ramp_on_a_static_backend_is_refused_and_nothing_changes(sim, h, algo, hash_type):
    sim.algo, sim.hash_type = algo, hash_type
    with pytest.raises(PreflightError, match="cannot be ramped"):
        traffic.check_ramp(h, CANARY, (5, 25, 100))
    assert sim.weights == dict.fromkeys(NODES, 100)


def test_a_consistent_hash_backend_is_probed_and_accepted_with_the_weight_unchanged(sim, h):
    sim.algo, sim.hash_type = "source", "consistent"
    plan = traffic.check_ramp(h, CANARY, (5, 25, 100))
    assert plan.probed and sim.weights[CANARY] == 100
    assert "set server api_pool/backend-api-2 weight 101; set server api_pool/backend-api-2 weight 100" in writes(sim)


def test_without_the_probe_an_ambiguous_algorithm_is_refused(sim, h):
    sim.algo, sim.hash_type = "hdr", "consistent"
    with pytest.raises(PreflightError, match="hash-type"):
        traffic.check_ramp(h, CANARY, (5, 100), probe=False)
    assert writes(sim) == []


def test_a_configured_weight_too_coarse_for_a_step_is_refused(sim, h):
    sim.weights, sim.initial_weights = dict.fromkeys(NODES, 1), dict.fromkeys(NODES, 1)  # HAProxy's default
    with pytest.raises(PreflightError, match="weight 0") as exc:
        traffic.check_ramp(h, CANARY, (5, 25, 100))
    assert "weight 100" in (exc.value.hint or "")


def test_no_ramp_needs_nothing_even_on_a_static_backend(sim, h):
    sim.algo = "static-rr"
    assert traffic.check_ramp(h, CANARY, (100,)).weights == (100,)


def test_an_unknown_server_is_refused(h):
    with pytest.raises(PreflightError, match="no server"):
        traffic.check_ramp(h, "backend-api-9", (5, 100))


# --- a reload loses the runtime weight -------------------------------------------------------------------------------


def test_a_reload_mid_step_is_detected_as_a_lost_weight(sim, h):
    traffic.set_weight(h, CANARY, 25)
    marker = traffic.runtime_marker(h)
    assert traffic.check_weight(h, CANARY, 25, since=marker).ok
    sim.reload_haproxy()
    check = traffic.check_weight(h, CANARY, 25, since=marker)
    assert not check.ok and check.lost and check.reloaded and check.weight.current == 100
    assert "reloaded or restarted" in check.reason
    traffic.set_weight(h, CANARY, 25)  # the caller re-applies it (or rolls back)
    assert traffic.check_weight(h, CANARY, 25).ok


def test_with_one_haproxy_the_marker_and_the_weights_name_no_haproxy(sim, h):
    assert traffic.runtime_marker(h) == {"": traffic.RuntimeMarker(sim.haproxy_pid, sim.haproxy_pid)}
    traffic.set_weight(h, CANARY, 25)
    assert traffic.weights_each(h) == {"": traffic.weights(h)}
    assert traffic.traffic_skew(h).weights == (traffic.Weight(CANARY, 25, 100),)
    assert "on HAProxy" not in traffic.judge_weight(traffic.Weight(CANARY, 100, 100), 25).reason


def test_a_weight_changed_by_someone_else_is_not_called_a_reload(sim, h):
    traffic.set_weight(h, CANARY, 25)
    marker = traffic.runtime_marker(h)
    h.set_weight(CANARY, 60)
    check = traffic.check_weight(h, CANARY, 25, since=marker)
    assert not check.ok and not check.lost and "someone else" in check.reason


def test_a_reload_is_detected_without_a_marker_from_the_weight_alone():
    check = traffic.judge_weight(traffic.Weight(CANARY, 100, 100), 5)
    assert check.lost and check.expected == 5


def test_at_the_last_step_a_reload_keeps_the_weight_but_is_still_reported():
    check = traffic.judge_weight(traffic.Weight(CANARY, 100, 100), 100, reloaded=True)
    assert not check.ok and check.reloaded and "other runtime state" in check.reason


def test_a_step_guard_reapplies_a_weight_lost_to_a_reload(sim, h):
    guard = traffic.StepGuard.enter(h, CANARY, 25)
    assert guard.check().ok and guard.reapplied == 0
    sim.reload_haproxy()
    check = guard.check()
    assert check.lost and guard.reapplied == 1 and sim.weights[CANARY] == 25
    assert guard.check().ok  # against the new process


def test_a_step_guard_reports_but_does_not_fight_someone_elses_weight(sim, h):
    guard = traffic.StepGuard.enter(h, CANARY, 5)
    h.set_weight(CANARY, 60)
    check = guard.check()
    assert not check.ok and not check.lost and guard.reapplied == 0 and sim.weights[CANARY] == 60


def test_a_step_guard_without_reapply_leaves_the_decision_to_the_caller(sim, h):
    guard = traffic.StepGuard.enter(h, CANARY, 5, reapply=False)
    sim.reload_haproxy()
    assert guard.check().lost and sim.weights[CANARY] == 100 and guard.reapplied == 0


# --- the measured share ---------------------------------------------------------------------------------------------


def prom_answering(values: dict[str, float | None]) -> tuple[Prometheus, list[str]]:
    """A Prometheus whose answer depends on the node regex in the query (None: an empty vector)."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = parse_qs(request.url.query.decode())["query"][0]
        seen.append(q)
        key = q.split('node=~"', 1)[1].split('"', 1)[0]
        v = values.get(key)
        result = [] if v is None else [{"metric": {}, "value": [0, str(v)]}]
        return httpx.Response(200, content=json.dumps({"status": "success", "data": {
            "resultType": "vector", "result": result}}).encode())

    return Prometheus(httpx.Client(transport=httpx.MockTransport(handler)), "http://prom"), seen


def test_measured_share_is_the_canarys_count_over_the_pools():
    pool = "backend-api-1|backend-api-2|backend-api-3"
    prom, seen = prom_answering({CANARY: 60.0, pool: 540.0})
    template = traffic.share_template(make_settings())
    s = traffic.measured_share(prom, template, canary=CANARY, pool=NODES, window_s=30)
    assert s.share == pytest.approx(60 / 540) and not s.error
    assert seen[0] == ('sum(increase(veza_gin_http_request_duration_seconds_count'
                       '{node=~"backend-api-2",path!="/api/v1/health"}[30s]))')


@pytest.mark.parametrize("values", [{}, {CANARY: 1.0, "p": 0.0}, {CANARY: float("nan")}])
def test_no_requests_or_nan_is_no_share_never_a_number(values):
    values = {("backend-api-1|backend-api-2|backend-api-3" if k == "p" else k): v for k, v in values.items()}
    prom, _ = prom_answering(values)
    s = traffic.measured_share(prom, traffic.DEFAULT_SHARE_TEMPLATE, canary=CANARY, pool=NODES, window_s=30)
    assert s.share is None


def test_prometheus_down_is_an_error_in_the_share_not_an_exception():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    prom = Prometheus(httpx.Client(transport=httpx.MockTransport(down)), "http://prom")
    s = traffic.measured_share(prom, traffic.DEFAULT_SHARE_TEMPLATE, canary=CANARY, pool=NODES, window_s=30)
    assert s.share is None and "unreachable" in s.error


def test_node_names_are_escaped_in_the_regex():
    q, pool = traffic.share_queries(traffic.DEFAULT_SHARE_TEMPLATE, "a.b", ["a.b", "c"], 10.2)
    assert 'node=~"a\\\\.b"' in q and 'node=~"a\\\\.b|c"' in pool and "[11s]" in q


# --- pins ------------------------------------------------------------------------------------------------------------


def test_pins_are_added_listed_removed_and_cleared_idempotently(sim, h):
    pm = traffic.PinMap(h, MAP)
    assert pm.preflight().used
    pm.add("team-veza", CANARY)
    pm.add("tenant-42", CANARY)
    pm.add("tenant-42", CANARY)  # again: replaced, not duplicated
    assert pm.pins() == {"team-veza": CANARY, "tenant-42": CANARY}
    assert pm.remove("team-veza") and not pm.remove("team-veza")
    assert pm.clear() == {"tenant-42": CANARY} and pm.clear() == {}
    assert sim.maps[MAP] == {}


def test_pins_lost_to_a_reload_are_put_back(sim, h):
    pm = traffic.PinMap(h, MAP)
    assert pm.ensure(["team-veza", "tenant-42"], CANARY) == ["team-veza", "tenant-42"]
    assert pm.ensure(["team-veza", "tenant-42"], CANARY) == []
    sim.reload_haproxy()
    assert pm.ensure(["team-veza", "tenant-42"], CANARY) == ["team-veza", "tenant-42"]
    assert sim.maps[MAP] == {"team-veza": CANARY, "tenant-42": CANARY}


def test_preflight_without_the_map_says_what_to_add(sim, h):
    sim.maps = {}
    with pytest.raises(PreflightError, match="no map /etc/haproxy/canary-pin.map loaded") as exc:
        traffic.PinMap(h, MAP).preflight()
    assert "use-server" in (exc.value.hint or "")


class LoadedNotUsed(AdminSocket):
    def send(self, command: str) -> str:
        return (f"# id (file) description\n0 ({MAP}) pattern loaded from file '{MAP}' curr_ver=0 next_ver=0 "
                "entry_cnt=0\n\n")


def test_preflight_with_a_map_no_rule_reads_is_refused():
    with pytest.raises(PreflightError, match="no rule reads it"):
        traffic.PinMap(HAProxy(LoadedNotUsed(), "api_pool"), MAP).preflight()


@pytest.mark.parametrize("key", ["a b", "x;show info", "", "k\n"])
def test_pin_keys_that_would_break_the_command_line_are_refused(h, key):
    with pytest.raises(HAProxyError, match="refusing"):
        traffic.PinMap(h, MAP).add(key, CANARY)


def test_a_map_path_that_is_not_a_plain_absolute_path_is_refused(h):
    for path in ("relative.map", "/etc/haproxy/x map", "/etc/../x.map"):
        with pytest.raises(HAProxyError):
            traffic.PinMap(h, path)


# --- the safety invariant -------------------------------------------------------------------------------------------


def test_skew_lists_weights_off_their_configured_value_and_pins(sim, h):
    assert traffic.traffic_skew(h, MAP).clean
    traffic.set_weight(h, CANARY, 5)
    traffic.PinMap(h, MAP).add("team-veza", CANARY)
    skew = traffic.traffic_skew(h, MAP)
    assert not skew.clean and [w.server for w in skew.weights] == [CANARY]
    assert skew.lines() == [f"{CANARY}: weight 5, configured 100", f"pin team-veza -> {CANARY} (map {MAP})"]
    assert skew.to_dict()["clean"] is False


def test_restore_all_puts_everything_back_and_is_idempotent(sim, h):
    traffic.set_weight(h, CANARY, 5)
    h.set_weight("backend-api-3", 7)
    traffic.PinMap(h, MAP).add("team-veza", CANARY)
    found = traffic.restore_all(h, MAP)
    assert {w.server for w in found.weights} == {CANARY, "backend-api-3"} and found.pins == {"team-veza": CANARY}
    assert sim.weights == dict.fromkeys(NODES, 100) and sim.maps[MAP] == {}
    before = len(writes(sim))
    assert traffic.restore_all(h, MAP).clean and len(writes(sim)) == before


def test_skew_without_the_map_loaded_still_shows_weights(sim, h):
    sim.maps = {}
    traffic.set_weight(h, CANARY, 25)
    skew = traffic.traffic_skew(h, MAP)
    assert skew.weights and skew.pins == {} and "Unknown map" in skew.pins_unknown
    assert traffic.restore_all(h, MAP).weights and sim.weights[CANARY] == 100


# --- settings --------------------------------------------------------------------------------------------------------


def test_the_default_is_todays_single_step():
    s = make_settings()
    assert s.traffic.steps == (100,) and not s.traffic.ramped and s.traffic.pins is None


def test_steps_parse_from_a_list_or_a_string():
    s = make_settings(canary_steps="5, 25,100", canary_step_hold="5m", canary_pins="team-veza tenant:42")
    assert s.traffic.steps == (5, 25, 100) and s.traffic.ramped and s.traffic.step_hold == 300.0
    assert s.traffic.pins == ("team-veza", "tenant:42")
    assert make_settings(canary_steps=[5, 50, 100]).traffic.steps == (5, 50, 100)


@pytest.mark.parametrize("steps,why", [("5,25", "last step must be 100"), ("25,5,100", "increase"),
                                       ("0,100", "between 1 and 100"), ("5,x,100", "not an integer")])
def test_bad_steps_are_refused_naming_the_knob(steps, why):
    from veza_canary.errors import ConfigError

    with pytest.raises(ConfigError, match=why) as exc:
        make_settings(canary_steps=steps)
    assert exc.value.knob == "--canary-steps"


def test_a_short_step_hold_needs_allow_short_window():
    from veza_canary.errors import ConfigError

    with pytest.raises(ConfigError, match="300s minimum"):
        make_settings(canary_step_hold="10s")
    assert make_settings(canary_step_hold="10s", allow_short_window=True).traffic.step_hold == 10.0


def test_the_plan_names_each_stage_and_its_commands():
    s = make_settings(canary_steps="5,25,100", canary_pins="team-veza", canary_step_hold="10m", canary_pin_hold="5m")
    lines = traffic.plan_lines(s)
    assert lines[1] == "before ready: set server api_pool/backend-api-2 weight 0% (the canary is still drained)"
    assert any(ln.startswith("pinned stage, 300s: add map /etc/haproxy/canary-pin.map KEY") for ln in lines)
    assert "step 1/3: set server api_pool/backend-api-2 weight 5%, held and judged for 600s" in lines
    assert lines[-2].startswith("step 3/3: set server api_pool/backend-api-2 weight 100%, held and judged for SLI")
    assert traffic.plan_lines(make_settings()) == [
        "canary backend-api-2 takes its full configured weight at once (CANARY_STEPS=100)"]
