#!/usr/bin/env bash
# `make bench`: every benchmark that can run on this machine, then the figures into docs/benchmarks.md.
#
#   BENCH_OUT=/tmp/veza-bench   where the JSON results go (outside the repository)
#   BENCH_QUICK=1               fewer runs (a smoke test of the scripts, not figures to publish)
#   BENCH_NO_DOCS=1             do not touch docs/benchmarks.md
#   BENCH_SKIP="lint lab"       skip parts: lint, judge, startup, scale, lab
#
# The lab parts (orchestration overhead, time to rollback) need root and the local lab
# (`veza-canary lab up`; brought up if needed). They hold the lab exclusively (exclusive_lab)
# and put it back to its baseline afterwards. Everything else runs anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export BENCH_OUT="${BENCH_OUT:-/tmp/veza-bench}"
mkdir -p "$BENCH_OUT"
SKIP=" ${BENCH_SKIP:-} "
if [ -n "${BENCH_QUICK:-}" ]; then
  LINT_RUNS=2 START_RUNS=3 SCALE=(--runs 1 --sizes 10,100) ORCH_RUNS=1 RB_RUNS=1
else
  LINT_RUNS=9 START_RUNS=15 SCALE=(--runs 5) ORCH_RUNS=5 RB_RUNS=3
fi
skip() { [[ "$SKIP" == *" $1 "* ]]; }
say() { printf '\n== %s ==\n' "$*"; }
say "machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); results in $BENCH_OUT"

if ! skip lint; then
  say "migration lint vs squawk-cli (bench/lint_bench.py)"
  [ -x .venv/bin/squawk ] || .venv/bin/pip install -q 'squawk-cli>=1.0'   # the `bench` extra
  CORPUS="${BENCH_CORPUS:-/tmp/veza-lint-corpus}"
  if [ "$(find "$CORPUS" -maxdepth 1 -name '*.up.sql' 2>/dev/null | wc -l)" -ne 2000 ]; then
    rm -rf "$CORPUS" && $PY bench/gen_corpus.py "$CORPUS" --files 2000
  fi
  $PY bench/lint_bench.py "$CORPUS" --runs "$LINT_RUNS" | tee "$BENCH_OUT/lint.md"
fi

if ! skip judge; then
  say "SLI judge simulation (bench/judge_sim.py)"
  if [ -n "${BENCH_QUICK:-}" ]; then $PY bench/judge_sim.py --quick; else $PY bench/judge_sim.py; fi
fi

if ! skip startup; then
  say "start-up (bench/startup.py)"
  $PY bench/startup.py --runs "$START_RUNS"
fi

if ! skip scale; then
  say "fleet scale on the simulator (bench/fleet_scale.py)"
  $PY bench/fleet_scale.py "${SCALE[@]}"
fi

if ! skip lab; then
  if [ "$(id -u)" -ne 0 ]; then
    say "lab parts skipped: they need root (orchestration overhead, time to rollback)"
  else
    say "orchestration overhead per node on the lab (bench/orchestration.py)"
    $PY bench/orchestration.py --runs "$ORCH_RUNS" --poll-interval 0.5
    $PY bench/orchestration.py --runs "$ORCH_RUNS" --poll-interval 0.1 --quiet-wait 0
    say "time to rollback on the lab (bench/rollback_time.py)"
    $PY bench/rollback_time.py --runs "$RB_RUNS"
  fi
fi

if [ -z "${BENCH_NO_DOCS:-}" ] && [ -z "${BENCH_QUICK:-}" ]; then
  say "docs/benchmarks.md"
  $PY bench/report.py
fi
