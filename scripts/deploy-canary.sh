#!/usr/bin/env bash
# Canary-deploy ARTIFACT to the fleet: the runbook's entry point, kept for muscle memory.
# All knobs are the runbook's env vars (ARTIFACT, ROLLBACK_BINARY, CANARY_NODE, PEER_NODES, POOL_BACKEND,
# SLI_WINDOW, SLI_PROBE_INTERVAL, PROM_URL, PROM_P95_THRESHOLD_S, PROM_ERR_RATE_THRESHOLD, FORCE_MIGRATE, ...);
# `veza-canary deploy --help` lists every one with its default. Extra arguments are passed through
# (e.g. --dry-run, --yes, --report PATH), and so are the words of $DEPLOY_ARGS (`make deploy-canary` sets it):
# split on blanks only, never evaluated by a shell. Exit codes: see README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
extra=()
if [ -n "${DEPLOY_ARGS:-}" ]; then
  read -r -a extra <<< "$DEPLOY_ARGS"
fi
if [ -x "$here/.venv/bin/veza-canary" ]; then
  exec "$here/.venv/bin/veza-canary" deploy "${extra[@]}" "$@"
fi
exec veza-canary deploy "${extra[@]}" "$@"
