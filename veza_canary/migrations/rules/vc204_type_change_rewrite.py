"""A compatible type change that still rewrites the table (operational).

Anti-pattern:
    ALTER TABLE events ALTER COLUMN id TYPE bigint;   -- was integer

Safe pattern:
    For big tables: add a bigint column, backfill in batches, swap in a short
    transaction. Changes that need no rewrite: varchar(n) -> varchar(m > n), varchar -> text,
    numeric precision increase with the same scale.

Why it matters:
    The rewrite holds an ACCESS EXCLUSIVE lock for the time it takes to copy the
    table and rebuild its indexes; both binaries stall.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq
from veza_canary.migrations.typecompat import judge


@register
class TypeChangeRewrite(Rule):
    code = "VC204"
    name = "type-change-rewrite"
    severity = "warn"
    kinds = frozenset({"alter_type"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ctx.column_is_new(ch.name, ch.column):
            return
        old = ctx.column(ch.name, ch.column)
        if old is None or old.type is None:
            return
        v = judge(old.type, ch.type, ctx.dialect)
        if v.kind == "widening" and v.rewrite:
            yield f"{fq(ch.name, ch.column)}: {old.type} -> {ch.type} rewrites the table"
