#!/usr/bin/env bash
# Soak: 30+ consecutive deploys on the local lab, good and faulty builds alternating, in one process;
# checks zero wrong verdicts and no leaked processes, file descriptors, temp files or memory.
# Not part of the fast CI path: `make soak`, or `bash scripts/soak.sh --deploys 40`.
# Writes the samples to ${SOAK_JSON:-/tmp/veza-soak.json}; exit 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
if ! $BIN/veza-canary lab env >/dev/null 2>&1; then  # no lab recorded as up: bring it up (~60 s cold)
  echo "== bringing the lab up"
  $BIN/veza-canary lab up
fi
exec $BIN/python bench/soak.py --json "${SOAK_JSON:-/tmp/veza-soak.json}" "$@"
