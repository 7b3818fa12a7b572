"""Creating or dropping an index on an existing table without CONCURRENTLY (operational).

Anti-pattern:
    CREATE INDEX orders_user_idx ON orders (user_id);
    DROP INDEX orders_user_idx;

Safe pattern:
    CREATE INDEX CONCURRENTLY / DROP INDEX CONCURRENTLY, in a migration file of its
    own (CONCURRENTLY cannot run inside a transaction block).

Why it matters:
    A plain CREATE INDEX blocks writes to the table for the whole build, and DROP
    INDEX takes an ACCESS EXCLUSIVE lock: both binaries stall. It does not change
    what the old binary can do, so it is a warning, not a compat break.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class IndexWithoutConcurrently(Rule):
    code = "VC201"
    name = "index-without-concurrently"
    severity = "warn"
    kinds = frozenset({"create_index", "drop"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.concurrently:
            return
        if ch.kind == "create_index":
            if not ctx.table_is_new(ch.table) and ch.obj_kind == "index":
                yield f"builds an index on {fq(ch.table)} without CONCURRENTLY: writes are blocked meanwhile"
            return
        if ch.obj_kind != "index":
            return
        for qn in ch.names:
            idx = ctx.schema.indexes.get(qn)
            if ctx.is_new("index", qn) or (idx is not None and ctx.table_is_new(idx.table)):
                continue
            yield f"drops index {fq(qn)} without CONCURRENTLY: takes an ACCESS EXCLUSIVE lock"
