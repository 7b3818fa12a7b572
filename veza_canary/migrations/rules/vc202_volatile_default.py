"""Adding a column with a volatile default (or a serial/identity) to an existing table (operational).

Anti-pattern:
    ALTER TABLE events ADD COLUMN token uuid DEFAULT gen_random_uuid();

Safe pattern:
    Add the column without a default (or with a constant one), set the default
    afterwards, and backfill existing rows in batches.

Why it matters:
    A volatile default is evaluated per row, so Postgres rewrites the whole table
    under an ACCESS EXCLUSIVE lock; both binaries stall until it finishes.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class VolatileDefault(Rule):
    code = "VC202"
    name = "volatile-default"
    severity = "warn"
    kinds = frozenset({"add_column"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        spec = ch.column_spec
        if spec is None or ctx.table_is_new(ch.name):
            return
        if spec.default_volatile or spec.identity in ("serial", "always", "default") or spec.generated:
            what = spec.default or spec.identity or "a generated expression"
            yield f"adds {fq(ch.name, spec.name)} with {what}: rewrites the table under an exclusive lock"
