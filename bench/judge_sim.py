"""The SLI judge in simulation: false rollbacks and time to detect, driving the real judge code.

``veza_canary.verdict.watch`` runs unchanged on a ``FakeClock``; only its
``take_evidence`` is synthetic: the counts a Prometheus ``increase()`` since the
canary entered rotation would answer, for the canary and for the baseline (two
peers, so twice the canary's traffic). Traffic is Poisson: in each stretch between
probes every histogram bucket's count and the 5xx count are independent Poisson
draws (the splitting property), latencies log-normal (sigma 0.6, median set by the
p95), buckets 0.05 0.1 0.25 0.5 0.75 1 2.5 +Inf. Not modelled: scrape lag and
``increase()``'s extrapolation (sub-request noise), counter resets.

Run: ``.venv/bin/python bench/judge_sim.py [--quick] [--write-docs]``. Seeds are fixed
(one ``random.Random`` per deploy from the cell's seed), so the table is reproducible.
Writes ``$BENCH_OUT/judge_sim.json`` (``bench/report.py`` copies its table into
docs/benchmarks.md) and, with ``--write-docs``, puts the table there itself.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logging  # noqa: E402

import structlog  # noqa: E402

from bench.common import load, out_dir, provenance, q  # noqa: E402
from veza_canary.clock import FakeClock  # noqa: E402
from veza_canary.verdict import Evidence, Judge, Outcome, Policy, Side, watch  # noqa: E402

LES = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, math.inf)
SIGMA = 0.6
Z95 = 1.6449
RATES = (2, 7, 20, 50, 200)
PEERS = 2


# --- synthetic traffic ----------------------------------------------------------------------------


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw: inversion for small means, PTRS (Hoermann 1993, as numpy) for large ones."""
    if lam <= 0:
        return 0
    if lam < 12:
        u, k, p = rng.random(), 0, math.exp(-lam)
        s = p
        while u > s:
            k += 1
            p *= lam / k
            s += p
            if k > 1000:
                break
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= -lam + k * loglam - math.lgamma(k + 1):
            return k


def bucket_probs(p95: float) -> list[float]:
    """P(latency in each bucket) for a log-normal with this p95."""
    mu = math.log(p95) - Z95 * SIGMA
    cdf = [0.5 * math.erfc(-(math.log(le) - mu) / (SIGMA * math.sqrt(2))) if math.isfinite(le) else 1.0
           for le in LES]
    return [cdf[0]] + [cdf[i] - cdf[i - 1] for i in range(1, len(cdf))]


@dataclass(frozen=True)
class Phase:
    """From ``start`` seconds on, these rates apply (until the next phase)."""

    start: float
    err: float
    p95: float
    base_err: float
    base_p95: float


@dataclass(frozen=True)
class Scenario:
    name: str
    phases: tuple[Phase, ...]
    onset: float = 0.0  # when the canary's fault shows (for time-to-detect)
    #: Bursty errors: each stretch's 5xx ratio is drawn from a gamma distribution with this coefficient of
    #: variation around the phase's ratio (0: steady). Real errors cluster; the SPRT assumes they do not.
    burst_cv: float = 0.0

    def at(self, t: float) -> Phase:
        cur = self.phases[0]
        for ph in self.phases:
            if ph.start <= t:
                cur = ph
        return cur


class SimProm:
    """``take_evidence``: cumulative counts since the start, drawn stretch by stretch."""

    def __init__(self, sc: Scenario, rate: float, rng: random.Random) -> None:
        self.sc, self.rate, self.rng = sc, rate, rng
        self.t = 0.0
        self.c = [0.0] * (len(LES) + 1)  # errors, then cumulative-by-le filled at read time
        self.b = [0.0] * (len(LES) + 1)
        self._probs: dict[float, list[float]] = {}

    def _probs_for(self, p95: float) -> list[float]:
        if p95 not in self._probs:
            self._probs[p95] = bucket_probs(p95)
        return self._probs[p95]

    def _draw(self, acc: list[float], rate: float, err: float, p95: float, dt: float) -> None:
        n = 0
        for i, pr in enumerate(self._probs_for(p95)):
            k = poisson(self.rng, rate * dt * pr)
            acc[i + 1] += k
            n += k
        if self.sc.burst_cv > 0 and err > 0:
            shape = 1 / self.sc.burst_cv ** 2
            err = min(1.0, self.rng.gammavariate(shape, err / shape))
        acc[0] += min(n, poisson(self.rng, n * err))

    def prior(self, n: int = 20, step: float = 30.0) -> list[Side]:
        """The baseline's counts in each of ``n`` steps before the watch (``watch(prior=...)``)."""
        ph = self.sc.phases[0]
        out = []
        for _ in range(n):
            acc = [0.0] * (len(LES) + 1)
            self._draw(acc, self.rate * PEERS, ph.base_err, ph.base_p95, step)
            out.append(_side(acc))
        return out

    def __call__(self, elapsed: float) -> Evidence:
        while self.t < elapsed - 1e-9:
            ph = self.sc.at(self.t)
            nxt = min([elapsed] + [p.start for p in self.sc.phases if p.start > self.t])
            dt = nxt - self.t
            self._draw(self.c, self.rate, ph.err, ph.p95, dt)
            self._draw(self.b, self.rate * PEERS, ph.base_err, ph.base_p95, dt)
            self.t = nxt
        return Evidence(canary=_side(self.c), baseline=_side(self.b))


def _side(acc: list[float]) -> Side:
    cum, s = [], 0.0
    for x in acc[1:]:
        s += x
        cum.append(s)
    return Side(LES, tuple(cum), acc[0])


# --- running cells ----------------------------------------------------------------------------------


@dataclass
class Cell:
    scenario: Scenario
    rate: float
    judge: Judge
    runs: int
    seed: int
    outcomes: dict[str, int] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    detect_s: list[float] = field(default_factory=list)  # time from onset to a BREACH
    end_s: list[float] = field(default_factory=list)


def run_cell(cell: Cell) -> Cell:
    policy = Policy(judge=cell.judge, alive_interval_s=0)
    for i in range(cell.runs):
        rng = random.Random(cell.seed * 1_000_003 + i)
        clock = FakeClock(0.0)
        prom = SimProm(cell.scenario, cell.rate, rng)
        r = watch(prom, policy, clock, prior=prom.prior())
        end = r.samples[-1].at
        o = str(r.outcome)
        cell.outcomes[o] = cell.outcomes.get(o, 0) + 1
        cell.rules[r.rule] = cell.rules.get(r.rule, 0) + 1
        cell.end_s.append(end)
        if r.outcome is Outcome.BREACH:
            cell.detect_s.append(end - cell.scenario.onset)
    return cell


def sc(name: str, err: float, p95: float, base_err: float, base_p95: float, *later: Phase,
       onset: float = 0.0, burst_cv: float = 0.0) -> Scenario:
    return Scenario(name, (Phase(0.0, err, p95, base_err, base_p95), *later), onset, burst_cv)


HEALTHY = sc("healthy at 60 %: 0.3 % 5xx, p95 0.3 s; baseline the same", 0.003, 0.3, 0.003, 0.3)
BURSTY = sc("healthy at 60 %, bursty errors (each 30 s stretch's ratio gamma-distributed, CV 1)", 0.003, 0.3,
            0.003, 0.3, burst_cv=1.0)
WORSE = sc("0.4 % 5xx vs baseline 0 %", 0.004, 0.1, 0.0, 0.1)
TWICE = sc("2x SLO: 1 % 5xx (baseline 0.3 %)", 0.01, 0.1, 0.003, 0.1)
TENX = sc("10x SLO: 5 % 5xx from the start", 0.05, 0.1, 0.003, 0.1)
TENX_LATE = sc("10x SLO from minute 30", 0.003, 0.1, 0.003, 0.1, Phase(1800.0, 0.05, 0.1, 0.003, 0.1), onset=1800.0)
SLOW = sc("p95 0.75 s (1.5x SLO), baseline 0.3 s", 0.0, 0.75, 0.0, 0.3)
SLOWER = sc("p95 0.45 s vs baseline 0.2 s (under SLO, +125 %)", 0.0, 0.45, 0.0, 0.2)
INCIDENT_SHORT = sc("fleet incident: everyone 5 % 5xx, minutes 20-25", 0.003, 0.3, 0.003, 0.3,
                    Phase(1200.0, 0.05, 0.3, 0.05, 0.3), Phase(1500.0, 0.003, 0.3, 0.003, 0.3))
INCIDENT_LONG = sc("fleet incident: everyone 2 % 5xx from minute 20 on", 0.003, 0.3, 0.003, 0.3,
                   Phase(1200.0, 0.02, 0.3, 0.02, 0.3))


def first_red_grid() -> list[Scenario]:
    return [sc(f"{e:.1%}", e, 0.05, e, 0.05) for e in (0.001, 0.002, 0.003)]


def plan(quick: bool) -> list[Cell]:
    big = 300 if quick else 1000
    small = 50 if quick else 200
    cells: list[Cell] = []
    seed = 1
    for scen, runs in ((HEALTHY, big), (BURSTY, small * 2), (WORSE, small), (TWICE, small), (TENX, small), (TENX_LATE, small),
                       (SLOW, small), (SLOWER, small), (INCIDENT_SHORT, small), (INCIDENT_LONG, small)):
        for rate in RATES:
            cells.append(Cell(scen, rate, Judge.SOUND, runs, seed))
            seed += 1
    for scen in first_red_grid():
        for rate in RATES:
            cells.append(Cell(scen, rate, Judge.FIRST_RED, small, seed))
            cells.append(Cell(scen, rate, Judge.SOUND, small, seed + 1))
            seed += 2
    return cells


# --- the report --------------------------------------------------------------------------------------


def _upper95(k: int, n: int) -> float:
    """One-sided 95 % upper bound of a proportion (Clopper-Pearson, by bisection on the binomial tail)."""
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        # P(X <= k | n, mid)
        cdf, term = 0.0, (1 - mid) ** n
        for i in range(k + 1):
            cdf += term
            term *= (n - i) / (i + 1) * mid / (1 - mid) if mid < 1 else 0
        lo, hi = (mid, hi) if cdf > 0.05 else (lo, mid)
    return hi


def _share(cell: Cell, *outcomes: Outcome) -> float:
    return sum(cell.outcomes.get(str(o), 0) for o in outcomes) / cell.runs


def _t(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{q(xs, 0.5) / 60:.1f} / {q(xs, 0.9) / 60:.1f}"


def render(cells: list[Cell], seconds: float, quick: bool, load_before: float) -> str:
    """The generated block (between the ``<!-- bench:judge_sim -->`` markers of docs/benchmarks.md)."""
    by = {(c.scenario.name, c.rate, c.judge): c for c in cells}
    rb = (Outcome.BREACH, Outcome.FLEET_INCIDENT, Outcome.NODATA)
    L = []
    L.append(f"{sum(c.runs for c in cells)} simulated deploys in {seconds:.0f} s{' (--quick)' if quick else ''}; "
             f"{provenance(load_before)}.")
    L.append("")
    h = by_s(cells, HEALTHY)
    L.append(f"**False rollbacks** ({HEALTHY.name}; {h[0].runs} deploys per rate; target <= 1 %):")
    L.append("")
    L.append("| req/s | rolled back | 95 % upper bound | by rule | watch ended (median / max min) |")
    L.append("|---|---|---|---|---|")
    for c in h:
        k = sum(c.outcomes.get(str(o), 0) for o in rb)
        rules = ", ".join(f"{r} {n}" for r, n in sorted(c.rules.items()) if r not in ("pass",)) or "-"
        L.append(f"| {c.rate:g} | {k}/{c.runs} = {k / c.runs:.1%} | {_upper95(k, c.runs):.2%} | {rules} | "
                 f"{q(c.end_s, 0.5) / 60:.0f} / {max(c.end_s) / 60:.0f} |")
    L.append("")
    L.append(f"**Bursty errors** ({BURSTY.name}; baseline the same, independently; the judge allows for the "
             "baseline's dispersion, read from its 10 minutes before the watch and during it):")
    L.append("")
    L.append("| req/s | " + " | ".join(f"{r:g}" for r in RATES) + " |")
    L.append("|---|" + "---|" * len(RATES))
    L.append("| rolled back | " + " | ".join(
        f"{sum(c.outcomes.get(str(o), 0) for o in rb)}/{c.runs}" for c in by_s(cells, BURSTY)) + " |")
    L.append("")
    L.append("**Bad canaries** (share rolled back; time to detect, min median / p90):")
    L.append("")
    L.append("| scenario | " + " | ".join(f"{r:g} req/s" for r in RATES) + " |")
    L.append("|---|" + "---|" * len(RATES))
    for scen in (WORSE, TWICE, TENX, TENX_LATE, SLOW, SLOWER):
        row = []
        for c in by_s(cells, scen):
            row.append(f"{_share(c, Outcome.BREACH):.0%}; {_t(c.detect_s)}")
        L.append(f"| {scen.name} | " + " | ".join(row) + " |")
    L.append("")
    probes = []
    for scen in (TENX, TENX_LATE):
        c = next(c for c in by_s(cells, scen) if c.rate == 7)
        # probes after the first probe that sees the fault (at or after onset + 30 s)
        n = [math.ceil(d / 30 - 1e-9) for d in c.detect_s]
        within = sum(1 for k in n if k <= 2) / c.runs
        probes.append(f"{scen.name} at 7 req/s: rolled back at the probe that first sees it or the next in "
                      f"{within:.1%} of runs (median probe {q(n, 0.5):.0f}, p90 {q(n, 0.9):.0f}, max "
                      f"{max(n) if n else '-'}; target: within 2 probes)")
    c = next(c for c in by_s(cells, TWICE) if c.rate == 7)
    within = sum(1 for d in c.detect_s if d <= 600) / c.runs
    probes.append(f"{TWICE.name} at 7 req/s: rolled back within 10 minutes in {within:.1%} of runs "
                  f"(median {q(c.detect_s, 0.5) / 60:.1f} min, p95 {q(c.detect_s, 0.95) / 60:.1f} min; "
                  f"target: within 10 min)")
    for c in by_s(cells, WORSE):
        if _share(c, Outcome.BREACH) < 1:
            probes.append(f"{WORSE.name} at {c.rate:g} req/s: {1 - _share(c, Outcome.BREACH):.1%} of runs not "
                          "rolled back within the watch")
    L.extend(f"- {p}" for p in probes)
    L.append("")
    L.append("**Fleet-wide incidents** (canary no worse than the baseline; blamed = rolled back as a breach, "
             "which blocks the release):")
    L.append("")
    L.append("| scenario | " + " | ".join(f"{r:g} req/s" for r in RATES) + " |")
    L.append("|---|" + "---|" * len(RATES))
    for scen in (INCIDENT_SHORT, INCIDENT_LONG):
        row = []
        for c in by_s(cells, scen):
            row.append(f"blamed {_share(c, Outcome.BREACH):.0%}, inconclusive {_share(c, Outcome.FLEET_INCIDENT):.0%}"
                       f", green {_share(c, Outcome.GREEN):.0%}")
        L.append(f"| {scen.name} | " + " | ".join(row) + " |")
    L.append("")
    L.append("**`SLI_JUDGE=first-red` against the sound judge** (share of healthy canaries rolled back within the "
             "hour; baseline at the same rate; p95 0.05 s):")
    L.append("")
    L.append("| req/s | " + " | ".join(f"first-red {s.name}" for s in first_red_grid()) + " | "
             + " | ".join(f"sound {s.name}" for s in first_red_grid()) + " |")
    L.append("|---|" + "---|" * (2 * len(first_red_grid())))
    for rate in RATES:
        fr = [by[(s.name, rate, Judge.FIRST_RED)] for s in first_red_grid()]
        so = [by[(s.name, rate, Judge.SOUND)] for s in first_red_grid()]
        L.append(f"| {rate:g} | " + " | ".join(f"{1 - _share(c, Outcome.GREEN):.2f}" for c in fr) + " | "
                 + " | ".join(f"{1 - _share(c, Outcome.GREEN):.2f}" for c in so) + " |")
    L.append("")
    return "\n".join(L)


def by_s(cells: list[Cell], scen: Scenario) -> list[Cell]:
    return sorted((c for c in cells if c.scenario.name == scen.name and c.judge is Judge.SOUND),
                  key=lambda c: c.rate)


SECTION = """## SLI judge (simulation)

`bench/judge_sim.py` drives the real judge (`veza_canary.verdict.watch`, default policy: 1 m rate window, 30 s
probes, 1 h window, 95 % confidence) with synthetic Prometheus answers: Poisson traffic on the canary and on a
baseline of two peers (twice the canary's traffic), log-normal latencies, fixed seeds. Rates are requests/s on
the canary; times are minutes after the fault shows (median / 90th percentile). Why this judge:
[sli-judge.md](sli-judge.md).

<!-- bench:judge_sim -->
<!-- /bench:judge_sim -->
"""


def write_docs(block: str) -> None:
    """Put ``block`` between the markers (adding the section at the end when the document has none)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import update

    path = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    text = path.read_text()
    if "<!-- bench:judge_sim -->" not in text:
        text = text.rstrip("\n") + "\n\n" + SECTION
    text, _ = update(text, "judge_sim", block)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer deploys per cell (a smoke run)")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the SLI judge section of docs/benchmarks.md")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    # One line per probe would be most of the run time: the simulation logs warnings only (the pool's
    # workers are forked after this, so they inherit it).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cells = plan(args.quick)
    # The longest cells first, so the pool stays busy.
    cells.sort(key=lambda c: -c.runs * (1 if c.judge is Judge.SOUND else 0.3))
    load_before = load()
    t0 = time.monotonic()
    run: Callable[[Cell], Cell] = run_cell
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            cells = list(ex.map(run, cells))
    else:
        cells = [run(c) for c in cells]
    seconds = time.monotonic() - t0
    block = render(cells, seconds, args.quick, load_before)
    print(block)
    raw = [{"scenario": c.scenario.name, "rate": c.rate, "judge": str(c.judge), "runs": c.runs,
            "outcomes": c.outcomes, "rules": c.rules, "detect_s": c.detect_s, "end_s": c.end_s} for c in cells]
    (out_dir() / "judge_sim.json").write_text(json.dumps({"name": "judge_sim", "seconds": seconds, "cells": raw,
                                                           "markdown": block}, indent=1))
    if args.write_docs:
        write_docs(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
