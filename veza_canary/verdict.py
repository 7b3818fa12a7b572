"""The SLI judge: decide on the canary from the evidence accumulated since it entered rotation.

The runbook's literal rule ("the first probe whose 1 m ratio is at or above the
threshold rolls back") rolls back most healthy builds at low traffic: one error
among a few hundred requests is a "breach" (docs/sli-judge.md has the numbers).
This judge looks at *counts* instead -- requests, 5xx and slow requests (slower
than the p95 threshold, read from the histogram's buckets) since the watch began,
for the canary and for the baseline (the peers, same LB, same time) -- and decides
with a stated confidence.

API (what the pipeline calls)::

    from veza_canary.evidence import PromEvidence
    from veza_canary.health import dead_canary
    from veza_canary.verdict import Outcome, Policy, watch

    take = PromEvidence.from_settings(prom, settings)         # elapsed -> Evidence (4 queries)
    policy = Policy.from_settings(settings)
    result = watch(take, policy, clock,
                   prior=take.baseline_history(policy.interval_s),  # the fleet's burstiness (2 queries)
                   alive=dead_canary(canary_node),               # optional; asked every alive_interval_s
                   on_sample=lambda smp, r: report.sli_samples.append(smp.to_dict()))
    result.outcome: GREEN -> go on; BREACH -> roll back and block (result.rule says which rule);
                    FLEET_INCIDENT -> roll back, do NOT block; NODATA -> roll back and block (as before);
                    ERROR -> roll back, not blocked (Prometheus failed, not the build).

Every probe's ``Sample`` is one of: ``pass`` (the window has run and the evidence is
consistent with the SLO: only then does the watch end green), ``watch`` (nothing
shown yet, keep watching), ``fail`` (rule named in ``rule``), ``hold`` (the
baseline is as bad as the canary: a fleet-wide incident), ``no-data``, ``error``.

The rules of the sound judge (``SLI_JUDGE=sound``, the default), in order:

* ``baseline-errors`` / ``baseline-latency`` -- the canary is significantly worse than
  the baseline, even under the SLO: its 5xx ratio above max(2 x, +0.1 pp) of the
  baseline's upper bound, or more than 5 % of its requests slower than 1.5 x the
  baseline's p95 (upper bound), each a Poisson tail test at ``alpha / probes``.
* ``slo-errors`` / ``slo-latency`` -- Wald's SPRT on the accumulated counts, H0 "at the
  threshold" against H1 "at 2 x the threshold", failing at log LR >= log(1/alpha):
  a canary exactly at the SLO is rolled back with probability <= alpha (5 % at the
  default 95 % confidence), one at 60 % of it far more rarely, however many probes.
* ``fast-errors`` / ``fast-latency`` -- the last rate window alone, a Poisson tail test
  at ``FAST_ALPHA``: a build that turns bad mid-watch is not diluted by an hour of
  good traffic.
* ``hold`` -- the baseline breaks the SLO by the same rules: a fleet-wide incident.
  The canary is not blamed; the incident's intervals (from the baseline's change
  point) leave the evidence of both; after ``hold_limit_s`` the outcome is
  ``inconclusive-fleet-incident``.
* ``unproven`` -- the window (plus ``max_extend_s``) has run and the canary's estimate
  is still at or above a threshold: not shown bad, not shown good: rolled back.

Every test counts each request for 1/``dispersion``: how much burstier the baseline's counts are
than independent requests' (quasi-Poisson; 1 for steady traffic), so a burst is not read as proof.

``SLI_JUDGE=first-red`` keeps the runbook's rule (each probe's last rate window:
p95 or 5xx ratio at or above the threshold fails), computed from the same evidence.
Everything here is pure; the only I/O is ``take_evidence`` and ``alive``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from veza_canary.clock import Clock
from veza_canary.log import get_logger
from veza_canary.stats import binom_sf, count_le, poisson_sf, quantile, sprt_llr, wilson_bounds, z_one_sided

if TYPE_CHECKING:
    from veza_canary.settings import Settings

log = get_logger(__name__)

#: Per-look false-alarm probability of the fast (last rate window) rules: 120 looks an hour
#: at a canary exactly at the threshold give <= 1.2 %, at 60 % of it orders of magnitude less.
FAST_ALPHA = 1e-4


#: How surprising the baseline's last rate window must be, against its usual ratio, to excuse a canary's
#: fast-rule breach as a fleet-wide incident.
INCIDENT_ALPHA = 0.01


class Judge(StrEnum):
    SOUND = "sound"
    FIRST_RED = "first-red"


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    WATCH = "watch"
    FAIL = "fail"
    HOLD = "hold"
    NODATA = "no-data"
    ERROR = "error"


class Outcome(StrEnum):
    GREEN = "green"
    BREACH = "breach"
    FLEET_INCIDENT = "inconclusive-fleet-incident"
    NODATA = "no-data"
    ERROR = "prometheus-error"


# --- evidence ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Side:
    """One side's counts since the watch began: the cumulative histogram (``les`` ascending, +Inf
    last) and the 5xx count."""

    les: tuple[float, ...]
    buckets: tuple[float, ...]
    errors: float

    @property
    def requests(self) -> float:
        return self.buckets[-1] if self.buckets else 0.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one probe read. ``canary`` None with ``nodata`` set: nothing to judge (empty, NaN).
    ``baseline`` None: no baseline this probe (no peers, or its reading was empty)."""

    canary: Side | None = None
    baseline: Side | None = None
    error: str | None = None
    nodata: str | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """Counts over a span of time (all the evidence, or the last rate window)."""

    les: tuple[float, ...]
    buckets: tuple[float, ...]
    errors: float
    seconds: float

    @property
    def requests(self) -> float:
        return self.buckets[-1] if self.buckets else 0.0

    def slow(self, threshold_s: float) -> float:
        """Requests slower than ``threshold_s`` (interpolated inside its bucket)."""
        return max(0.0, self.requests - count_le(self.les, self.buckets, threshold_s))

    def q(self, q: float) -> float:
        return quantile(self.les, self.buckets, q)

    def scaled(self, f: float) -> Span:
        """The same ratios and quantiles with every count times ``f`` (effective counts, see ``View``)."""
        return Span(self.les, tuple(x * f for x in self.buckets), self.errors * f, self.seconds)


# --- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """Everything the judge and the watch loop need; ``from_settings`` maps the knobs."""

    judge: Judge = Judge.SOUND
    window_s: float = 3600.0
    interval_s: float = 30.0
    max_nodata: int = 3
    max_errors: int = 3
    err_threshold: float = 0.005
    p95_threshold_s: float = 0.5
    quantile: float = 0.95
    rate_window_s: float = 60.0
    min_requests: float = 5.0
    confidence: float = 0.95
    breach_factor: float = 2.0  # H1 of the SPRT: this many times the threshold
    baseline_err_factor: float = 2.0
    baseline_err_margin: float = 0.001
    baseline_p95_factor: float = 1.5
    hold_limit_s: float = 900.0
    max_extend_s: float = 900.0  # from settings: a quarter of the window
    alive_interval_s: float = 5.0

    @property
    def clear_s(self) -> float:
        """The span of the baseline that must be back under the SLO before a hold ends (5 rate windows)."""
        return max(5 * self.rate_window_s, 2 * self.interval_s)

    @property
    def recent_s(self) -> float:
        """The recent past a preflight judges (two rate windows, at least two probe intervals, at most 10 min)."""
        return min(600.0, max(2 * self.rate_window_s, 2 * self.interval_s))

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence

    @property
    def boundary(self) -> float:
        """The SPRT's fail boundary, log(1/alpha)."""
        return math.log(1.0 / self.alpha)

    @property
    def look_alpha(self) -> float:
        """Per-probe level of the baseline rules: alpha spread over the window's probes (Bonferroni)."""
        return self.alpha / max(1.0, self.window_s / self.interval_s)

    @property
    def slow_threshold(self) -> float:
        """The share of requests allowed above the p95 threshold (5 % for a p95)."""
        return 1.0 - self.quantile

    @classmethod
    def from_settings(cls, s: Settings, *, alive_interval_s: float | None = None) -> Policy:
        sli = s.sli
        extra = {k: getattr(sli, k) for k in ("confidence", "baseline_err_factor", "baseline_err_margin",
                                               "baseline_p95_factor", "hold_limit_s", "max_extend_s")
                 if hasattr(sli, k)}
        if hasattr(sli, "judge"):
            extra["judge"] = Judge(sli.judge)
        return cls(window_s=sli.window, interval_s=sli.probe_interval, max_nodata=sli.max_nodata,
                   max_extend_s=max(2 * sli.probe_interval, 0.25 * sli.window),
                   max_errors=sli.max_errors, err_threshold=sli.err_ratio_threshold,
                   p95_threshold_s=sli.p95_threshold_s, rate_window_s=sli.rate_window_s,
                   min_requests=sli.min_requests,
                   alive_interval_s=alive_interval_s if alive_interval_s is not None
                   else max(1.0, min(5.0, 4 * s.timeouts.poll_interval)), **extra)


# --- one probe's verdict ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SideStats:
    """The numbers shown for one side: all the evidence, and its last rate window."""

    requests: float
    errors: float
    err_ratio: float | None
    err_lower: float | None  # one-sided bounds at the policy's confidence (Wilson)
    err_upper: float | None
    slow: float
    slow_share: float | None
    p95: float | None
    llr_errors: float
    llr_slow: float
    recent_requests: float
    recent_errors: float
    recent_err_ratio: float | None
    recent_p95: float | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe: the verdict, the rule that decided, and the evidence."""

    verdict: Verdict
    reason: str
    rule: str = ""
    at: float = 0.0
    p95: float | None = None  # the canary's, over all the evidence (first-red: its last rate window)
    err_ratio: float | None = None
    req_rate: float | None = None  # the canary's, over its last rate window
    canary: SideStats | None = None
    baseline: SideStats | None = None
    boundary: float | None = None  # SPRT fail boundary log(1/alpha)
    err_limit: float | None = None  # the 5xx ratio the canary is held to against the baseline
    p95_limit: float | None = None  # the latency it is held to against the baseline
    margins: dict[str, float] = field(default_factory=dict)  # per rule, fraction of the way to failing
    dispersion: float = 1.0  # the baseline's burstiness the tests allowed for (1: Poisson)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        return _finite(d)  # type: ignore[return-value]


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


@dataclass(frozen=True, slots=True)
class View:
    """What the judge sees at one probe (built by ``Tracker``)."""

    at: float
    canary: Span  # all the evidence the judge counts (a fleet incident's intervals left out)
    canary_recent: Span  # the last rate window
    baseline: Span | None = None
    baseline_recent: Span | None = None
    held_since: float | None = None  # a hold is under way since then
    baseline_settle: Span | None = None  # the baseline's last ``clear_s``: a hold ends when it is under the SLO
    canary_settle: Span | None = None  # the canary's, over the same span
    deferred: bool = False  # the previous probe deferred a fast-rule decision
    #: How much more the baseline's 5xx and slow counts vary from one interval to the next than Poisson
    #: counts would (Pearson's chi-square over its degrees of freedom, >= 1). Real errors come in bursts;
    #: the judge's tests then count each request as 1/dispersion of an independent one (quasi-Poisson).
    dispersion: float = 1.0

    def scaled(self, f: float) -> View:
        def sc(x: Span | None) -> Span | None:
            return None if x is None else x.scaled(f)

        return View(at=self.at, canary=self.canary.scaled(f), canary_recent=self.canary_recent.scaled(f),
                    baseline=sc(self.baseline), baseline_recent=sc(self.baseline_recent), held_since=self.held_since,
                    baseline_settle=sc(self.baseline_settle), canary_settle=sc(self.canary_settle),
                    deferred=self.deferred, dispersion=1.0)


def _ratio(k: float, n: float) -> float | None:
    return k / n if n > 0 else None


def _stats(span: Span, recent: Span, p: Policy, z: float) -> SideStats:
    n, e = span.requests, min(span.errors, span.requests)
    slow = span.slow(p.p95_threshold_s)
    lo, hi = wilson_bounds(n, e, z) if n > 0 else (None, None)
    p95 = span.q(p.quantile) if n > 0 else None
    rp95 = recent.q(p.quantile) if recent.requests > 0 else None
    return SideStats(
        requests=n, errors=e, err_ratio=_ratio(e, n), err_lower=lo, err_upper=hi, slow=slow,
        slow_share=_ratio(slow, n), p95=p95,
        llr_errors=sprt_llr(n, e, p.err_threshold, min(0.999, p.breach_factor * p.err_threshold)) if n else 0.0,
        llr_slow=sprt_llr(n, slow, p.slow_threshold, min(0.999, p.breach_factor * p.slow_threshold)) if n else 0.0,
        recent_requests=recent.requests, recent_errors=min(recent.errors, recent.requests),
        recent_err_ratio=_ratio(min(recent.errors, recent.requests), recent.requests), recent_p95=rp95)


def _breaches(st: SideStats, recent: Span, p: Policy) -> dict[str, str]:
    """The SLO rules that fire on one side, with their reasons."""
    out = {}
    a = p.boundary
    if st.llr_errors >= a:
        out["slo-errors"] = (f"5xx ratio {st.err_ratio:.4f} ({st.errors:.0f} of {st.requests:.0f} requests) is "
                             f"above the SLO {p.err_threshold:g} with {p.confidence:.0%} confidence "
                             f"(SPRT log-LR {st.llr_errors:.2f} >= {a:.2f})")
    if st.llr_slow >= a:
        out["slo-latency"] = (f"{st.slow_share:.2%} of {st.requests:.0f} requests slower than "
                              f"{p.p95_threshold_s:g}s (p95 ~{st.p95:.3f}s): p95 above the SLO with "
                              f"{p.confidence:.0%} confidence (SPRT log-LR {st.llr_slow:.2f} >= {a:.2f})")
    n_r = recent.requests
    if n_r > 0:
        e_r = st.recent_errors
        if e_r / n_r >= p.err_threshold and poisson_sf(e_r, n_r * p.err_threshold) < FAST_ALPHA:
            out["fast-errors"] = (f"last {recent.seconds:.0f}s: 5xx ratio {e_r / n_r:.4f} ({e_r:.0f} of {n_r:.0f}) "
                                  f"far above the SLO {p.err_threshold:g} (p < {FAST_ALPHA:g})")
        s_r = recent.slow(p.p95_threshold_s)
        if s_r / n_r >= p.slow_threshold and poisson_sf(s_r, n_r * p.slow_threshold) < FAST_ALPHA:
            out["fast-latency"] = (f"last {recent.seconds:.0f}s: {s_r / n_r:.1%} of {n_r:.0f} requests slower than "
                                   f"{p.p95_threshold_s:g}s, far above {p.slow_threshold:.0%} (p < {FAST_ALPHA:g})")
    return out


def _worse_than_baseline(c: Span, cs: SideStats, b: Span, bs: SideStats, p: Policy,
                         z: float) -> tuple[dict[str, str], float | None, float | None, dict[str, float]]:
    """The baseline rules: (fired rules with reasons, 5xx limit, latency limit, margins)."""
    out: dict[str, str] = {}
    margins: dict[str, float] = {}
    err_limit = p95_limit = None
    n_c = c.requests
    if b.requests <= 0 or n_c <= 0:
        return out, None, None, margins
    # Errors: the canary's ratio against max(factor x, + margin) of the baseline's upper bound.
    assert bs.err_upper is not None
    err_limit = min(1.0, max(p.baseline_err_factor * bs.err_upper, bs.err_upper + p.baseline_err_margin))
    pv = poisson_sf(cs.errors, n_c * err_limit)
    margins["baseline-errors"] = _margin(pv, p.look_alpha)
    if cs.errors / n_c > err_limit and pv < p.look_alpha:
        out["baseline-errors"] = (f"5xx ratio {cs.errors / n_c:.4f} ({cs.errors:.0f} of {n_c:.0f}) is significantly "
                                  f"above the baseline's {bs.err_ratio:.4f} (limit {err_limit:.4f} = max("
                                  f"{p.baseline_err_factor:g} x, +{p.baseline_err_margin:g}) of its upper bound; "
                                  f"p = {pv:.1e})")
    # Latency: more than (1 - q) of the canary slower than factor x the baseline's p95 (upper bound).
    qu = min(0.999, p.quantile + z * math.sqrt(p.quantile * (1 - p.quantile) / b.requests))
    b95u = b.q(qu)
    if math.isfinite(b95u) and b95u > 0:
        p95_limit = p.baseline_p95_factor * b95u
        k = c.slow(p95_limit)
        pv = poisson_sf(k, n_c * p.slow_threshold)
        margins["baseline-latency"] = _margin(pv, p.look_alpha)
        if k / n_c > p.slow_threshold and pv < p.look_alpha:
            out["baseline-latency"] = (f"{k / n_c:.1%} of the canary's requests are slower than {p95_limit:.3f}s "
                                       f"= {p.baseline_p95_factor:g} x the baseline's p95 (~{bs.p95:.3f}s, upper "
                                       f"{b95u:.3f}s): its p95 is significantly worse (p = {pv:.1e})")
    return out, err_limit, p95_limit, margins


def _margin(pvalue: float, alpha: float) -> float:
    """How far a tail test is towards failing: log(1/p) / log(1/alpha) (>= 1: fails)."""
    return round(math.log(1 / max(pvalue, 1e-300)) / math.log(1 / alpha), 3)


def _clear(span: Span | None, p: Policy) -> bool:
    """The baseline over ``span`` (its last ``clear_s``) is under both thresholds: the incident is over."""
    if span is None or span.requests < max(p.min_requests, 1):
        return False
    n = span.requests
    return span.errors / n < p.err_threshold and span.slow(p.p95_threshold_s) / n < p.slow_threshold


def judge(v: View, p: Policy) -> Sample:
    """The verdict of one probe from the evidence. Pure; table-tested."""
    if p.judge is Judge.FIRST_RED:
        return _judge_first_red(v, p)
    if v.dispersion <= 1.0:
        return _judge(v, p)
    # Bursty counts: judge effective counts, show the real ones (the bounds and log-LRs stay effective). Whether
    # there is data at all is a question about the real requests: the no-data floor is scaled alike.
    smp = _judge(v.scaled(1.0 / v.dispersion), replace(p, min_requests=p.min_requests / v.dispersion))
    z = z_one_sided(p.confidence)

    def real(st: SideStats | None, span: Span | None, recent: Span | None) -> SideStats | None:
        if st is None or span is None or recent is None:
            return st
        r = _stats(span, recent, p, z)
        return replace(st, requests=r.requests, errors=r.errors, slow=r.slow, recent_requests=r.recent_requests,
                       recent_errors=r.recent_errors)

    base_recent = v.baseline_recent or (v.baseline and Span(v.baseline.les, (0.0,) * len(v.baseline.les), 0.0, 0.0))
    return replace(smp, canary=real(smp.canary, v.canary, v.canary_recent),
                   baseline=real(smp.baseline, v.baseline, base_recent), dispersion=round(v.dispersion, 3),
                   req_rate=(v.canary_recent.requests / v.canary_recent.seconds if v.canary_recent.seconds > 0
                             else None))


def _judge(v: View, p: Policy) -> Sample:
    z = z_one_sided(p.confidence)
    c, cr = v.canary, v.canary_recent
    cs = _stats(c, cr, p, z)
    req_rate = cr.requests / cr.seconds if cr.seconds > 0 else None
    common: dict[str, Any] = {"at": round(v.at, 3), "p95": cs.p95, "err_ratio": cs.err_ratio,
                              "req_rate": req_rate, "canary": cs, "boundary": p.boundary}
    margins = {"slo-errors": round(cs.llr_errors / p.boundary, 3), "slo-latency": round(cs.llr_slow / p.boundary, 3)}

    canary_bad = _breaches(cs, cr, p)
    bs = None
    worse: dict[str, str] = {}
    baseline_bad: dict[str, str] = {}
    if v.baseline is not None and v.baseline.requests > 0:
        br = v.baseline_recent or Span(v.baseline.les, (0.0,) * len(v.baseline.les), 0.0, 0.0)
        bs = _stats(v.baseline, br, p, z)
        worse, common["err_limit"], common["p95_limit"], m = _worse_than_baseline(c, cs, v.baseline, bs, p, z)
        margins.update(m)
        baseline_bad = _breaches(bs, br, p)
    common["baseline"], common["margins"] = bs, margins

    for rule in ("baseline-errors", "baseline-latency"):
        if rule in worse:
            return Sample(Verdict.FAIL, worse[rule], rule, **common)
    # The canary is blamed for breaking the SLO unless the baseline, over the same span, is as bad.
    held_now = v.held_since is not None
    excused: dict[str, str] = {}
    deferred: dict[str, str] = {}
    for rule in ("slo-errors", "fast-errors", "slo-latency", "fast-latency"):
        if rule in canary_bad:
            fast = rule.startswith("fast")
            e = _excuse(cr if fast else c, v.baseline_recent if fast else v.baseline, rule.endswith("errors"), p,
                        v.baseline if fast else None, z, held_now, v.deferred)
            if e != "hold" and not held_now and v.canary_settle is not None and _excuse(
                    v.canary_settle, v.baseline_settle, rule.endswith("errors"), p, v.baseline, z, False, False) == "hold":
                e = "hold"  # the baseline's last few minutes show the incident the last one does not
            if e == "blame":
                return Sample(Verdict.FAIL, canary_bad[rule], rule, **common)
            (deferred if e == "defer" else excused)[rule] = canary_bad[rule]
    held = held_now and not _clear(v.baseline_settle, p)
    if excused or baseline_bad or held:
        why = "; ".join([f"canary: {r} (baseline as bad)" for r in excused.values()]
                        + [f"baseline: {r}" for r in baseline_bad.values()]) or "baseline not yet back under the SLO"
        since = v.at if v.held_since is None else v.held_since
        return Sample(Verdict.HOLD, f"fleet-wide incident, canary not blamed (holding {v.at - since:.0f}s): {why}",
                      "hold", **common)
    if deferred:
        return Sample(Verdict.WATCH, f"{'; '.join(deferred.values())}; but the baseline is above the SLO too: "
                                     "judging again at the next probe", "defer", **common)

    if cr.requests < p.min_requests:
        return Sample(Verdict.NODATA, f"only {cr.requests:.1f} requests in the last {cr.seconds:.0f}s "
                                      f"(< {p.min_requests:g})", "no-data", **common)
    shown = _summary(cs, p)
    if v.at + 1e-9 < p.window_s:
        return Sample(Verdict.WATCH, f"nothing shown yet: {shown}", "watch", **common)
    under = (cs.err_ratio or 0.0) < p.err_threshold and (cs.slow_share or 0.0) < p.slow_threshold
    if under:
        return Sample(Verdict.PASS, f"consistent with the SLO after {v.at:.0f}s: {shown}", "pass", **common)
    if v.at + 1e-9 >= p.window_s + p.max_extend_s:
        return Sample(Verdict.FAIL, f"not shown to meet the SLO after {v.at:.0f}s: {shown}", "unproven", **common)
    return Sample(Verdict.WATCH, f"window over but an estimate is at/above its threshold, watching longer: {shown}",
                  "extend", **common)


def _excuse(c: Span, b: Span | None, errors: bool, p: Policy, normal: Span | None, z: float, held: bool,
            deferred: bool) -> str:
    """Whether a canary's SLO breach over this span is its own ("blame"), a fleet-wide problem ("hold"), or
    not yet clear ("defer": judged again at the next probe, once).

    A fleet-wide problem: the baseline, over the same span, is significantly (``INCIDENT_ALPHA``) above
    the threshold -- for the last rate window, above its own usual ratio when that is lower (``normal``:
    the baseline's evidence so far) -- and the canary is not significantly worse than it (a conditional
    binomial test at ``look_alpha``). A baseline above the threshold but not significantly so makes the
    decision wait one probe (a baseline at the threshold by chance excuses nothing). During a hold (an
    incident already shown), only a canary worse than the incident by the baseline rules' factor is blamed.
    """
    if b is None or b.requests < max(p.min_requests, 1) or c.requests <= 0:
        return "blame"
    if errors:
        kc, kb, thr, f = c.errors, b.errors, p.err_threshold, p.baseline_err_factor
    else:
        kc, kb, thr, f = c.slow(p.p95_threshold_s), b.slow(p.p95_threshold_s), p.slow_threshold, \
            p.baseline_p95_factor
    if held:
        share = f * c.requests / (f * c.requests + b.requests)
        return "blame" if binom_sf(kc, kc + kb, share) < p.look_alpha else "hold"
    if kb / b.requests < thr:
        return "blame"
    ref = thr
    if normal is not None and normal.requests > 0:
        k0 = normal.errors if errors else normal.slow(p.p95_threshold_s)
        ref = min(thr, wilson_bounds(normal.requests, min(k0, normal.requests), z)[1])
    if poisson_sf(kb, b.requests * ref) >= INCIDENT_ALPHA:
        return "blame" if deferred else "defer"
    share = c.requests / (c.requests + b.requests)
    return "blame" if binom_sf(kc, kc + kb, share) < p.look_alpha else "hold"


def _summary(cs: SideStats, p: Policy) -> str:
    return (f"5xx {cs.errors:.0f}/{cs.requests:.0f} = {cs.err_ratio or 0:.4f} (< {p.err_threshold:g}), "
            f"slow {cs.slow_share or 0:.2%} (< {p.slow_threshold:.0%} above {p.p95_threshold_s:g}s)")


def _judge_first_red(v: View, p: Policy) -> Sample:
    """The runbook's literal rule on the last rate window: p95 or 5xx ratio at/above its threshold is red."""
    r = v.canary_recent
    n = r.requests
    at = round(v.at, 3)
    rate = n / r.seconds if r.seconds > 0 else None
    if n < p.min_requests or n <= 0:
        return Sample(Verdict.NODATA, f"only {n:.1f} requests in the rate window (< {p.min_requests:g})",
                      "no-data", at=at, req_rate=rate)
    ratio = min(r.errors, n) / n
    q = r.q(p.quantile)
    if not math.isfinite(q):
        return Sample(Verdict.NODATA, f"p95 is {q}", "no-data", at=at, err_ratio=ratio, req_rate=rate)
    reasons = []
    if q >= p.p95_threshold_s:
        reasons.append(f"p95 {q:.3f}s >= {p.p95_threshold_s:g}s")
    if ratio >= p.err_threshold:
        reasons.append(f"5xx ratio {ratio:.4f} >= {p.err_threshold:g}")
    if reasons:
        return Sample(Verdict.FAIL, "; ".join(reasons), "first-red", at=at, p95=q, err_ratio=ratio, req_rate=rate)
    return Sample(Verdict.PASS, f"p95 {q:.3f}s < {p.p95_threshold_s:g}s, 5xx ratio {ratio:.4f} < {p.err_threshold:g}",
                  "first-red", at=at, p95=q, err_ratio=ratio, req_rate=rate)


# --- accumulating evidence -------------------------------------------------------------------------


class Tracker:
    """Turns each probe's cumulative readings into the judge's ``View``: all the evidence minus a fleet
    incident's intervals, and the last rate window. Pure bookkeeping, no I/O."""

    def __init__(self, p: Policy) -> None:
        self.p = p
        self.les: tuple[float, ...] | None = None
        self.t: list[float] = [0.0]
        self.c: list[list[float]] = []  # per probe: [errors, bucket counts...] cumulative
        self.b: list[list[float] | None] = []
        self.excluded: list[bool] = [False]  # per interval ending at probe i
        self.c_out: list[float] = []
        self.b_out: list[float] = []
        self.held_since: float | None = None
        self.ever_held = False
        self.deferred = False
        # The baseline's included intervals, for its dispersion: per interval (n, 5xx, slow), and the sums
        # m, N, K, sum(k^2/n) for 5xx and for slow (Pearson's chi-square = N/K * sum(k^2/n) - K).
        self.b_int: list[tuple[float, float, float] | None] = [None]
        self.disp = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # m, N, K_e, S_e, K_s, S_s
        # Intervals join the dispersion only once older than ``clear_s``: an incident starting now must not
        # make its own onset look like the fleet's usual noise.
        self.disp_upto = 0

    def add(self, at: float, ev: Evidence) -> str | None:
        """Record a probe's evidence; an error reason when it cannot be used (bucket layout changed)."""
        side = ev.canary
        assert side is not None
        if self.les is None:
            self.les = side.les
            zero = [0.0] * (len(side.les) + 1)
            self.c, self.b = [zero], [zero]
            self.c_out, self.b_out = list(zero), list(zero)
        if side.les != self.les or (ev.baseline is not None and ev.baseline.les != self.les):
            return "the histogram's bucket bounds changed during the watch"
        self.t.append(at)
        # increase() extrapolates: a later answer may be a hair lower; counts never go down.
        self.c.append(_mono([side.errors, *side.buckets], self.c[-1]))
        prev_b = self.b[-1]
        self.b.append(_mono([ev.baseline.errors, *ev.baseline.buckets], prev_b) if ev.baseline is not None
                      else prev_b)
        self.excluded.append(False)
        d = _sub(self.b[-1], prev_b) if prev_b is not None and self.b[-1] is not None else None
        if d is not None and d[-1] > 0:
            n = d[-1]
            term = (n, min(d[0], n), n - count_le(self.les, d[1:], self.p.p95_threshold_s))
            self.b_int.append(term)
        else:
            self.b_int.append(None)
        return None

    def prime(self, prior: Sequence[Side]) -> None:
        """Count the baseline's intervals before the watch in its dispersion (not in the evidence)."""
        for side in prior:
            n = side.requests
            if n > 0:
                self._disp_add((n, min(side.errors, n), n - count_le(side.les, side.buckets,
                                                                     self.p.p95_threshold_s)), 1.0)

    def _disp_add(self, term: tuple[float, float, float], sign: float) -> None:
        n, ke, ks = term
        acc = self.disp
        acc[0] += sign
        acc[1] += sign * n
        acc[2] += sign * ke
        acc[3] += sign * ke * ke / n
        acc[4] += sign * ks
        acc[5] += sign * ks * ks / n

    def dispersion(self) -> float:
        """The baseline's dispersion over its intervals before the watch and its included ones older than
        ``clear_s``: Pearson's chi-square over its degrees of freedom, less two standard errors (so that
        steady traffic reads 1, not its noise), at least 1; 1 with fewer than 5 intervals or 5 events."""
        upto = self._back(self.p.clear_s) if len(self.t) > 1 else 0
        for i in range(self.disp_upto + 1, upto + 1):
            term = self.b_int[i]
            if term is not None and not self.excluded[i]:
                self._disp_add(term, 1.0)
        self.disp_upto = max(self.disp_upto, upto)
        m, n, ke, se, ks, ss = self.disp
        if m < 5:
            return 1.0
        margin = 2 * math.sqrt(2 / (m - 1))
        phis = [(n / k * s - k) / (m - 1) - margin for k, s in ((ke, se), (ks, ss)) if k >= 5]
        return min(100.0, max([1.0, *phis]))

    def _back(self, seconds: float) -> int:
        """The latest probe at least ``seconds`` before the last one (0: the start)."""
        now = len(self.t) - 1
        j = now - 1
        while j > 0 and self.t[now] - self.t[j] < seconds - 1e-9:
            j -= 1
        return j

    def view(self, at: float) -> View:
        assert self.les is not None
        les, now = self.les, len(self.t) - 1
        j = self._back(self.p.rate_window_s)
        secs = self.t[now] - self.t[j]
        c_all = _sub(self.c[now], self.c_out)
        c_rec = _sub(self.c[now], self.c[j])
        base = base_rec = settle = None
        k = self._back(self.p.clear_s)
        b_now = self.b[now]
        if b_now is not None and b_now[-1] > 0:
            b_all = _sub(b_now, self.b_out)
            base = Span(les, tuple(b_all[1:]), b_all[0], self.t[now])
            base_rec = _span(les, b_now, self.b[j], secs)
            settle = _span(les, b_now, self.b[k], self.t[now] - self.t[k])
        return View(at=at, canary=Span(les, tuple(c_all[1:]), c_all[0], self.t[now]),
                    canary_recent=Span(les, tuple(c_rec[1:]), c_rec[0], secs),
                    baseline=base, baseline_recent=base_rec, held_since=self.held_since,
                    baseline_settle=settle, canary_settle=_span(les, self.c[now], self.c[k], self.t[now] - self.t[k]),
                    deferred=self.deferred, dispersion=self.dispersion())

    def note(self, smp: Sample, v: View) -> None:
        """After the judge: a hold leaves the incident's intervals out of the evidence."""
        self.deferred = smp.rule == "defer"
        if smp.verdict is not Verdict.HOLD:
            if smp.verdict is not Verdict.NODATA:
                self.held_since = None
            return
        now = len(self.t) - 1
        self.ever_held = True
        if self.held_since is None:
            self.held_since = self.t[now]
            start = self._change_point()
        else:
            start = now
        for i in range(max(1, start), now + 1):
            self._exclude(i)

    def _exclude(self, i: int) -> None:
        if self.excluded[i]:
            return
        self.excluded[i] = True
        term = self.b_int[i]
        if term is not None and i <= self.disp_upto:
            self._disp_add(term, -1.0)
        for acc, series in ((self.c_out, self.c), (self.b_out, self.b)):
            hi, lo = series[i], series[i - 1]
            if hi is None or lo is None:
                continue
            for k in range(len(acc)):
                acc[k] += hi[k] - lo[k]

    def _change_point(self) -> int:
        """Where the incident began: the first interval after the minimum of a log-LR path (the CUSUM
        change-point estimate), over both sides and both metrics, whichever climb began earliest."""
        assert self.les is not None
        p = self.p
        now = len(self.t) - 1
        slow_at = p.p95_threshold_s
        best = now
        for series, metric in ((self.b, "errors"), (self.b, "slow"), (self.c, "errors"), (self.c, "slow")):
            p0 = p.err_threshold if metric == "errors" else p.slow_threshold
            p1 = min(0.999, p.breach_factor * p0)
            path, lowest, low_i = 0.0, 0.0, 0
            for i in range(1, now + 1):
                hi, lo = series[i], series[i - 1]
                if self.excluded[i] or hi is None or lo is None:
                    continue
                d = _sub(hi, lo)
                n = d[-1]
                if n <= 0:
                    continue
                k = d[0] if metric == "errors" else n - count_le(self.les, d[1:], slow_at)
                path += sprt_llr(n, k, p0, p1)
                if path < lowest:
                    lowest, low_i = path, i
            if path - lowest >= p.boundary * 0.5:  # this metric climbed: its change point counts
                best = min(best, low_i + 1)
        return best


def _span(les: tuple[float, ...], hi: list[float], lo: list[float] | None, seconds: float) -> Span:
    d = _sub(hi, lo or [0.0] * len(hi))
    return Span(les, tuple(d[1:]), d[0], seconds)


def _mono(cur: list[float], prev: list[float] | None) -> list[float]:
    if prev is None:
        return cur
    return [max(a, b) for a, b in zip(cur, prev, strict=True)]


def _sub(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [max(0.0, x - y) for x, y in zip(a, b, strict=True)]


# --- the watch loop ----------------------------------------------------------------------------


@dataclass(slots=True)
class WatchResult:
    outcome: Outcome | None = None
    reason: str = ""
    rule: str = ""
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.GREEN

    def counts(self) -> dict[str, int]:
        out = {str(v): 0 for v in Verdict}
        for s in self.samples:
            out[str(s.verdict)] += 1
        return out


TakeEvidence = Callable[[float], Evidence]


def watch(
    take_evidence: TakeEvidence,
    policy: Policy,
    clock: Clock,
    *,
    alive: Callable[[], str | None] | None = None,
    on_sample: Callable[[Sample, WatchResult], None] | None = None,
    prior: Sequence[Side] = (),
) -> WatchResult:
    """Probe every ``interval_s`` and judge; return when the judge (or a limit) decides.

    ``take_evidence(elapsed)`` reads the counts since the watch began (elapsed seconds ago).
    ``alive()`` is called every ``alive_interval_s`` while waiting: a reason ends the watch at once
    (a dead canary). ``prior``: the baseline's counts per interval before the watch
    (``PromEvidence.baseline_history``), so the judge knows the fleet's burstiness from the first probe.
    The first probe comes one interval after the start.
    """
    result = WatchResult()
    tracker = Tracker(policy)
    tracker.prime(prior)
    start = clock.monotonic()
    nodata = errors = 0
    while result.outcome is None:
        elapsed = clock.monotonic() - start
        remaining = policy.window_s - elapsed
        if not result.samples:
            wait = policy.interval_s if policy.window_s > 0 else 0.0
        else:
            wait = min(policy.interval_s, remaining) if remaining > 0 else policy.interval_s
        dead = _sleep_watching(clock, wait, policy.alive_interval_s, alive)
        elapsed = clock.monotonic() - start
        if dead:
            smp = Sample(Verdict.FAIL, f"canary is dead: {dead}", "dead-canary", at=round(elapsed, 3))
        else:
            smp = _probe(take_evidence, tracker, elapsed)
        result.samples.append(smp)
        _log(smp, policy)
        nodata = nodata + 1 if smp.verdict is Verdict.NODATA else 0
        errors = errors + 1 if smp.verdict is Verdict.ERROR else 0
        if smp.verdict is Verdict.FAIL and smp.rule == "unproven" and tracker.ever_held:
            # Not shown good, not shown bad, and a fleet-wide incident fed the evidence: not the build's fault.
            result.outcome, result.rule = Outcome.FLEET_INCIDENT, "unproven"
            result.reason = (f"SLI inconclusive at {elapsed:.0f}s after a fleet-wide incident during the watch: "
                             f"{smp.reason}")
        elif smp.verdict is Verdict.FAIL:
            result.outcome, result.rule = Outcome.BREACH, smp.rule
            result.reason = f"SLI breach at {elapsed:.0f}s ({smp.rule}): {smp.reason}"
        elif nodata > policy.max_nodata:
            result.outcome, result.rule = Outcome.NODATA, "no-data"
            result.reason = f"{nodata} consecutive no-data probes (limit {policy.max_nodata}): {smp.reason}"
        elif errors > policy.max_errors:
            result.outcome, result.rule = Outcome.ERROR, "error"
            result.reason = f"{errors} consecutive Prometheus errors (limit {policy.max_errors}): {smp.reason}"
        elif smp.verdict is Verdict.HOLD and tracker.held_since is not None and \
                elapsed - tracker.held_since >= policy.hold_limit_s:
            result.outcome, result.rule = Outcome.FLEET_INCIDENT, "hold"
            result.reason = (f"fleet-wide incident for {elapsed - tracker.held_since:.0f}s (limit "
                             f"{policy.hold_limit_s:g}s): canary rolled back but not blamed: {smp.reason}")
        elif smp.verdict is Verdict.PASS and elapsed + 1e-9 >= policy.window_s:
            c = result.counts()
            result.outcome, result.rule = Outcome.GREEN, smp.rule
            result.reason = (f"SLI green after {elapsed:.0f}s ({policy.judge} judge, {len(result.samples)} probes, "
                             f"{c['no-data']} no-data, {c['error']} error): {smp.reason}")
        if on_sample:
            on_sample(smp, result)
    return result


def snapshot(take_evidence: TakeEvidence, policy: Policy, span_s: float | None = None) -> Sample:
    """One judgement of the last ``span_s`` seconds (default: five rate windows, ``clear_s``), for a
    preflight ("is this node's SLI red now?"): ``fail`` only when a rule shows it (the SPRT at the policy's
    confidence, the fast rule, the baseline rules); otherwise ``watch`` (nothing shown), ``no-data`` or
    ``error``. One error in a quiet minute is not "already red"; a canary rolled back ten minutes ago is
    not "red now" either."""
    # No window ends in a snapshot: "not shown good by the end of the window" (``unproven``) is a watch's
    # verdict; here one error in a quiet span would make it "red" (seen on the lab: 1 5xx in 48 requests).
    endless = replace(policy, max_extend_s=math.inf)
    smp = _probe(take_evidence, Tracker(endless), policy.clear_s if span_s is None else span_s)
    _log(smp, policy)
    return smp


def _sleep_watching(clock: Clock, wait: float, step: float, alive: Callable[[], str | None] | None) -> str | None:
    """Sleep ``wait`` seconds in slices of ``step``, asking ``alive()`` after each; its reason ends the sleep."""
    if alive is None or step <= 0:
        clock.sleep(wait)
        return None
    left = wait
    while True:
        s = min(step, left)
        clock.sleep(s)
        left -= s
        why = alive()
        if why or left <= 1e-9:
            return why


def _probe(take_evidence: TakeEvidence, tracker: Tracker, elapsed: float) -> Sample:
    at = round(elapsed, 3)
    ev = take_evidence(elapsed)
    if ev.error is not None:
        return Sample(Verdict.ERROR, ev.error, "error", at=at)
    if ev.canary is None or ev.nodata is not None:
        return Sample(Verdict.NODATA, ev.nodata or "no canary data", "no-data", at=at)
    bad = tracker.add(elapsed, ev)
    if bad is not None:
        return Sample(Verdict.ERROR, bad, "error", at=at)
    v = tracker.view(elapsed)
    smp = judge(v, tracker.p)
    tracker.note(smp, v)
    return smp


def _log(smp: Sample, p: Policy) -> None:
    c, b = smp.canary, smp.baseline
    log.info("sli.probe", verdict=str(smp.verdict), rule=smp.rule, reason=smp.reason, at=smp.at, judge=str(p.judge),
             requests=c.requests if c else None, errors=c.errors if c else None, err_ratio=smp.err_ratio,
             err_lower=c.err_lower if c else None, err_upper=c.err_upper if c else None,
             slow_share=c.slow_share if c else None, p95=smp.p95, req_rate=smp.req_rate,
             baseline_requests=b.requests if b else None, baseline_err_ratio=b.err_ratio if b else None,
             baseline_p95=b.p95 if b else None, err_limit=smp.err_limit, p95_limit=smp.p95_limit,
             err_threshold=p.err_threshold, p95_threshold=p.p95_threshold_s, margins=smp.margins)
