#!/usr/bin/env bash
# Sets up a fresh machine for veza-canary: Debian packages (as root) and the project venv.
# Idempotent: a second run only checks. Used by `make install`, `make test`, `make demo` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  bash scripts/install-system-deps.sh
else
  echo "bootstrap: not root; skipping Debian packages (the lab and integration tests need root)" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.veza-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import veza_canary" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -v -e '^WARNING: Location' -e 'is ignored' || true
  .venv/bin/python -c "import veza_canary, typer, paramiko, httpx, sqlglot, tenacity, structlog, pytest"
  echo "$want" > "$stamp"
fi
# The package is installed editable, so pip never byte-compiles it, and where
# PYTHONDONTWRITEBYTECODE is set (CI images often do) Python never caches it either:
# every run would compile ~60 modules from source (~40 ms, a tenth of a cold lint).
# Compiling here is idempotent and cheap; stale files are simply recompiled.
.venv/bin/python -m compileall -q veza_canary >/dev/null
