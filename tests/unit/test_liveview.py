"""The live view: a rendered frame (snapshot, fake clock), the TTY view, and one JSON line per probe off a TTY."""

from __future__ import annotations

import io
import json
import time

import pytest
import structlog
from rich.console import Console
from typer.testing import CliRunner

from tests.fakes import Behaviour, SimFleet, sha, sim_fleet
from tests.settings_helper import make_settings
from veza_canary.cli import build_app
from veza_canary.clock import FakeClock
from veza_canary.health import Poll, wait_drained, wait_node_healthy
from veza_canary.liveview import LiveView, LogObserver, ViewState, observing, render, sparkline
from veza_canary.settings import KNOBS
from veza_canary.sli import Sample, Verdict, WatchPolicy, WatchResult

NODES = ["backend-api-2", "backend-api-1", "backend-api-3"]


@pytest.fixture(autouse=True)
def _restore_structlog():
    """CliRunner runs the root callback, which points structlog at a stream that closes after the call."""
    cfg = structlog.get_config()
    yield
    structlog.configure(**cfg)


def text_of(renderable, width: int = 80) -> str:
    c = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    c.print(renderable)
    return c.export_text()


def feed_a_deploy(view) -> FakeClock:
    """A drain poll, a failing health poll, then an SLI watch with four probes (one no-data)."""
    clock = view.clock
    clock.advance(1.0)
    view.on_poll(Poll("backend-api-2 drained (0 sessions)", "backend-api-2", 3, 1.0, 120.0, False,
                      {"status": "DRAIN", "scur": 2, "qcur": 0, "weight": 0, "check_status": "L7OK",
                       "admin": "drain", "quiet_polls": 0}))
    view.on_poll(Poll("backend-api-2 health 200", "backend-api-2", 1, 0.0, 60.0, False,
                      {"ok": False, "http_status": None, "latency_ms": 3.0, "error": "curl: (7) Failed to connect"}))
    view.on_watch(WatchPolicy(300, 30, 3, 3), "backend-api-2")
    for i, (p95, e, v) in enumerate([(0.05, 0.0, Verdict.PASS), (0.12, 0.001, Verdict.PASS),
                                     (None, None, Verdict.NODATA), (0.31, 0.002, Verdict.PASS)]):
        clock.advance(30)
        reason = "ok" if v is Verdict.PASS else "only 2.0 requests in the rate window (< 5)"
        view.on_sample(Sample(v, reason, p95, e, 10.0, at=30.0 * (i + 1)), WatchResult(False, ""))
    clock.advance(12)
    return clock


NODE_STATES = {"backend-api-2": {"status": "UP", "admin": "ready", "scur": 1},
               "backend-api-1": {"status": "UP", "admin": "ready", "scur": 4},
               "backend-api-3": {"status": "DOWN", "admin": "ready", "scur": 0}}

SNAPSHOT = """\
╭─ veza-canary deploy ──────────────────────────────────────╮
│ SLI watch on backend-api-2: every 30s for 5m00s           │
│ ━━━━━━━━━━━━━                  2m12s / 5m00s  2m48s left  │
│ p95        0.310s  < 0.5s   ▂▃·▅                          │
│ 5xx ratio  0.0020  < 0.005  ▁▂·▄                          │
│ last probe: pass  10.0 req/s  (4 probes, next in 18s)     │
│ no-data 0/3  errors 0/3  (in a row, against their limits) │
│ nodes:                                                    │
│ backend-api-3  DOWN 0 sess                                │
│ backend-api-1  UP 4 sess                                  │
│ backend-api-2  UP 1 sess health no answer                 │
╰───────────────────────────────────────────────────────────╯
"""


def test_a_rendered_frame_matches_the_snapshot():
    view = LiveView(make_settings(), title="deploy", clock=FakeClock(1000.0), states=lambda: NODE_STATES)
    view._ensure_started = lambda: None  # render frames only; no terminal here
    feed_a_deploy(view)
    assert text_of(view.frame()) == SNAPSHOT


def test_a_wait_frame_shows_elapsed_remaining_and_the_last_observation():
    st = ViewState.for_settings(make_settings(), "haproxy drain backend-api-1")
    st.apply_poll(Poll("backend-api-1 drained (0 sessions)", "backend-api-1", 4, 30.0, 120.0, False,
                       {"status": "DRAIN", "scur": 3, "qcur": 1, "admin": "drain", "quiet_polls": 0,
                        "check_status": "L7OK"}), now=1030.0)
    frame = text_of(render(st, now=1045.0))
    assert "waiting for: backend-api-1 drained (0 sessions)  (poll 4)" in frame
    assert "45s / 2m00s  1m15s left" in frame
    assert "last: DRAIN, admin drain, 3 sessions, 1 queued, quiet polls 0/2, check L7OK" in frame


def test_consecutive_no_data_and_errors_count_against_their_limits():
    st = ViewState.for_settings(make_settings(sli_max_nodata=3, sli_max_errors=2), "x")
    st.start_watch(WatchPolicy(300, 30, 3, 2), "backend-api-2", now=0.0)
    for i, v in enumerate([Verdict.NODATA, Verdict.NODATA, Verdict.ERROR]):
        st.apply_sample(Sample(v, "why"), WatchResult(False, ""), now=30.0 * (i + 1))
    assert (st.watch.nodata, st.watch.errors) == (0, 1)
    assert "no-data 0/3  errors 1/2" in text_of(render(st, now=95.0))


@pytest.mark.parametrize("values,top,expected", [
    ([0.0, 0.25, 0.5], 0.5, "▁▅█"),
    ([0.0, 1.0], 0.5, "▁█"),  # above the threshold: scaled to the largest value
    ([None, float("nan"), 0.5], 0.5, "··█"),
    ([], 0.5, ""),
])
def test_sparkline(values, top, expected):
    assert sparkline(values, top) == expected


def test_the_tty_view_draws_on_the_terminal_and_replaces_per_poll_log_lines():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    before = structlog.get_config()
    log = structlog.get_logger("test")
    with observing(make_settings(), title="haproxy drain", tty=True, console=console,
                   clock=FakeClock()) as obs:
        assert isinstance(obs, LiveView)
        obs.on_poll(Poll("backend-api-1 drained (0 sessions)", "backend-api-1", 1, 0.0, 120.0, False,
                         {"status": "DRAIN", "scur": 1, "qcur": 0, "admin": "drain", "quiet_polls": 0}))
        log.info("drain.poll", node="backend-api-1")  # shown by the view instead
        log.info("rollback.start", node="backend-api-1")  # goes above the view
    out = buf.getvalue()
    assert "waiting for: backend-api-1 drained (0 sessions)" in out
    assert "rollback.start" in out and "drain.poll" not in out
    assert structlog.get_config()["processors"] == before["processors"], "logging restored after the view"


def test_off_a_tty_the_observer_logs_one_line_per_probe_with_the_view_fields():
    obs = LogObserver(make_settings(), title="sli watch", states=lambda: NODE_STATES, clock=FakeClock(0.0))
    with structlog.testing.capture_logs() as logs:
        obs.on_watch(WatchPolicy(90, 30, 3, 3), "backend-api-2")
        for i in range(3):
            obs.clock.advance(30)
            obs.on_sample(Sample(Verdict.PASS, "ok", 0.05, 0.0, 10.0, at=30.0 * (i + 1)), WatchResult(False, ""))
    lines = [e for e in logs if e["event"] == "sli.watch"]
    assert len(lines) == 3
    last = lines[-1]
    assert last["elapsed"] == 90.0 and last["remaining"] == 0.0 and last["window"] == 90
    assert (last["p95"], last["p95_threshold"], last["err_ratio"], last["err_threshold"]) == (0.05, 0.5, 0.0, 0.005)
    assert (last["nodata"], last["max_nodata"], last["errors"], last["max_errors"]) == (0, 3, 0, 3)
    assert last["nodes"]["backend-api-3"] == "DOWN 0 sess"


def test_waits_log_one_line_per_poll_and_feed_the_observer():
    s = make_settings(canary_node="backend-api-2", peer_nodes=("backend-api-1",))
    fleet, sim = sim_fleet(s, SimFleet(["backend-api-2", "backend-api-1"]))
    sim.behaviours[sha(b"old-binary")] = Behaviour(health_status=503)
    polls: list[Poll] = []

    def observe(p: Poll) -> None:
        polls.append(p)
        if len(polls) == 3:  # the service comes up after the third poll
            sim.behaviours[sha(b"old-binary")] = Behaviour()

    node = fleet.nodes["backend-api-2"]
    with structlog.testing.capture_logs() as logs:
        wait_node_healthy(node, timeout=60, interval=0.5, clock=fleet.clock, on_poll=observe)
        fleet.haproxy.set_state("backend-api-2", "drain")
        wait_drained(fleet.haproxy, "backend-api-2", timeout=60, interval=0.5, clock=fleet.clock,
                     on_poll=polls.append)
    health = [e for e in logs if e["event"] == "health.poll"]
    assert [e["http_status"] for e in health] == [503, 503, 503, 200]
    assert [e["attempt"] for e in health] == [1, 2, 3, 4] and health[-1]["done"] is True
    # polled at once, then after 0.1, 0.2 and 0.4 s (the gaps double up to POLL_INTERVAL)
    assert [round(e["elapsed"], 3) for e in health] == [0.0, 0.1, 0.3, 0.7]
    assert health[1]["remaining"] == 59.9
    drain = [e for e in logs if e["event"] == "drain.poll"]
    assert [e["quiet_polls"] for e in drain] == [1, 2] and drain[0]["server"] == "backend-api-2"
    assert drain[0]["admin"] == "drain" and drain[0]["scur"] == 0
    assert [p.what for p in polls] == ["backend-api-2 health 200"] * 4 + ["backend-api-2 drained (0 sessions)"] * 2


@pytest.fixture
def cli_fleet(monkeypatch, tmp_path):
    for k in KNOBS:
        monkeypatch.delenv(k.env, raising=False)
    monkeypatch.chdir(tmp_path)
    sim = SimFleet(NODES)
    made = []

    def build(settings):
        fleet, _ = sim_fleet(settings, sim)
        made.append(fleet)
        return fleet

    return build_app(fleet_factory=build)


def test_sli_watch_off_a_tty_writes_json_lines_one_view_line_per_probe(cli_fleet):
    r = CliRunner().invoke(cli_fleet, ["--log-format", "json", "sli", "watch", "--window", "90",
                                 "--sli-probe-interval", "30"])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]  # every line is JSON
    watch = [e for e in events if e["event"] == "sli.watch"]
    probes = [e for e in events if e["event"] == "sli.probe"]
    assert len(watch) == len(probes) == 3
    assert [e["remaining"] for e in watch] == [60.0, 30.0, 0.0]
    assert all(e["verdict"] == "pass" and e["max_nodata"] == 3 and "backend-api-2" in e["nodes"] for e in watch)
    assert "SLI green for 90s" in r.stdout


def test_the_next_wait_marks_a_finished_watch_green_and_up_polls_drop_a_stale_admin_state():
    st = ViewState.for_settings(make_settings(), "deploy")
    st.apply_poll(Poll("backend-api-1 drained (0 sessions)", "backend-api-1", 2, 1.0, 20.0, True,
                       {"status": "DRAIN", "scur": 0, "admin": "drain", "quiet_polls": 2}), now=1.0)
    st.start_watch(WatchPolicy(9, 3, 3, 3), "backend-api-2", now=2.0)
    for i in range(3):
        st.apply_sample(Sample(Verdict.PASS, "ok", 0.01, 0.0, 6.0, at=3.0 * (i + 1)), WatchResult(False, ""),
                        now=2.0 + 3 * (i + 1))
    st.apply_poll(Poll("HAProxy reports backend-api-1 UP", "backend-api-1", 1, 0.0, 30.0, True,
                       {"status": "UP", "scur": 0, "qcur": 0, "weight": 100, "check_status": "L7OK"}), now=12.0)
    frame = text_of(render(st, now=12.5))
    assert "green: SLI passed for 9s (3 probes)" in frame
    assert "(3 probes)" in frame and "next in" not in frame and "probing" not in frame
    assert "backend-api-1  UP 0 sess" in frame and "(drain)" not in frame


def test_ctrl_c_inside_the_view_stops_it_and_restores_logging():
    import threading

    before_threads, before_cfg = threading.active_count(), structlog.get_config()
    console = Console(file=io.StringIO(), force_terminal=True, width=100, color_system=None)
    with pytest.raises(KeyboardInterrupt):
        with observing(make_settings(), title="sli watch", tty=True, console=console, clock=FakeClock()) as obs:
            obs.on_watch(WatchPolicy(300, 30, 3, 3), "backend-api-2")
            assert threading.active_count() == before_threads + 1, "the view refreshes from its own thread"
            raise KeyboardInterrupt
    deadline = time.monotonic() + 2  # rich signals its refresh thread to end but does not join it
    while threading.active_count() > before_threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before_threads
    assert structlog.get_config()["processors"] == before_cfg["processors"]


def test_the_view_shows_canary_and_baseline_side_by_side_with_the_closest_rule():
    from veza_canary.verdict import Sample as JudgeSample
    from veza_canary.verdict import SideStats
    from veza_canary.verdict import Verdict as JV

    def side(req, err, slow):  # noqa: ANN001, ANN202
        return SideStats(requests=req, errors=err, err_ratio=err / req, err_lower=None, err_upper=err / req + 0.001,
                         slow=slow * req, slow_share=slow, p95=0.1, llr_errors=0.0, llr_slow=0.0,
                         recent_requests=req, recent_errors=err, recent_err_ratio=err / req, recent_p95=0.1)

    smp = JudgeSample(JV.WATCH, "nothing shown yet", "watch", at=30.0, canary=side(600, 3, 0.01),
                      baseline=side(1200, 1, 0.01), margins={"slo-errors": 0.42, "baseline-errors": 0.85})
    st = ViewState.for_settings(make_settings(), "deploy")
    lines = [str(x) for x in __import__("veza_canary.liveview", fromlist=["_sides"])._sides(smp, st)]
    assert lines[0].startswith("canary") and "5xx     3 = 0.0050" in lines[0]
    assert lines[1].startswith("baseline") and "1200 req" in lines[1]
    assert "closest rule: baseline-errors at 85%" in lines[2]
