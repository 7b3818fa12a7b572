"""The judge's statistics against known values."""

from __future__ import annotations

import math

import pytest

from veza_canary.stats import binom_sf, count_le, poisson_sf, quantile, sprt_llr, wilson_bounds, z_one_sided


@pytest.mark.parametrize("k,lam,want", [
    (0, 1.0, 1.0),
    (1, 1.0, 1 - math.exp(-1)),
    (3, 0.5, 1 - math.exp(-0.5) * (1 + 0.5 + 0.125)),
    (10, 1.0, 1.1142547828e-07),  # far tail: summed upwards, not 1 - (almost 1)
    (5, 0.0, 0.0),
    (2.9, 0.5, 1 - math.exp(-0.5) * 1.5),  # a fractional count is rounded down (the canary's favour)
    (100, 100.0, 0.5132987982791486),
])
def test_poisson_sf_known_values(k, lam, want):
    assert poisson_sf(k, lam) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("k,n,p,want", [
    (1, 10, 0.5, 1 - 1 / 1024),
    (10, 10, 0.5, 1 / 1024),
    (0, 10, 0.5, 1.0),
    (11, 10, 0.5, 0.0),
    (3, 20, 0.1, 1 - (0.9**20 + 20 * 0.1 * 0.9**19 + 190 * 0.01 * 0.9**18)),
])
def test_binom_sf_known_values(k, n, p, want):
    assert binom_sf(k, n, p) == pytest.approx(want, rel=1e-5)


def test_wilson_bounds_known_values():
    lo, hi = wilson_bounds(100, 10, 1.96)
    assert lo == pytest.approx(0.0552, abs=1e-4) and hi == pytest.approx(0.1744, abs=1e-4)
    assert wilson_bounds(0, 0, 1.96) == (0.0, 1.0)


def test_sprt_llr_is_the_binomial_log_likelihood_ratio():
    assert sprt_llr(100, 1, 0.005, 0.01) == pytest.approx(math.log(2) + 99 * math.log(0.99 / 0.995))
    assert sprt_llr(100, 0, 0.005, 0.01) < 0 < sprt_llr(100, 5, 0.005, 0.01)


def test_z_one_sided_from_the_table_and_by_bisection():
    assert z_one_sided(0.95) == pytest.approx(1.6449, abs=1e-4)
    assert z_one_sided(0.97) == pytest.approx(1.8808, abs=1e-3)
    with pytest.raises(ValueError):
        z_one_sided(1.0)


LES = (0.1, 0.5, 1.0, math.inf)


@pytest.mark.parametrize("cum,q,want", [
    ((50, 90, 100, 100), 0.95, 0.75),  # inside (0.5, 1]: linear
    ((50, 90, 100, 100), 0.5, 0.1),
    ((50, 90, 95, 100), 0.99, 1.0),  # in the +Inf bucket: the largest finite bound, as Prometheus
    ((100, 100, 100, 100), 0.5, 0.05),  # first bucket: 0 is its lower edge
])
def test_quantile_reads_a_histogram_as_histogram_quantile_does(cum, q, want):
    assert quantile(LES, cum, q) == pytest.approx(want)


def test_quantile_of_an_empty_histogram_is_nan():
    assert math.isnan(quantile(LES, (0, 0, 0, 0), 0.95))


@pytest.mark.parametrize("x,want", [(0.5, 90), (0.75, 95), (0.05, 25), (2.0, 100), (1.0, 100)])
def test_count_le_interpolates_inside_the_bucket(x, want):
    assert count_le(LES, (50, 90, 100, 100), x) == pytest.approx(want)


def test_count_le_above_the_last_bound_counts_the_inf_bucket_as_slower():
    assert count_le(LES, (50, 90, 95, 100), 5.0) == 95
