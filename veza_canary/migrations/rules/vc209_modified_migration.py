"""An already-merged migration file was edited (warning).

Anti-pattern:
    Changing migrations/000042_add_orders.up.sql after it was merged to main.

Safe pattern:
    Never edit an applied migration; add a new one that makes the change.

Why it matters:
    golang-migrate records versions, not contents: databases that already ran the
    file never see the edit, so environments drift apart silently. The edited file
    is still used as history for the new ones.
"""

from __future__ import annotations

from veza_canary.migrations.rules import Rule, register


@register
class ModifiedMigration(Rule):
    code = "VC209"
    name = "modified-migration"
    severity = "warn"
    # Reported by the engine from git, not from schema changes.
