"""Dropping a column that the old binary may read or write.

Anti-pattern:
    ALTER TABLE users DROP COLUMN email;

Safe pattern:
    Expand/contract: ship a binary that no longer reads or writes the column,
    let it run everywhere, and drop the column in a later release.

Why it breaks the old binary:
    The old binary's SELECT, INSERT and UPDATE statements still name the column;
    they fail with "column does not exist" the moment the migration commits.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropColumn(Rule):
    code = "VC101"
    name = "drop-column"
    kinds = frozenset({"drop_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[Hit]:
        if ctx.column_is_new(ch.name, ch.column):
            return
        old = ctx.column(ch.name, ch.column)
        table, col = ch.name, ch.column

        def added_back(schema) -> bool:  # noqa: ANN001 - the same column, same type, added again in the file
            new = schema.column(table, col)
            if old is None or old.type is None or new is None or new.type != old.type:
                return False
            return not new.not_null or new.has_default  # the old binary's inserts still work

        yield Hit(f"drops column {fq(ch.name, ch.column)}", added_back)
