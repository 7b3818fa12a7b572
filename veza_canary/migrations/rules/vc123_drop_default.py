"""Removing a column default (DROP DEFAULT, DROP IDENTITY, MySQL MODIFY without the DEFAULT).

Anti-pattern:
    ALTER TABLE orders ALTER COLUMN status DROP DEFAULT;
    ALTER TABLE orders MODIFY status VARCHAR(20) NOT NULL;   -- MySQL: the DEFAULT is gone

Safe pattern:
    Ship a binary that always writes the column first; drop the default in a later
    release. In MySQL, repeat the DEFAULT (and AUTO_INCREMENT) in every MODIFY/CHANGE.

Why it breaks the old binary:
    INSERTs of the old binary that omit the column relied on the default: they now
    fail on NOT NULL columns, or silently store NULL instead of the default.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropDefault(Rule):
    code = "VC123"
    name = "drop-default"
    kinds = frozenset({"drop_default", "drop_identity", "modify_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[Hit | str]:
        if ch.obj_kind == "type":
            if not ctx.is_new("type", ch.name):
                yield f"drops the default of domain {fq(ch.name)}"
            return
        if ctx.table_is_new(ch.name):
            return
        old = ctx.column(ch.name, ch.column)
        if ch.kind == "modify_column":
            spec = ch.column_spec
            if spec is None or old is None or old.type is None:
                return
            if old.identity and not spec.identity:
                yield f"drops {old.identity.replace('_', ' ').upper()} from {fq(ch.name, ch.column)}"
            elif old.default is not None and spec.default is None and not spec.identity:
                yield f"drops the DEFAULT {old.default} of {fq(ch.name, ch.column)} (MODIFY/CHANGE restates the column)"
            return
        if ctx.is_new("column", ch.name, ch.column) and (old is None or not old.not_null):
            return  # a new nullable column: the old binary never writes it
        what = "identity" if ch.kind == "drop_identity" else "default"
        table, col = ch.name, ch.column

        def given_again(schema) -> bool:  # noqa: ANN001 - a default set again later in the same file
            spec = schema.column(table, col)
            return spec is not None and spec.has_default

        yield Hit(f"drops the {what} of {fq(ch.name, ch.column)}", given_again)
