"""The SLI's one-probe view: PromQL rate queries, the pure verdict of one probe, and its watch loop.

This is the runbook's literal rule, probe by probe. It serves ``sli check`` / ``sli watch``
and the deploy's preflight ("is the SLI green now?"). The deploy's verdict on a canary is
``veza_canary/verdict.py`` (the sound judge, or ``SLI_JUDGE=first-red`` computed there
from the same evidence); docs/sli-judge.md says why.

Every probe is exactly one of:

* ``pass``    -- traffic present, p95 and 5xx ratio under their thresholds;
* ``fail``    -- p95 >= threshold or 5xx ratio >= threshold (the runbook's "first red probe");
* ``no-data`` -- NaN, +/-Inf or an empty p95, or fewer than ``SLI_MIN_REQUESTS`` requests
  in the rate window (zero traffic is not a pass);
* ``error``   -- Prometheus unreachable, a non-success answer, or more than one series.

An empty 5xx vector *with traffic present* means zero errors (the numerator is
guarded with ``or vector(0)`` and the denominator judged on its own).

The watch rolls back on the first ``fail``, and after more than
``SLI_MAX_NODATA`` consecutive no-data or ``SLI_MAX_ERRORS`` consecutive errors.
It never ends green on a non-pass probe: when the window closes after a
no-data/error probe, it keeps probing (within those limits) until a pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from veza_canary.clock import Clock
from veza_canary.errors import PrometheusError
from veza_canary.log import get_logger
from veza_canary.verdict import Verdict  # one enum: this module's probes give pass, fail, no-data or error

if TYPE_CHECKING:
    from veza_canary.prometheus import Prometheus
    from veza_canary.settings import Settings

log = get_logger(__name__)

METRIC = "veza_gin_http_request_duration_seconds"


@dataclass(frozen=True, slots=True)
class Thresholds:
    p95_s: float
    err_ratio: float
    min_requests: float
    rate_window_s: float


@dataclass(frozen=True, slots=True)
class Reading:
    """What one query returned: ``values`` (possibly empty), or an ``error``."""

    values: tuple[float, ...] = ()
    error: str | None = None

    @classmethod
    def of(cls, *values: float) -> Reading:
        return cls(values=tuple(values))

    @classmethod
    def failed(cls, error: str) -> Reading:
        return cls(error=error)


@dataclass(frozen=True, slots=True)
class Sample:
    verdict: Verdict
    reason: str
    p95: float | None = None
    err_ratio: float | None = None
    req_rate: float | None = None
    at: float = 0.0  # seconds since the watch started

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        for k in ("p95", "err_ratio", "req_rate"):
            v = d[k]
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = str(v)
        return d


def judge(p95: Reading, errors: Reading, total: Reading, t: Thresholds) -> Sample:
    """The verdict of one probe. Pure; table-tested."""
    for name, r in (("p95", p95), ("5xx rate", errors), ("request rate", total)):
        if r.error is not None:
            return Sample(Verdict.ERROR, f"{name} query failed: {r.error}")
        if len(r.values) > 1:
            return Sample(Verdict.ERROR, f"{name} query returned {len(r.values)} series, expected one")

    rate = total.values[0] if total.values else None
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return Sample(Verdict.NODATA, "no traffic in the rate window", req_rate=rate)
    requests = rate * t.rate_window_s
    if requests < t.min_requests:
        return Sample(Verdict.NODATA, f"only {requests:.1f} requests in the rate window (< {t.min_requests:g})",
                      req_rate=rate)

    err_rate = errors.values[0] if errors.values else 0.0  # empty 5xx vector with traffic = no errors
    if not math.isfinite(err_rate) or err_rate < 0:
        return Sample(Verdict.NODATA, f"5xx rate is {err_rate}", req_rate=rate)
    ratio = err_rate / rate

    q = p95.values[0] if p95.values else None
    if q is None or not math.isfinite(q):
        return Sample(Verdict.NODATA, f"p95 is {'empty' if q is None else q}", err_ratio=ratio, req_rate=rate)

    reasons = []
    if q >= t.p95_s:
        reasons.append(f"p95 {q:.3f}s >= {t.p95_s:g}s")
    if ratio >= t.err_ratio:
        reasons.append(f"5xx ratio {ratio:.4f} >= {t.err_ratio:g}")
    if reasons:
        return Sample(Verdict.FAIL, "; ".join(reasons), p95=q, err_ratio=ratio, req_rate=rate)
    return Sample(Verdict.PASS, f"p95 {q:.3f}s < {t.p95_s:g}s, 5xx ratio {ratio:.4f} < {t.err_ratio:g}",
                  p95=q, err_ratio=ratio, req_rate=rate)


# --- queries -----------------------------------------------------------------------


def duration_seconds(d: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if d.endswith(suffix):
            return float(d[: -len(suffix)]) * units[suffix]
    raise ValueError(d)


@dataclass(frozen=True, slots=True)
class Queries:
    p95: str
    errors: str
    total: str

    @classmethod
    def build(cls, *, selector: str, node: str, health_path: str, rate_window: str, metric: str = METRIC,
              error_selector: str = 'status=~"5.."', exclude: str = 'path!="{health_path}"') -> Queries:
        """The three queries; ``metric``, ``error_selector`` and ``exclude`` are settings (SLI_METRIC, ...)."""
        from veza_canary.evidence import render

        parts = [p for p in (render(selector, node=node).strip(" ,"),
                             render(exclude, health_path=health_path).strip(" ,")) if p]
        sel = ",".join(parts)
        err = ",".join(p for p in (sel, error_selector.strip(" ,")) if p)
        return cls(
            p95=f"histogram_quantile(0.95, sum by (le) (rate({metric}_bucket{{{sel}}}[{rate_window}])))",
            errors=f"sum(rate({metric}_count{{{err}}}[{rate_window}])) or vector(0)",
            total=f"sum(rate({metric}_count{{{sel}}}[{rate_window}]))",
        )

    @classmethod
    def from_settings(cls, s: Settings, node: str | None = None) -> Queries:
        sli = s.sli
        return cls.build(selector=sli.selector, node=node or s.pool.canary, health_path=s.service.health_path,
                         rate_window=sli.rate_window, metric=getattr(sli, "metric", METRIC),
                         error_selector=getattr(sli, "error_selector", 'status=~"5.."'),
                         exclude=getattr(sli, "exclude", 'path!="{health_path}"'))


def thresholds_from_settings(s: Settings) -> Thresholds:
    return Thresholds(p95_s=s.sli.p95_threshold_s, err_ratio=s.sli.err_ratio_threshold,
                      min_requests=s.sli.min_requests, rate_window_s=s.sli.rate_window_s)


def _read(prom: Prometheus, expr: str) -> Reading:
    try:
        return Reading.of(*(s.value for s in prom.query(expr)))
    except PrometheusError as exc:
        return Reading.failed(str(exc))


def probe(prom: Prometheus, queries: Queries, t: Thresholds, *, at: float = 0.0) -> Sample:
    """One probe: three queries, one verdict, one log line with inputs and outcome."""
    p95, errors, total = _read(prom, queries.p95), _read(prom, queries.errors), _read(prom, queries.total)
    s = judge(p95, errors, total, t)
    s = Sample(s.verdict, s.reason, s.p95, s.err_ratio, s.req_rate, at=round(at, 3))
    log.info("sli.probe", verdict=str(s.verdict), reason=s.reason, p95=s.p95, p95_threshold=t.p95_s,
             err_ratio=s.err_ratio, err_threshold=t.err_ratio, req_rate=s.req_rate,
             queries={"p95": queries.p95, "errors": queries.errors, "total": queries.total}, at=s.at)
    return s


# --- the watch loop -------------------------------------------------------------------


@dataclass(slots=True)
class WatchResult:
    ok: bool
    reason: str
    samples: list[Sample] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {str(v): 0 for v in (Verdict.PASS, Verdict.FAIL, Verdict.NODATA, Verdict.ERROR)}
        for s in self.samples:
            out[str(s.verdict)] += 1
        return out


@dataclass(frozen=True, slots=True)
class WatchPolicy:
    window_s: float
    interval_s: float
    max_nodata: int
    max_errors: int


def watch(
    take_probe: Callable[[float], Sample],
    policy: WatchPolicy,
    clock: Clock,
    *,
    on_sample: Callable[[Sample, WatchResult], None] | None = None,
) -> WatchResult:
    """Probe every ``interval`` for ``window``; stop at the first breach.

    ``take_probe(elapsed)`` returns one Sample. The first probe comes one
    interval after the start (so the rate window holds the new binary's traffic).
    """
    result = WatchResult(ok=False, reason="")
    start = clock.monotonic()
    nodata = errors = 0
    while True:
        remaining = policy.window_s - (clock.monotonic() - start)
        if not result.samples:
            wait = policy.interval_s if policy.window_s > 0 else 0.0
        else:
            # Inside the window, never overshoot its end; past it (after a non-pass), keep the cadence.
            wait = min(policy.interval_s, remaining) if remaining > 0 else policy.interval_s
        clock.sleep(wait)
        elapsed = clock.monotonic() - start
        s = take_probe(elapsed)
        result.samples.append(s)
        if s.verdict is Verdict.FAIL:
            result.reason = f"SLI breach at {elapsed:.0f}s: {s.reason}"
            break
        nodata = nodata + 1 if s.verdict is Verdict.NODATA else 0
        errors = errors + 1 if s.verdict is Verdict.ERROR else 0
        if nodata > policy.max_nodata:
            result.reason = f"{nodata} consecutive no-data probes (limit {policy.max_nodata}): {s.reason}"
            break
        if errors > policy.max_errors:
            result.reason = f"{errors} consecutive Prometheus errors (limit {policy.max_errors}): {s.reason}"
            break
        if on_sample:
            on_sample(s, result)
        if elapsed >= policy.window_s and s.verdict is Verdict.PASS:
            result.ok = True
            c = result.counts()
            result.reason = (f"SLI green for {policy.window_s:g}s: {c['pass']} pass, {c['no-data']} no-data, "
                             f"{c['error']} error")
            break
    if on_sample and not result.ok:
        on_sample(result.samples[-1], result)
    return result
