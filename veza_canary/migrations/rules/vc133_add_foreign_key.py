"""A new FOREIGN KEY on an existing table (NOT VALID included).

Anti-pattern:
    ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;

Safe pattern:
    Make the new binary write only valid references and clean up orphans, then add
    the key. A foreign key on a brand-new column that the old binary leaves NULL is fine.

Why it breaks the old binary:
    Writes of the old binary with references that do not exist (orphans it has
    always been allowed to write) now fail; NOT VALID skips only existing rows.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import (
    constraints_added,
    fq,
    had_foreign_key,
    old_binary_writes_null,
)


@register
class AddForeignKey(Rule):
    code = "VC133"
    name = "add-foreign-key"
    kinds = frozenset({"add_constraint", "add_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ctx.table_is_new(ch.name):
            return
        for c, inline in constraints_added(ch, {"fk"}):
            if old_binary_writes_null(ctx, ch.name, c.columns, inline):
                continue
            if had_foreign_key(ctx, ch.name, c.columns, c.ref_table):
                continue  # the same reference existed before this file (re-created, e.g. with ON DELETE CASCADE)
            ref = f" -> {fq(c.ref_table)}" if c.ref_table else ""
            yield f"adds a FOREIGN KEY on {fq(ch.name)} ({', '.join(dict.fromkeys(c.columns))}){ref}"
