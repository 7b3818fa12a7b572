"""A new CHECK constraint on an existing table or domain (NOT VALID included).

Anti-pattern:
    ALTER TABLE orders ADD CONSTRAINT total_positive CHECK (total > 0) NOT VALID;

Safe pattern:
    Ship a binary that never writes violating rows first, then add the constraint
    (NOT VALID + VALIDATE CONSTRAINT keeps the lock short). A CHECK only on brand-new
    columns, NULL when the old binary writes, is fine.

Why it breaks the old binary:
    NOT VALID skips the check of existing rows only; new INSERTs and UPDATEs are
    checked at once, so writes of the old binary that violate it fail.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import constraints_added, fq, old_binary_writes_null


@register
class AddCheck(Rule):
    code = "VC132"
    name = "add-check"
    kinds = frozenset({"add_constraint", "add_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.obj_kind == "type":
            if ch.constraint is not None and ch.constraint.kind == "check" and not ctx.is_new("type", ch.name):
                yield f"adds a CHECK constraint to domain {fq(ch.name)}"
            return
        if ctx.table_is_new(ch.name):
            return
        for c, inline in constraints_added(ch, {"check"}):
            if c.null_propagating and old_binary_writes_null(ctx, ch.name, c.columns, inline):
                continue
            nv = " (NOT VALID still checks new writes)" if c.not_valid else ""
            yield f"adds a CHECK constraint on {fq(ch.name)} ({', '.join(dict.fromkeys(c.columns))}){nv}"
