"""Renaming a table the old binary uses (ALTER TABLE ... RENAME TO, MySQL RENAME TABLE).

Anti-pattern:
    ALTER TABLE accounts RENAME TO customers;

Safe pattern:
    Create the new table (or an updatable view with the new name), move readers and
    writers over in one release, and drop the old name in a later one.

Why it breaks the old binary:
    Every query of the old binary on the old name fails with "relation does not exist".
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class RenameTable(Rule):
    code = "VC111"
    name = "rename-table"
    kinds = frozenset({"rename"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.obj_kind == "table" and not ctx.table_is_new(ch.name):
            yield f"renames table {fq(ch.name)} to {ch.new_name}"
