"""The sound judge: its verdict table (pure), the evidence tracker, and the watch loop on a FakeClock."""

from __future__ import annotations

import json
import math

import pytest

from veza_canary.clock import FakeClock
from veza_canary.verdict import (
    Evidence,
    Judge,
    Outcome,
    Policy,
    Side,
    Span,
    Verdict,
    View,
    judge,
    watch,
)

LES = (0.25, 0.5, 1.0, math.inf)
P = Policy(alive_interval_s=0)


def span(n: float, errors: float = 0.0, slow: float = 0.0, secs: float = 60.0) -> Span:
    """``n`` requests, ``errors`` of them 5xx, ``slow`` of them in (0.5 s, 1 s]."""
    return Span(LES, (n - slow, n - slow, n, n), errors, secs)


def view(at: float, c: Span, cr: Span, b: Span | None = None, br: Span | None = None, **kw) -> View:
    return View(at=at, canary=c, canary_recent=cr, baseline=b, baseline_recent=br, **kw)


@pytest.mark.parametrize("v,verdict,rule", [
    # nothing shown yet: keep watching
    (view(600, span(4200, 13), span(420, 1)), Verdict.WATCH, "watch"),
    (view(600, span(4200, 25), span(420, 3)), Verdict.WATCH, "watch"),  # 0.6 %: above, but not shown
    # the window has run and the estimate is under both thresholds
    (view(3600, span(25200, 75, 300), span(420, 1)), Verdict.PASS, "pass"),
    # the window has run, the estimate is not under: watch longer, then unproven
    (view(3600, span(500, 3), span(10, 0)), Verdict.WATCH, "extend"),
    (view(4500, span(500, 3), span(10, 0)), Verdict.FAIL, "unproven"),
    # the SLO, shown on all the evidence (SPRT)
    (view(600, span(4200, 50), span(420, 5)), Verdict.FAIL, "slo-errors"),
    (view(600, span(4200, 0, 420), span(420, 0, 30)), Verdict.FAIL, "slo-latency"),
    # the last rate window alone, far above
    (view(1800, span(100000, 300), span(420, 21)), Verdict.FAIL, "fast-errors"),
    (view(1800, span(100000, 0, 300), span(420, 0, 100)), Verdict.FAIL, "fast-latency"),
    # no traffic in the last window
    (view(600, span(4200, 0), span(3, 0)), Verdict.NODATA, "no-data"),
    (view(600, span(4200, 0), span(0, 0)), Verdict.NODATA, "no-data"),
])
def test_verdict_table_without_a_baseline(v, verdict, rule):
    s = judge(v, P)
    assert (s.verdict, s.rule) == (verdict, rule), s.reason


def test_a_canary_significantly_worse_than_the_baseline_fails_under_the_slo():
    s = judge(view(1200, span(20000, 80), span(1000, 4), span(40000, 0), span(2000, 0)), P)
    assert (s.verdict, s.rule) == (Verdict.FAIL, "baseline-errors")
    assert s.err_limit is not None and s.err_limit < 0.004 < P.err_threshold
    assert "baseline" in s.reason and "0.0040" in s.reason


def test_a_canary_as_good_as_its_baseline_is_not_failed():
    s = judge(view(1200, span(20000, 60), span(1000, 3), span(40000, 120), span(2000, 6)), P)
    assert s.verdict is Verdict.WATCH, s.reason


def test_a_canary_p95_50_percent_above_the_baselines_fails_under_the_slo():
    fast = Span(LES, (9700, 10000, 10000, 10000), 0, 600)  # p95 ~0.13 s
    slower = Span(LES, (8000, 10000, 10000, 10000), 0, 600)  # p95 ~0.31 s: under the 0.5 s SLO
    s = judge(view(600, slower, slower, fast, fast), P)
    assert (s.verdict, s.rule) == (Verdict.FAIL, "baseline-latency"), s.reason
    assert s.p95_limit is not None and s.p95_limit < s.p95 < P.p95_threshold_s


# A fleet-wide incident: the last minute at 5 % on both sides, after 20 minutes at 0.3 %.
INCIDENT = dict(c=span(8400 + 420, 25 + 21), cr=span(420, 21), b=span(16800 + 840, 50 + 42), br=span(840, 42))


def test_a_fleet_wide_incident_holds_instead_of_blaming_the_canary():
    s = judge(view(1230, **INCIDENT), P)
    assert (s.verdict, s.rule) == (Verdict.HOLD, "hold"), s.reason
    assert "fleet-wide incident" in s.reason and s.baseline is not None


def test_the_same_canary_with_a_healthy_baseline_is_blamed():
    s = judge(view(1230, INCIDENT["c"], INCIDENT["cr"], span(17640, 53), span(840, 3)), P)
    assert (s.verdict, s.rule) == (Verdict.FAIL, "fast-errors"), s.reason


def test_a_hold_lasts_until_the_baselines_settle_span_is_under_the_slo():
    still = view(1500, span(8400, 25), span(420, 1), span(16800, 50), span(840, 2), held_since=1230.0,
                 baseline_settle=span(4200, 60))
    over = view(1500, span(8400, 25), span(420, 1), span(16800, 50), span(840, 2), held_since=1230.0,
                baseline_settle=span(4200, 8))
    assert judge(still, P).verdict is Verdict.HOLD
    assert judge(over, P).verdict is Verdict.WATCH


def test_during_a_hold_a_canary_worse_than_the_incident_is_still_blamed():
    v = view(1500, span(8400, 25), span(420, 100), span(16800, 50), span(840, 42), held_since=1230.0,
             baseline_settle=span(4200, 200))
    s = judge(v, P)
    assert (s.verdict, s.rule) == (Verdict.FAIL, "fast-errors"), s.reason


@pytest.mark.parametrize("cr,verdict", [
    (span(120, 1), Verdict.FAIL),  # one error in 120 requests: 0.83 % >= 0.5 %
    (span(120, 0), Verdict.PASS),
    (span(120, 0, 10), Verdict.FAIL),  # p95 in (0.5, 1]
    (span(3, 0), Verdict.NODATA),
])
def test_first_red_is_the_runbooks_rule_on_the_last_rate_window(cr, verdict):
    s = judge(view(600, span(100000, 0), cr), Policy(judge=Judge.FIRST_RED))
    assert s.verdict is verdict
    assert s.rule in ("first-red", "no-data")


def test_a_sample_reports_counts_estimate_bounds_and_baseline_and_serialises():
    s = judge(view(600, span(4200, 13), span(420, 1), span(8400, 20), span(840, 2)), P)
    d = s.to_dict()
    json.dumps(d)
    c, b = d["canary"], d["baseline"]
    assert c["requests"] == 4200 and c["errors"] == 13
    assert c["err_lower"] < c["err_ratio"] < c["err_upper"]
    assert b["requests"] == 8400 and d["err_limit"] and d["p95_limit"]
    assert set(d["margins"]) >= {"slo-errors", "slo-latency", "baseline-errors", "baseline-latency"}
    assert d["verdict"] == "watch" and d["rule"] == "watch"


def test_to_dict_has_no_nan_or_inf():
    s = judge(view(600, span(4200, 0), span(0, 0)), P)
    assert "NaN" not in json.dumps(s.to_dict()) and "Infinity" not in json.dumps(s.to_dict())


# --- the watch loop ------------------------------------------------------------------------------


class Traffic:
    """Deterministic cumulative counts: ``rate`` req/s, error ratios that may change at ``switch_at``."""

    def __init__(self, rate=10.0, err=0.0, base_err=0.0, switch_at=math.inf, err2=None, base_err2=None):
        self.rate, self.err, self.base_err = rate, err, base_err
        self.switch_at, self.err2, self.base_err2 = switch_at, err2, base_err2
        self.calls: list[float] = []

    def _count(self, t: float, a: float, b: float | None) -> float:
        if t <= self.switch_at:
            return t * a
        return self.switch_at * a + (t - self.switch_at) * (a if b is None else b)

    def __call__(self, elapsed: float) -> Evidence:
        self.calls.append(elapsed)
        n = self.rate * elapsed
        c = Side(LES, (n, n, n, n), self._count(elapsed, self.rate * self.err, self.err2 and self.rate * self.err2))
        b = Side(LES, (2 * n,) * 4, self._count(elapsed, 2 * self.rate * self.base_err,
                                                  self.base_err2 and 2 * self.rate * self.base_err2))
        return Evidence(canary=c, baseline=b)


POLICY = Policy(window_s=600, interval_s=30, alive_interval_s=0, hold_limit_s=300)


def test_watch_ends_green_after_the_window_with_one_probe_per_interval():
    clock = FakeClock()
    r = watch(Traffic(err=0.001), POLICY, clock)
    assert r.outcome is Outcome.GREEN and r.ok and len(r.samples) == 20
    assert clock.slept == [30.0] * 20
    assert all(s.verdict is Verdict.WATCH for s in r.samples[:-1]) and r.samples[-1].verdict is Verdict.PASS


def test_watch_rolls_back_a_bad_canary_with_the_rule_that_decided():
    r = watch(Traffic(err=0.05), POLICY, FakeClock())
    assert r.outcome is Outcome.BREACH and r.rule in ("slo-errors", "baseline-errors", "fast-errors")
    assert len(r.samples) == 1 and "SLI breach at 30s" in r.reason


def test_watch_does_not_blame_the_canary_for_a_fleet_wide_incident():
    t = Traffic(err=0.001, base_err=0.001, switch_at=150, err2=0.05, base_err2=0.05)
    r = watch(t, POLICY, FakeClock())
    assert r.outcome is Outcome.FLEET_INCIDENT and r.rule == "hold", r.reason
    assert not any(s.verdict is Verdict.FAIL for s in r.samples)
    assert "not blamed" in r.reason


@pytest.mark.parametrize("ev,outcome", [(Evidence(error="HTTP 503"), Outcome.ERROR),
                                        (Evidence(nodata="canary: bucket count is nan"), Outcome.NODATA)])
def test_watch_tolerates_errors_and_no_data_up_to_the_limit(ev, outcome):
    r = watch(lambda _at: ev, POLICY, FakeClock())
    assert r.outcome is outcome and len(r.samples) == POLICY.max_errors + 1


def test_watch_never_passes_on_no_data():
    r = watch(lambda _at: Evidence(canary=None, nodata="empty bucket vector"), POLICY, FakeClock())
    assert not r.ok and all(s.verdict is Verdict.NODATA for s in r.samples)


def test_a_dead_canary_ends_the_watch_within_the_alive_interval():
    clock = FakeClock(0.0)
    t = Traffic()
    r = watch(t, Policy(window_s=600, interval_s=30, alive_interval_s=2),
              clock, alive=lambda: "systemd reports the unit failed" if clock.monotonic() >= 45 else None)
    assert r.outcome is Outcome.BREACH and r.rule == "dead-canary"
    assert r.samples[-1].at == 46.0 and "unit failed" in r.reason
    assert t.calls == [30.0]  # no Prometheus query needed to see it


def test_on_sample_sees_every_probe_and_the_final_result():
    seen = []
    r = watch(Traffic(), POLICY, FakeClock(), on_sample=lambda s, res: seen.append((s.verdict, res.outcome)))
    assert len(seen) == len(r.samples) and seen[-1] == (Verdict.PASS, Outcome.GREEN)
    assert all(o is None for _, o in seen[:-1])


def test_the_bucket_layout_changing_mid_watch_is_an_error():
    calls = iter([Evidence(canary=Side(LES, (10, 10, 10, 10), 0))] + [Evidence(canary=Side((0.5, math.inf), (20, 20), 0))] * 9)
    r = watch(lambda _at: next(calls), POLICY, FakeClock())
    assert r.outcome is Outcome.ERROR and "bucket bounds changed" in r.samples[1].reason


def test_first_red_watch_rolls_back_on_one_error_at_low_traffic():
    r = watch(Traffic(rate=2, err=0.01), Policy(judge=Judge.FIRST_RED, window_s=600, alive_interval_s=0),
              FakeClock())
    assert r.outcome is Outcome.BREACH and r.rule == "first-red"


def test_a_counter_that_goes_down_a_hair_is_read_as_unchanged():
    seq = iter([Evidence(canary=Side(LES, (100.0,) * 4, 0)), Evidence(canary=Side(LES, (99.6,) * 4, 0))]
               + [Evidence(canary=Side(LES, (100.0 + 300 * i,) * 4, 0)) for i in range(1, 30)])
    r = watch(lambda _at: next(seq), POLICY, FakeClock())
    assert r.samples[1].canary is not None and r.samples[1].canary.requests == 100.0


def test_a_baseline_above_the_slo_by_chance_delays_the_blame_by_one_probe_only():
    # canary: 21 errors in its last 420 requests; baseline: 2 in 240 (0.8 %, but not surprising for it)
    v = view(1230, span(8820, 46), span(420, 21), span(17640, 55), span(240, 2))
    first = judge(v, P)
    assert (first.verdict, first.rule) == (Verdict.WATCH, "defer"), first.reason
    again = judge(View(**{**{f: getattr(v, f) for f in v.__dataclass_fields__}, "deferred": True}), P)
    assert (again.verdict, again.rule) == (Verdict.FAIL, "fast-errors"), again.reason


def test_snapshot_judges_a_fixed_span_for_a_preflight():
    from veza_canary.verdict import snapshot

    one_error = Traffic(rate=2, err=1 / 600)  # one error in five quiet minutes: red for first-red, not here
    assert snapshot(one_error, P).verdict is Verdict.WATCH and one_error.calls == [P.clear_s] == [300.0]
    assert snapshot(Traffic(rate=2, err=0.05), P).verdict is Verdict.FAIL
    assert snapshot(lambda _at: Evidence(error="HTTP 500"), P).verdict is Verdict.ERROR


def test_a_snapshot_longer_than_the_window_never_calls_one_error_unproven():
    """Seen on the lab: SLI_WINDOW=9, a 20 s preflight span, 1 5xx in 48 requests was "already red" (unproven)."""
    from dataclasses import replace

    from veza_canary.verdict import snapshot

    short = replace(P, window_s=9.0, interval_s=3.0, max_extend_s=6.0, rate_window_s=10.0)
    one_in_48 = Traffic(rate=2.4, err=1 / 48)
    smp = snapshot(one_in_48, short, 20.0)
    assert smp.verdict is not Verdict.FAIL and smp.rule != "unproven", smp.reason
    assert snapshot(Traffic(rate=2.4, err=0.3), short, 20.0).verdict is Verdict.FAIL, "a clearly red node still is"


# --- bursty counts ---------------------------------------------------------------------------------


def steady(n: float, k: float) -> Side:
    return Side(LES, (n, n, n, n), k)


def test_the_baselines_dispersion_is_one_for_steady_counts_and_large_for_bursts():
    from veza_canary.verdict import Tracker

    calm, bursty = Tracker(P), Tracker(P)
    calm.prime([steady(1000, k) for k in (3, 2, 4, 3, 2, 4, 3, 3)])
    bursty.prime([steady(1000, k) for k in (0, 0, 12, 0, 1, 0, 10, 1)])
    assert calm.dispersion() == 1.0
    assert bursty.dispersion() > 4
    assert Tracker(P).dispersion() == 1.0  # too few intervals to tell


def test_a_bursty_fleet_makes_the_judge_count_each_request_for_less_but_shows_the_real_counts():
    v = view(600, span(4200, 50), span(420, 5), span(8400, 25), span(840, 2))
    plain = judge(v, P)
    bursty = judge(View(**{**{f: getattr(v, f) for f in v.__dataclass_fields__}, "dispersion": 8.0}), P)
    assert plain.rule == "slo-errors" and bursty.verdict is Verdict.WATCH
    assert bursty.canary is not None and bursty.canary.requests == 4200 and bursty.canary.errors == 50
    assert bursty.dispersion == 8.0 and bursty.canary.llr_errors < plain.canary.llr_errors


def test_watch_primes_the_dispersion_with_the_baselines_history():
    t = Traffic(err=0.001)
    r = watch(t, POLICY, FakeClock(), prior=[steady(1000, k) for k in (0, 0, 12, 0, 1, 0, 10, 1)])
    assert r.ok and r.samples[0].dispersion > 4


def test_bursty_counts_never_turn_real_traffic_into_no_data():
    """84 real requests in the last window are data, however bursty the baseline looked (found on the lab: a
    dispersion of ~17 scaled them below SLI_MIN_REQUESTS and a healthy canary was rolled back as no-data)."""
    v = view(12.0, span(84.5, secs=12.0), span(84.5, secs=12.0), span(176.0, secs=12.0), span(176.0, secs=12.0))
    bursty = judge(View(**{**{f: getattr(v, f) for f in v.__dataclass_fields__}, "dispersion": 17.0}), P)
    assert str(bursty.verdict) != "no-data", bursty.reason
    quiet = view(12.0, span(3.0, secs=12.0), span(3.0, secs=12.0), span(176.0, secs=12.0), span(176.0, secs=12.0))
    assert str(judge(View(**{**{f: getattr(quiet, f) for f in quiet.__dataclass_fields__}, "dispersion": 17.0}),
                     P).verdict) == "no-data"
