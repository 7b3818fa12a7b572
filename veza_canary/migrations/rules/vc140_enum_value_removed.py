"""Renaming or removing an enum value (ALTER TYPE ... RENAME VALUE, MySQL ENUM/SET losing values).

Anti-pattern:
    ALTER TYPE order_status RENAME VALUE 'cancelled' TO 'canceled';
    ALTER TABLE orders MODIFY status ENUM('new', 'paid');   -- MySQL, 'cancelled' removed

Safe pattern:
    Add the new value (ALTER TYPE ... ADD VALUE), make the new binary write it and
    migrate rows; remove the old value only when no binary writes or reads it.

Why it breaks the old binary:
    The old binary still writes and compares the old value: writes fail with
    "invalid input value for enum" (MySQL may store '' instead) and reads stop matching.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import enum_values, fq
from veza_canary.migrations.typecompat import judge


@register
class EnumValueRemoved(Rule):
    code = "VC140"
    name = "enum-value-removed"
    kinds = frozenset({"enum_rename_value", "alter_type", "modify_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.kind == "enum_rename_value":
            if ctx.is_new("type", ch.name) or ctx.is_new("enum_value", ch.name, ch.value):
                return
            yield f"renames value {ch.value!r} of enum {fq(ch.name)} to {ch.new_value!r}"
            return
        if ctx.column_is_new(ch.name, ch.column):
            return
        old = ctx.column(ch.name, ch.column)
        new_type = ch.type if ch.kind == "alter_type" else (ch.column_spec.type if ch.column_spec else None)
        if old is None or old.type is None:
            return
        old_vals, new_vals = enum_values(ctx, old.type), enum_values(ctx, new_type)
        if old_vals is not None and new_vals is not None:  # an enum swapped for another (often under its name)
            gone = [v for v in old_vals if v not in new_vals]
            if gone:
                yield (f"{fq(ch.name, ch.column)}: changes its enum from {old.type} to {new_type}, which lacks "
                       f"{', '.join(repr(v) for v in gone)}: the old binary's writes of those values fail")
            return
        v = judge(old.type, new_type, ctx.dialect)
        if v.kind == "enum_values_removed":
            yield f"{fq(ch.name, ch.column)}: {v.reason}"
