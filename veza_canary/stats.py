"""The statistics the SLI judge uses. Pure functions of counts; no I/O, no numpy.

* ``sprt_llr`` -- the log-likelihood ratio of Wald's sequential probability ratio
  test for a proportion: H0 "the ratio is p0" (the SLO's threshold) against H1
  "it is p1" (a multiple of it). Failing when it reaches ``log(1/alpha)`` rolls back
  a canary exactly at the threshold with probability at most ``alpha`` however often
  it is looked at (Ville's inequality), and one well under it far less often.
* ``poisson_sf`` -- P(X >= k) for a Poisson count: the tail test of the fast
  (last rate window) and baseline rules, accurate in the far tail.
* ``wilson_bounds`` -- the score interval of a ratio, for reports and for the
  baseline's upper bound.
* ``count_le`` / ``quantile`` -- read a cumulative histogram as Prometheus does
  (``histogram_quantile``'s linear interpolation inside a bucket, 0 as the first
  bucket's lower edge), so "slower than 0.5 s" and "p95" work for any thresholds.

Counts are floats: Prometheus's ``increase()`` extrapolates, so 41.7 requests is an
ordinary answer. The tail tests round an observed count *down* (in the canary's favour).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# One-sided normal quantiles for the confidences the judge uses (no scipy here).
_Z = {0.8: 0.8416, 0.9: 1.2816, 0.95: 1.6449, 0.975: 1.96, 0.99: 2.3263, 0.995: 2.5758, 0.999: 3.0902}


def z_one_sided(confidence: float) -> float:
    """The standard normal quantile at ``confidence`` (0.5 < c < 1), by table or Acklam-free bisection."""
    if confidence in _Z:
        return _Z[confidence]
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence!r}")
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def sprt_llr(n: float, k: float, p0: float, p1: float) -> float:
    """log LR of "ratio p1" against "ratio p0" after ``k`` events in ``n`` trials (0 < p0 < p1 < 1)."""
    k = min(max(k, 0.0), n)
    return k * math.log(p1 / p0) + (n - k) * math.log((1 - p1) / (1 - p0))


def poisson_sf(k: float, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam); ``k`` is rounded down."""
    k = math.floor(k)
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    log_lam = math.log(lam)
    if k <= lam:  # the tail is large: 1 - the lower sum is accurate enough
        term = math.exp(-lam)
        total = term
        for i in range(1, k):
            term *= lam / i
            total += term
        return min(1.0, max(0.0, 1.0 - total))
    # The tail is small: sum it from k upwards; the terms fall geometrically once i > lam.
    term = math.exp(k * log_lam - lam - math.lgamma(k + 1))
    total, i = term, k
    while term > total * 1e-12:
        i += 1
        term *= lam / i
        total += term
    return min(1.0, total)


def wilson_bounds(n: float, k: float, z: float) -> tuple[float, float]:
    """The Wilson score interval of the ratio k/n at ``z`` (one-sided bounds); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(k / n, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def count_le(les: Sequence[float], cum: Sequence[float], x: float) -> float:
    """How many observations were <= ``x`` in a cumulative histogram (``les`` ascending, +Inf last).

    Linear inside the bucket holding ``x``; above the largest finite bound, everything
    in the +Inf bucket counts as slower (we cannot know better).
    """
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, cum, strict=True):
        if x <= le:
            if math.isinf(le):
                return prev_c
            if le <= prev_le:
                return c
            return prev_c + (c - prev_c) * (max(x, prev_le) - prev_le) / (le - prev_le)
        prev_le, prev_c = le, c
    return prev_c


def quantile(les: Sequence[float], cum: Sequence[float], q: float) -> float:
    """``histogram_quantile(q)`` of a cumulative histogram; NaN when it is empty."""
    total = cum[-1] if cum else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, cum, strict=True):
        if c >= rank:
            if math.isinf(le):
                return prev_le  # Prometheus answers the largest finite bound
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def binom_sf(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); ``k`` rounded down, ``n`` rounded to the nearest count."""
    k, n = math.floor(k), int(round(n))
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)

    def pmf(i: int) -> float:
        return math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)

    if k <= n * p:  # a large tail: 1 - the lower sum
        total = sum(pmf(i) for i in range(k))
        return min(1.0, max(0.0, 1.0 - total))
    term = pmf(k)
    total, i = term, k
    ratio = p / (1 - p)
    while i < n and term > total * 1e-12:
        term *= (n - i) / (i + 1) * ratio
        i += 1
        total += term
    return min(1.0, total)
