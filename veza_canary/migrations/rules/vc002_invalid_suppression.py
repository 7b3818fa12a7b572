"""A suppression comment without a reason, or naming no known rule.

Anti-pattern:
    -- veza-canary: allow drop-column
    ALTER TABLE users DROP COLUMN legacy_flag;

Safe pattern:
    Say which rule and why the old binary is not affected:
    ``-- veza-canary: allow drop-column because legacy_flag is unused since v1.8``.

Why it breaks the old binary:
    A suppression is a promise that someone checked the old binary. Without a
    reason nobody can review that promise, so it suppresses nothing and is itself
    reported.
"""

from __future__ import annotations

from veza_canary.migrations.rules import Rule, register


@register
class InvalidSuppression(Rule):
    code = "VC002"
    name = "invalid-suppression"
    # Reported by the engine while reading directives, not from schema changes.
