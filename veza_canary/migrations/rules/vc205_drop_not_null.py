"""Dropping NOT NULL from a column the old binary reads (warning).

Anti-pattern:
    ALTER TABLE users ALTER COLUMN email DROP NOT NULL;

Safe pattern:
    Fine for the old binary's writes; make sure it can read NULLs (nullable types in
    the scan target) before the new binary starts writing them.

Why it matters:
    The old binary's writes keep working, but once the new binary stores NULLs,
    old code that scans the column into a non-nullable value fails on those rows.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropNotNull(Rule):
    code = "VC205"
    name = "drop-not-null"
    severity = "warn"
    kinds = frozenset({"drop_not_null", "modify_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.obj_kind != "table" or ctx.column_is_new(ch.name, ch.column):
            return
        if ch.kind == "modify_column":
            old = ctx.column(ch.name, ch.column)
            if old is None or not old.not_null or ch.column_spec is None or ch.column_spec.not_null:
                return
        yield f"makes {fq(ch.name, ch.column)} nullable: the old binary may not expect NULLs"
