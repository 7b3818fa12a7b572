"""VALIDATE CONSTRAINT on an existing table (operational).

Anti-pattern:
    ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;   -- in the same file as ADD ... NOT VALID

Safe pattern:
    Run VALIDATE CONSTRAINT in its own migration, outside busy hours; it takes a
    SHARE UPDATE EXCLUSIVE lock and scans the table (and the referenced table).

Why it matters:
    The scan can take long on big tables and, run in the same transaction as the
    ADD CONSTRAINT, holds the stronger lock for the whole scan. Enforcement of new
    writes already started with the ADD, so this is a warning.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class ValidateConstraint(Rule):
    code = "VC203"
    name = "validate-constraint"
    severity = "warn"
    kinds = frozenset({"validate_constraint"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.obj_kind == "table" and ctx.table_is_new(ch.name):
            return
        yield f"validates constraint {ch.value} on {fq(ch.name)}: scans the table"
