"""The judge simulation's own parts: its Poisson draws, its latency buckets, and that a cell is reproducible."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from bench.judge_sim import HEALTHY, LES, TENX, Cell, SimProm, bucket_probs, poisson, run_cell
from veza_canary.stats import quantile
from veza_canary.verdict import Judge


@pytest.mark.parametrize("lam", [0.3, 3.0, 11.9, 12.0, 50.0, 6000.0])
def test_poisson_draws_have_the_right_mean_and_variance(lam):
    rng = random.Random(7)
    xs = [poisson(rng, lam) for _ in range(20000)]
    sd = math.sqrt(lam / len(xs))
    assert abs(statistics.fmean(xs) - lam) < 5 * sd
    assert statistics.pvariance(xs) == pytest.approx(lam, rel=0.05)


def test_bucket_probabilities_put_the_p95_where_asked():
    probs = bucket_probs(0.3)
    assert sum(probs) == pytest.approx(1.0)
    cum = [sum(probs[: i + 1]) for i in range(len(probs))]
    # histogram_quantile's linear guess inside (0.25, 0.5] overestimates a falling density (0.37 for 0.3);
    # the judge reads the share above 0.5 s, a bucket bound, exactly
    assert 0.25 < quantile(LES, cum, 0.95) < 0.5
    assert 1 - cum[LES.index(0.5)] == pytest.approx(0.0063, abs=0.0005)


def test_the_synthetic_prometheus_counts_since_the_start():
    prom = SimProm(HEALTHY, 10.0, random.Random(1))
    a, b = prom(30.0), prom(60.0)
    assert a.canary is not None and b.canary is not None and b.canary.requests >= a.canary.requests
    assert 500 < b.canary.requests < 700 and b.baseline is not None and b.baseline.requests > b.canary.requests


def test_a_cell_is_reproducible_and_runs_the_real_judge():
    one = run_cell(Cell(TENX, 7, Judge.SOUND, 5, seed=3))
    two = run_cell(Cell(TENX, 7, Judge.SOUND, 5, seed=3))
    assert one.outcomes == two.outcomes == {"breach": 5} and one.detect_s == two.detect_s
