"""A new UNIQUE constraint, unique index or exclusion constraint on an existing table.

Anti-pattern:
    ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
    CREATE UNIQUE INDEX CONCURRENTLY users_email_idx ON users (email);

Safe pattern:
    Make the new binary avoid duplicates first (and clean existing ones), then add
    the constraint in a later release. A unique constraint on a brand-new column that
    the old binary leaves NULL is fine. CONCURRENTLY only changes locking.

Why it breaks the old binary:
    The old binary may write duplicate values it has always been allowed to write;
    those INSERTs and UPDATEs now fail with a unique violation.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import constraints_added, fq, had_unique, old_binary_writes_null


@register
class AddUnique(Rule):
    code = "VC130"
    name = "add-unique"
    kinds = frozenset({"add_constraint", "add_column", "create_index"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        table = ch.table if ch.kind == "create_index" else ch.name
        if ch.obj_kind == "type" or ctx.table_is_new(table):
            return
        view = ctx.schema.views.get(table) if table is not None else None
        if ch.kind == "create_index" and (ctx.is_new("view", table) or (view is not None and view.materialized)):
            return  # an index on a materialized view: the old binary never writes one
        for c, inline in constraints_added(ch, {"unique", "exclude"}):
            if old_binary_writes_null(ctx, table, c.columns, inline):
                continue
            if c.kind == "unique" and had_unique(ctx, table, c.columns):
                continue  # same uniqueness existed before this file (re-created)
            if c.using_index:
                continue  # the unique index was judged when it was created
            what = "exclusion constraint" if c.kind == "exclude" else (
                "unique index" if ch.kind == "create_index" else "UNIQUE constraint")
            yield f"adds a {what} on {fq(table)} ({', '.join(dict.fromkeys(c.columns))})"
