"""Adding a NOT NULL column without a DEFAULT to an existing table.

Anti-pattern:
    ALTER TABLE users ADD COLUMN tenant_id bigint NOT NULL;

Safe pattern:
    Add the column nullable (or NOT NULL with a DEFAULT), let the new binary fill it,
    backfill, and add NOT NULL in a later release once no binary omits the column.

Why it breaks the old binary:
    The old binary does not know the column, so its INSERTs omit it and fail with a
    not-null violation. (On a table created in the same set of migrations this is fine.)
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class AddColumnNotNullWithoutDefault(Rule):
    code = "VC121"
    name = "add-column-not-null-without-default"
    kinds = frozenset({"add_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        spec = ch.column_spec
        if spec is None or ctx.table_is_new(ch.name):
            return
        if spec.not_null and not spec.has_default and not any(c.kind == "pk" for c in spec.constraints):
            yield f"adds NOT NULL column {fq(ch.name, spec.name)} without a DEFAULT"
