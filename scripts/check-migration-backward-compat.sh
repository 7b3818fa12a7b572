#!/usr/bin/env bash
# Pre-deploy hook: refuse migrations that would break the old binary during a canary.
#
# Thin wrapper around `veza-canary lint-migrations`; every argument is passed through
# (e.g. --since origin/main, --dir migrations, --dialect mysql, --all, --format github).
# Uses the repo's .venv when present, else veza-canary from PATH.
#
# Exit codes (from veza-canary, unchanged):
#   0   no blocking finding (warnings allowed), or FORCE_MIGRATE=1 bypassed them
#   4   a migration would break the old binary
#   12  the linter could not read or parse its input
#   2   usage or configuration error
#   127 veza-canary is not installed
#
# FORCE_MIGRATE=1 reports the blocking findings but exits 0; only after you have split
# the migration (expand/contract) in your head.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

if [[ -x "$repo/.venv/bin/veza-canary" ]]; then
    bin="$repo/.venv/bin/veza-canary"
elif command -v veza-canary >/dev/null 2>&1; then
    bin="$(command -v veza-canary)"
else
    echo "check-migration-backward-compat: veza-canary not found (no $repo/.venv, nothing on PATH)" >&2
    exit 127
fi

case "${FORCE_MIGRATE:-}" in
    1|true|TRUE|yes|YES|on|ON)
        echo "check-migration-backward-compat: FORCE_MIGRATE is set: blocking findings will be reported but NOT enforced" >&2
        ;;
esac

exec "$bin" lint-migrations "$@"
