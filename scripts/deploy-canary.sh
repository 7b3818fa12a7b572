#!/usr/bin/env bash
# Canary-deploy ARTIFACT to the fleet: the runbook's entry point, kept for muscle memory.
# All knobs are the runbook's env vars (ARTIFACT, ROLLBACK_BINARY, CANARY_NODE, PEER_NODES, POOL_BACKEND,
# SLI_WINDOW, SLI_PROBE_INTERVAL, PROM_URL, PROM_P95_THRESHOLD_S, PROM_ERR_RATE_THRESHOLD, FORCE_MIGRATE, ...);
# `veza-canary deploy --help` lists every one with its default. Extra arguments are passed through
# (e.g. --dry-run, --yes, --report PATH). Exit codes: see README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$here/.venv/bin/veza-canary" ]; then
  exec "$here/.venv/bin/veza-canary" deploy "$@"
fi
exec veza-canary deploy "$@"
