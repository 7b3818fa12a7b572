"""Adding a PRIMARY KEY to an existing table.

Anti-pattern:
    ALTER TABLE audit_log ADD PRIMARY KEY (id);

Safe pattern:
    Make sure the old binary already writes unique, non-null values (or add an
    identity/serial column, which fills itself), then add the key.

Why it breaks the old binary:
    A primary key makes its columns NOT NULL and unique: INSERTs of the old binary
    with duplicates or NULLs in those columns now fail.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change, ColumnSpec
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import constraints_added, fq, had_unique, was_not_null_and_unique


@register
class AddPrimaryKey(Rule):
    code = "VC131"
    name = "add-primary-key"
    kinds = frozenset({"add_constraint", "add_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ctx.table_is_new(ch.name):
            return
        for c, inline in constraints_added(ch, {"pk"}):
            if c.columns and all(self._self_filling(ch, ctx, col, inline) for col in c.columns):
                continue  # new identity/serial columns fill themselves
            if had_unique(ctx, ch.name, c.columns, pk=True):
                continue
            if was_not_null_and_unique(ctx, ch.name, c.columns):
                continue  # the columns were NOT NULL and UNIQUE already: the key adds no restriction
            yield f"adds a PRIMARY KEY on {fq(ch.name)} ({', '.join(dict.fromkeys(c.columns)) or 'index'})"

    @staticmethod
    def _self_filling(ch: Change, ctx: RuleContext, col: str, inline: ColumnSpec | None) -> bool:
        if inline is not None and inline.name == col:
            return bool(inline.identity)
        spec = ctx.column(ch.name, col)
        return ctx.is_new("column", ch.name, col) and spec is not None and bool(spec.identity)
