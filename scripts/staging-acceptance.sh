#!/usr/bin/env bash
# The staging acceptance job: 2 normal deploys, 1 deliberate rollback (health 500), 1 SLI-breach rollback.
# Against the local lab by default (brought up if needed); against real staging when STAGING=1 and the
# runbook's env (PROM_URL, LB_URL, CANARY_NODE, PEER_NODES, ...) plus BUILD_NEXT, BUILD_BAD, BUILD_NEXT2,
# BUILD_SLO are set. Short SLI timings are explicit flags of this job, never deploy's defaults.
# Output: reports/acceptance/*.json (one deploy report per scenario) and reports/acceptance/junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
VC=.venv/bin/veza-canary
out=${ACCEPTANCE_DIR:-reports/acceptance}
mkdir -p "$out"
if [ "${STAGING:-0}" = 1 ]; then
  exec $VC acceptance --junit "$out/junit.xml" --reports-dir "$out" \
    --build-next "$BUILD_NEXT" --build-bad "$BUILD_BAD" --build-next2 "$BUILD_NEXT2" --build-slo "$BUILD_SLO" \
    --sli-window "${ACCEPTANCE_SLI_WINDOW:-300}" --sli-probe-interval "${ACCEPTANCE_SLI_PROBE_INTERVAL:-10}"
fi
$VC lab up
eval "$($VC lab env)"
exec $VC acceptance --junit "$out/junit.xml" --reports-dir "$out" \
  --sli-window "${ACCEPTANCE_SLI_WINDOW:-9}" --sli-probe-interval "${ACCEPTANCE_SLI_PROBE_INTERVAL:-3}"
