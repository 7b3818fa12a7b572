"""Renaming a column of a table or view the old binary uses (including MySQL CHANGE COLUMN).

Anti-pattern:
    ALTER TABLE users RENAME COLUMN name TO full_name;
    ALTER TABLE users CHANGE COLUMN name full_name VARCHAR(100);   -- MySQL

Safe pattern:
    Add the new column, write both from the new binary and backfill, switch reads,
    and drop the old column in a later release (or expose the new name through a view).

Why it breaks the old binary:
    The old binary's queries still use the old name and fail with "column does not exist".
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class RenameColumn(Rule):
    code = "VC110"
    name = "rename-column"
    kinds = frozenset({"rename_column", "modify_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.kind == "modify_column" and ch.column == ch.new_name:
            return
        if ch.obj_kind in ("view", "materialized view"):
            if ctx.is_new("view", ch.name):
                return
        elif ctx.column_is_new(ch.name, ch.column):
            return
        yield f"renames column {fq(ch.name, ch.column)} to {ch.new_name}"
