"""The SLI verdict table and the watch policy (fake clock, no sleeping)."""

from __future__ import annotations

import math

import pytest

from veza_canary.clock import FakeClock
from veza_canary.sli import Queries, Reading, Sample, Thresholds, Verdict, WatchPolicy, judge, watch

T = Thresholds(p95_s=0.5, err_ratio=0.005, min_requests=5, rate_window_s=60)
R = Reading.of
NONE = Reading()  # empty vector


@pytest.mark.parametrize("p95,errors,total,verdict", [
    # pass
    (R(0.1), R(0.0), R(10.0), Verdict.PASS),
    (R(0.1), NONE, R(10.0), Verdict.PASS),  # empty 5xx vector with traffic = zero errors
    (R(0.499), R(0.04), R(10.0), Verdict.PASS),  # 0.4% < 0.5%
    # fail
    (R(0.5), R(0.0), R(10.0), Verdict.FAIL),  # at the threshold is red (runbook: p95 < threshold)
    (R(0.9), R(0.0), R(10.0), Verdict.FAIL),
    (R(0.1), R(0.05), R(10.0), Verdict.FAIL),  # exactly 0.5%
    (R(0.1), R(1.0), R(10.0), Verdict.FAIL),
    # no data
    (R(math.nan), R(0.0), R(10.0), Verdict.NODATA),
    (R(math.inf), R(0.0), R(10.0), Verdict.NODATA),
    (NONE, R(0.0), R(10.0), Verdict.NODATA),
    (R(math.nan), R(math.nan), R(math.nan), Verdict.NODATA),  # zero traffic
    (R(0.1), R(0.0), NONE, Verdict.NODATA),
    (R(0.1), R(0.0), R(0.0), Verdict.NODATA),
    (R(0.1), R(0.0), R(0.05), Verdict.NODATA),  # 3 requests in the window < 5
    (R(0.1), R(math.nan), R(10.0), Verdict.NODATA),
    # error
    (Reading.failed("connection refused"), R(0.0), R(10.0), Verdict.ERROR),
    (R(0.1), Reading.failed("HTTP 500"), R(10.0), Verdict.ERROR),
    (R(0.1), R(0.0), Reading.failed("timeout"), Verdict.ERROR),
    (R(0.1, 0.2), R(0.0), R(10.0), Verdict.ERROR),  # more than one series
])
def test_verdict_table(p95, errors, total, verdict):
    assert judge(p95, errors, total, T).verdict is verdict


def test_a_failing_sample_says_which_threshold_and_value():
    s = judge(R(0.8), R(1.0), R(10.0), T)
    assert "p95 0.800s >= 0.5s" in s.reason and "5xx ratio 0.1000 >= 0.005" in s.reason


def _probes(*verdicts):
    it = iter(verdicts)
    return lambda at: Sample(next(it), "x", at=at)


POLICY = WatchPolicy(window_s=100, interval_s=10, max_nodata=3, max_errors=3)


def test_watch_passes_after_the_window_with_one_probe_per_interval():
    clock = FakeClock()
    r = watch(_probes(*[Verdict.PASS] * 10), POLICY, clock)
    assert r.ok and len(r.samples) == 10
    assert clock.slept == [10.0] * 10


def test_watch_stops_at_the_first_red_probe():
    r = watch(_probes(Verdict.PASS, Verdict.FAIL, Verdict.PASS), POLICY, FakeClock())
    assert not r.ok and len(r.samples) == 2 and "breach" in r.reason


@pytest.mark.parametrize("v,word", [(Verdict.NODATA, "no-data"), (Verdict.ERROR, "Prometheus errors")])
def test_watch_tolerates_up_to_the_limit_then_rolls_back(v, word):
    r = watch(_probes(v, v, v, Verdict.PASS, v, v, v, v), POLICY, FakeClock())
    assert not r.ok and len(r.samples) == 8 and word in r.reason


def test_watch_never_ends_green_on_a_non_pass_probe():
    verdicts = [Verdict.PASS] * 9 + [Verdict.NODATA, Verdict.NODATA, Verdict.PASS]
    clock = FakeClock()
    r = watch(_probes(*verdicts), POLICY, clock)
    assert r.ok and len(r.samples) == 12 and r.samples[-1].verdict is Verdict.PASS


def test_watch_with_all_no_data_is_never_green():
    r = watch(_probes(*[Verdict.NODATA] * 50), POLICY, FakeClock())
    assert not r.ok and len(r.samples) == 4


def test_queries_scope_to_the_canary_and_exclude_health_checks():
    q = Queries.build(selector='node="{node}"', node="backend-api-2", health_path="/api/v1/health", rate_window="1m")
    assert 'node="backend-api-2",path!="/api/v1/health"' in q.p95
    assert q.errors.endswith("or vector(0)") and 'status=~"5.."' in q.errors
    assert "[1m]" in q.total


def test_fleet_wide_selector_leaves_only_the_health_filter():
    q = Queries.build(selector="", node="x", health_path="/h", rate_window="10s")
    assert '{path!="/h"}' in q.total


def test_queries_take_the_metric_error_and_exclusion_matchers_from_settings():
    from tests.settings_helper import make_settings

    s = make_settings(sli_metric="http_server_duration_seconds", sli_error_selector='code=~"5.."',
                      sli_exclude='route!="/healthz"')
    q = Queries.from_settings(s, "n1")
    assert q.total == 'sum(rate(http_server_duration_seconds_count{node="n1",route!="/healthz"}[60s]))'
    assert q.errors == ('sum(rate(http_server_duration_seconds_count{node="n1",route!="/healthz",code=~"5.."}'
                        '[60s])) or vector(0)')
    assert q.p95.startswith("histogram_quantile(0.95, sum by (le) (rate(http_server_duration_seconds_bucket{")
