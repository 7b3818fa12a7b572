#!/usr/bin/env bash
# The whole test run: static checks, unit tests, integration tests on the lab, staging acceptance.
# Under CI=true a missing component (Incus, HAProxy, Prometheus, sshd) fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
start=$(date +%s)

echo "== ruff"
$BIN/ruff check veza_canary tests

echo "== unit + integration tests"
$BIN/pytest tests -q -p no:cacheprovider "$@"

if [ -x scripts/staging-acceptance.sh ] && [ "${VEZA_SKIP_ACCEPTANCE:-0}" != 1 ]; then
  echo "== staging acceptance (lab)"
  bash scripts/staging-acceptance.sh
  $BIN/python -c "import sys, xml.etree.ElementTree as ET; r = ET.parse('reports/acceptance/junit.xml').getroot(); \
print(f\"junit: {r.get('tests')} scenarios, {r.get('failures')} failures\"); sys.exit(r.get('failures') != '0')"
fi

if [ "${VEZA_SOAK:-0}" = 1 ]; then
  echo "== soak (VEZA_SOAK=1)"
  bash scripts/soak.sh
fi

echo "== total $(( $(date +%s) - start ))s"
