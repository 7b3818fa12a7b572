"""Replacing a view (or re-creating it in the same file) without all of its old columns.

Anti-pattern:
    CREATE OR REPLACE VIEW active_users AS SELECT id, email FROM users;   -- 'name' is gone

Safe pattern:
    Keep every column the view had, with the same names; add new columns at the end.

Why it breaks the old binary:
    The old binary selects the view's columns by name; a missing or renamed column
    makes its queries fail.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class ViewColumnsChanged(Rule):
    code = "VC152"
    name = "view-columns-changed"
    kinds = frozenset({"create_view"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        sch = ctx.schema
        if ctx.is_new("view", ch.name):
            return
        before = sch.pre_file(("view", ch.name), sch.views.get(ch.name))  # type: ignore[arg-type]
        if before is None:
            return
        new_cols = sch.expand_view_columns(ch)
        if before.columns is None or new_cols is None:
            yield f"replaces view {fq(ch.name)} but its columns cannot be determined, so they cannot be compared"
            return
        missing = [c for c in before.columns if c not in new_cols]
        if missing:
            yield f"replaces view {fq(ch.name)} without column(s) {', '.join(dict.fromkeys(missing))}"
