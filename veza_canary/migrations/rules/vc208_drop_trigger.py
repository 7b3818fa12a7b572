"""Dropping a trigger or rule the old binary may rely on (warning).

Anti-pattern:
    DROP TRIGGER set_updated_at ON orders;

Safe pattern:
    Move the trigger's job into the new binary first, drop the trigger when no old
    binary runs.

Why it matters:
    Columns the trigger maintained for the old binary (updated_at, counters, audit
    rows) silently stop being maintained.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropTrigger(Rule):
    code = "VC208"
    name = "drop-trigger"
    severity = "warn"
    kinds = frozenset({"drop_trigger", "drop_rule"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ctx.table_is_new(ch.table) or ctx.is_new("trigger", ch.table, ch.name[1] if ch.name else ""):
            return
        yield f"drops {ch.obj_kind} {ch.name[1] if ch.name else ''} on {fq(ch.table)}"
