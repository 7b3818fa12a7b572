"""Making an existing column NOT NULL (SET NOT NULL, MySQL MODIFY ... NOT NULL, domains).

Anti-pattern:
    ALTER TABLE users ALTER COLUMN phone SET NOT NULL;

Safe pattern:
    Ship a binary that always writes the column, backfill, and only then add
    NOT NULL (a CHECK (phone IS NOT NULL) NOT VALID + VALIDATE keeps the lock short).

Why it breaks the old binary:
    The old binary may insert rows without the column or set it to NULL; those
    writes now fail with a not-null violation.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class SetNotNull(Rule):
    code = "VC122"
    name = "set-not-null"
    kinds = frozenset({"set_not_null", "modify_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.obj_kind == "type":
            if not ctx.is_new("type", ch.name):
                yield f"makes domain {fq(ch.name)} NOT NULL"
            return
        if ctx.table_is_new(ch.name):
            return
        old = ctx.column(ch.name, ch.column)
        if ch.kind == "modify_column":
            spec = ch.column_spec
            if spec is None or not spec.not_null or old is None or old.type is None or old.not_null:
                return  # unknown old column: VC120 already fails closed
            if ctx.is_new("column", ch.name, ch.column) and old.has_default:
                return
            yield f"makes {fq(ch.name, ch.column)} NOT NULL (it was nullable)"
            return
        if ctx.is_new("column", ch.name, ch.column) and old is not None and old.has_default:
            return  # the old binary never writes a new column; the default fills it
        if old is not None and old.not_null:
            return  # already NOT NULL: a no-op
        yield f"makes {fq(ch.name, ch.column)} NOT NULL"
