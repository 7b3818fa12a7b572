"""The SLI's evidence from Prometheus: the queries (metrics as configuration) and reading them.

Four instant queries per probe, for the canary and for the baseline (the peers)::

    sum by (le) (increase(<metric>_bucket{<selector>,<exclude>}[<elapsed>s]))
    sum(increase(<metric>_count{<selector>,<exclude>,<error_selector>}[<elapsed>s])) or vector(0)

``<elapsed>`` is the time since the canary entered rotation, so every answer is a count
since then (a restarted process's counter reset is handled by ``increase()``). Every
part is a setting, with the runbook's as defaults:

==================  =================================  ==========================================
knob                default                            placeholders
==================  =================================  ==========================================
SLI_METRIC          veza_gin_http_request_duration_seconds   (a histogram's base name)
SLI_SELECTOR        node="{node}"                      {node}: the canary
SLI_BASELINE_SEL..  node=~"{peers}"                    {peers}: the peers, as a regex alternation
SLI_ERROR_SELECTOR  status=~"5.."                      -
SLI_EXCLUDE         path!="{health_path}"              {health_path}: HEALTH_PATH
==================  =================================  ==========================================

``check_metric`` and ``check_matchers`` validate them (the settings loader's knob
checks), so an invalid template is refused before anything changes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from veza_canary.errors import PrometheusError
from veza_canary.log import get_logger
from veza_canary.verdict import Evidence, Side

if TYPE_CHECKING:
    from veza_canary.prometheus import Prometheus
    from veza_canary.settings import Settings

log = get_logger(__name__)

DEFAULT_METRIC = "veza_gin_http_request_duration_seconds"
DEFAULT_SELECTOR = 'node="{node}"'
DEFAULT_BASELINE_SELECTOR = 'node=~"{peers}"'
DEFAULT_ERROR_SELECTOR = 'status=~"5.."'
DEFAULT_EXCLUDE = 'path!="{health_path}"'
PLACEHOLDERS = ("node", "peers", "health_path")

_METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MATCHER_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\\n]|\\.)*)"\s*')
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


# --- validation (knob checks: value -> problem or None) ----------------------------------------------


def check_metric(v: str, _all: object = None) -> str | None:
    """A histogram's base name (``<name>_bucket`` and ``<name>_count`` must exist)."""
    if not _METRIC_RE.fullmatch(v):
        return f"{v[:60]!r} is not a Prometheus metric name"
    if v.endswith(("_bucket", "_count", "_sum")):
        return f"give the histogram's base name, without the {v.rsplit('_', 1)[1]!r} suffix"
    return None


def check_matchers(v: str, allowed: Iterable[str] = PLACEHOLDERS) -> str | None:
    """A comma-separated list of label matchers using only ``allowed`` placeholders; empty is fine."""
    if any(ord(c) < 32 for c in v):
        return "contains control characters"
    allowed = tuple(allowed)
    for part in _split(v):
        if not part.strip():
            continue
        m = _MATCHER_RE.fullmatch(part)
        if not m:
            return (f"{part.strip()[:60]!r} is not a label matcher like name=\"value\" "
                    "(one of = != =~ !~ and a double-quoted value)")
        for ph in _PLACEHOLDER_RE.findall(m.group(3)):
            if ph not in allowed:
                return f"unknown placeholder {{{ph}}} (allowed: {', '.join('{' + a + '}' for a in allowed)})"
        if m.group(2) in ("=~", "!~"):
            probe = _PLACEHOLDER_RE.sub("x", m.group(3)).replace("\\\\", "\\")
            try:
                re.compile(probe)
            except re.error as exc:
                return f"{m.group(1)}{m.group(2)}: invalid regex ({exc})"
    return None


def _split(v: str) -> Iterator[str]:
    """Split on commas outside double-quoted values."""
    buf: list[str] = []
    quoted = escaped = False
    for c in v:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            yield "".join(buf)
            buf = []
            continue
        buf.append(c)
    yield "".join(buf)


def validate(metric: str, selector: str, baseline_selector: str, error_selector: str,
             exclude: str) -> list[tuple[str, str]]:
    """Every problem with the metric templates, as (knob, problem); empty when all are valid."""
    out = []
    if (why := check_metric(metric)) is not None:
        out.append(("SLI_METRIC", why))
    for knob, v, allowed in (("SLI_SELECTOR", selector, ("node",)),
                             ("SLI_BASELINE_SELECTOR", baseline_selector, ("peers",)),
                             ("SLI_ERROR_SELECTOR", error_selector, ()),
                             ("SLI_EXCLUDE", exclude, ("health_path",))):
        if (why := check_matchers(v, allowed)) is not None:
            out.append((knob, why))
    if not error_selector.strip():
        out.append(("SLI_ERROR_SELECTOR", "empty: every request would count as an error"))
    return out


# --- queries -------------------------------------------------------------------------------------


def _quote(s: str) -> str:
    """A value inside a PromQL double-quoted string."""
    return s.replace("\\", "\\\\").replace('"', '\\"')


def peers_regex(peers: Iterable[str]) -> str:
    """The peers as an RE2 alternation, escaped for a PromQL string (``a|b``)."""
    return "|".join(_quote(re.sub(r"([.+*?()\[\]{}|^$\\])", r"\\\1", p)) for p in peers)


def render(template: str, **values: str) -> str:
    """Fill a matcher template's placeholders (values already escaped for a PromQL string)."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@dataclass(frozen=True, slots=True)
class EvidenceQueries:
    """The matchers of one side (canary or baseline) and the query texts for a range."""

    metric: str
    matchers: str  # selector + exclusion, rendered
    error_matchers: str

    def buckets(self, range_s: int) -> str:
        return f"sum by (le) (increase({self.metric}_bucket{{{self.matchers}}}[{range_s}s]))"

    def errors(self, range_s: int) -> str:
        sel = ",".join(p for p in (self.matchers, self.error_matchers) if p)
        return f"sum(increase({self.metric}_count{{{sel}}}[{range_s}s])) or vector(0)"

    @classmethod
    def build(cls, *, metric: str, selector: str, exclude: str, error_selector: str, **values: str) -> EvidenceQueries:
        parts = [render(p, **values).strip(" ,") for p in (selector, exclude)]
        return cls(metric=metric, matchers=",".join(p for p in parts if p),
                   error_matchers=render(error_selector, **values).strip(" ,"))


def _sli_knob(s: Settings, name: str, default: str) -> str:
    return str(getattr(s.sli, name, default))


def queries_from_settings(s: Settings, node: str | None = None) -> tuple[EvidenceQueries, EvidenceQueries | None]:
    """The canary's (or ``node``'s) and the baseline's queries. No baseline when the selector does not name
    the node (a fleet-wide SLI has no baseline), when there are no peers, or when SLI_BASELINE_SELECTOR is
    empty; the baseline is the other nodes of the pool."""
    metric = _sli_knob(s, "metric", DEFAULT_METRIC)
    exclude = _sli_knob(s, "exclude", DEFAULT_EXCLUDE)
    err = _sli_knob(s, "error_selector", DEFAULT_ERROR_SELECTOR)
    base_sel = _sli_knob(s, "baseline_selector", DEFAULT_BASELINE_SELECTOR)
    hp = _quote(s.service.health_path)
    node = node or s.pool.canary
    canary = EvidenceQueries.build(metric=metric, selector=s.sli.selector, exclude=exclude, error_selector=err,
                                   node=_quote(node), health_path=hp)
    peers = [p for p in s.pool.nodes if p != node]
    if not peers or "{node}" not in s.sli.selector or not base_sel.strip():
        return canary, None
    baseline = EvidenceQueries.build(metric=metric, selector=base_sel, exclude=exclude, error_selector=err,
                                     peers=peers_regex(peers), health_path=hp)
    return canary, baseline


# --- reading -------------------------------------------------------------------------------------


class _NoData(Exception):
    pass


class PromEvidence:
    """``take_evidence`` for ``verdict.watch``: the counts since the watch began, canary and baseline."""

    def __init__(self, prom: Prometheus, canary: EvidenceQueries, baseline: EvidenceQueries | None) -> None:
        self.prom, self.canary, self.baseline = prom, canary, baseline

    @classmethod
    def from_settings(cls, prom: Prometheus, s: Settings, node: str | None = None) -> PromEvidence:
        return cls(prom, *queries_from_settings(s, node))

    def __call__(self, elapsed: float) -> Evidence:
        range_s = max(1, math.ceil(elapsed))
        try:
            canary = self._side(self.canary, range_s)
        except PrometheusError as exc:
            return Evidence(error=str(exc))
        except _NoData as exc:
            return Evidence(nodata=f"canary: {exc}")
        baseline = None
        if self.baseline is not None:
            try:
                baseline = self._side(self.baseline, range_s)
            except PrometheusError as exc:
                return Evidence(error=f"baseline: {exc}")
            except _NoData as exc:
                log.info("sli.baseline_nodata", reason=str(exc))
        return Evidence(canary=canary, baseline=baseline)

    def baseline_history(self, step_s: float, seconds: float = 600.0, *, now: float | None = None) -> list[Side]:
        """The baseline's counts in each ``step_s`` over the last ``seconds`` before the watch: how bursty the
        fleet's errors and latencies usually are (``watch(prior=...)``). Best effort: [] when unknown."""
        if self.baseline is None:
            return []
        end = time.time() if now is None else now
        step = max(1, round(step_s))
        try:
            buckets = self.prom.query_range(self.baseline.buckets(step), start=end - seconds, end=end, step=step)
            errors = self.prom.query_range(self.baseline.errors(step), start=end - seconds, end=end, step=step)
        except PrometheusError as exc:
            log.info("sli.baseline_history_unavailable", error=str(exc))
            return []
        errs: dict[float, float] = {}
        for series in errors:
            for t, v in series.values:
                errs[t] = errs.get(t, 0.0) + v
        by_t: dict[float, list[tuple[str | None, float]]] = {}
        for series in buckets:
            for t, v in series.values:
                by_t.setdefault(t, []).append((series.labels.get("le"), v))
        out = []
        for t in sorted(by_t):
            try:
                out.append(side_from(by_t[t], [errs.get(t, 0.0)]))
            except (_NoData, PrometheusError):
                continue
        return out

    def _side(self, q: EvidenceQueries, range_s: int) -> Side:
        buckets = self.prom.query(q.buckets(range_s))
        errors = self.prom.query(q.errors(range_s))
        return side_from(((s.labels.get("le"), s.value) for s in buckets), [s.value for s in errors])


def side_from(buckets: Iterable[tuple[str | None, float]], errors: list[float]) -> Side:
    """A ``Side`` from the two answers; raises _NoData (empty, NaN, Inf) or PrometheusError (nonsense)."""
    pairs = []
    for le, v in buckets:
        try:
            bound = float(le) if le is not None else math.nan
        except ValueError:
            raise PrometheusError(f"bucket with a non-numeric le={le!r}") from None
        if math.isnan(bound):
            raise PrometheusError("bucket series without an le label (is SLI_METRIC a histogram?)")
        if not math.isfinite(v) or v < 0:
            raise _NoData(f"bucket count is {v}")
        pairs.append((bound, v))
    if not pairs:
        raise _NoData("empty bucket vector (no requests in the range, or the selector matches nothing)")
    pairs.sort()
    if len({b for b, _ in pairs}) != len(pairs):
        raise PrometheusError("two bucket series with the same le (the selector matches more than one histogram "
                              "family; add a matcher)")
    if not math.isinf(pairs[-1][0]):
        raise PrometheusError('no le="+Inf" bucket')
    if len(errors) > 1:
        raise PrometheusError(f"5xx query returned {len(errors)} series, expected one")
    err = errors[0] if errors else 0.0
    if not math.isfinite(err) or err < 0:
        raise _NoData(f"5xx count is {err}")
    counts, top = [], 0.0
    for _, v in pairs:  # cumulative buckets never decrease (Prometheus's histogram_quantile fixes them too)
        top = max(top, v)
        counts.append(top)
    if counts[-1] <= 0:
        raise _NoData("no requests since the watch began")
    return Side(les=tuple(b for b, _ in pairs), buckets=tuple(counts), errors=min(err, counts[-1]))
