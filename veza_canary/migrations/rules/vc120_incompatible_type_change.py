"""Narrowing or incompatible column type change (ALTER COLUMN TYPE, MySQL MODIFY/CHANGE).

Anti-pattern:
    ALTER TABLE users ALTER COLUMN name TYPE varchar(20);     -- was varchar(100)
    ALTER TABLE orders ALTER COLUMN total TYPE integer;        -- was numeric(10,2)
    ALTER TABLE t MODIFY amount INT;                          -- MySQL, was BIGINT

Safe pattern:
    Widen only (varchar(50) -> varchar(100), varchar -> text, int -> bigint, numeric
    with more digits). For anything else add a new column of the new type, dual-write,
    backfill, switch reads, and drop the old column in a later release.

Why it breaks the old binary:
    Values the old binary writes no longer fit (errors on insert), values it reads
    come back in another type, or comparisons it makes change meaning. The judgement
    uses the column's type as known from the migration history; an unknown type is
    not assumed to be a widening.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import enum_values, fq
from veza_canary.migrations.typecompat import judge


@register
class IncompatibleTypeChange(Rule):
    code = "VC120"
    name = "incompatible-type-change"
    kinds = frozenset({"alter_type", "modify_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ctx.column_is_new(ch.name, ch.column):
            return
        old = ctx.column(ch.name, ch.column)
        new_type = ch.type if ch.kind == "alter_type" else (ch.column_spec.type if ch.column_spec else None)
        if old is not None and enum_values(ctx, old.type) is not None and enum_values(ctx, new_type) is not None:
            return  # one enum for another: VC140 compares their values
        v = judge(old.type if old else None, new_type, ctx.dialect)
        if v.breaking and v.kind != "enum_values_removed":
            was = f" (was {old.type})" if old is not None and old.type is not None else ""
            yield f"changes the type of {fq(ch.name, ch.column)} to {new_type}{was}: {v.reason}"
