#!/usr/bin/env bash
# The main job on the local lab, end to end:
#   1. bring the lab up (real Incus: HAProxy, Prometheus, 3 backend-api nodes, traffic);
#   2. canary-deploy a good build through the full pipeline (canary, SLI watch, peers) -> exit 0;
#   3. canary-deploy a build that errors under traffic -> the SLI watch rolls the canary back -> exit 5.
# Re-runnable: each run builds fresh versions, so earlier blocked releases don't get in the way.
set -euo pipefail
cd "$(dirname "$0")/.."
VC=.venv/bin/veza-canary
work=$(mktemp -d /tmp/veza-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
stamp=$(date +%s)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "lab up"
$VC lab up
eval "$($VC lab env)"

good="$work/veza-api-1.1.$stamp"
bad="$work/veza-api-1.2.$stamp-erroring"
$VC lab build --version "1.1.$stamp" -o "$good" >/dev/null
$VC lab build --version "1.2.$stamp" --error-rate 0.25 -o "$bad" >/dev/null

say "deploy a good build (1.1.$stamp): canary, SLI watch, then the peers"
$VC --log-format console deploy --yes --artifact "$good" --report "$work/good.json"

say "deploy a build that answers 25% 5xx (1.2.$stamp): expect an automatic rollback (exit 5)"
set +e
ROLLBACK_BINARY="$good" $VC --log-format console deploy --yes --artifact "$bad" --report "$work/bad.json"
code=$?
set -e
if [ "$code" != 5 ]; then
  echo "demo: expected exit 5 (canary rolled back), got $code" >&2
  exit 1
fi

say "fleet now"
if $VC status --help >/dev/null 2>&1; then $VC status; fi
say "demo done: good build rolled to every node; faulty build rolled back by the SLI watch (exit 5)"
