"""Dropping or disabling a trigger or rule the old binary may rely on (warning).

Anti-pattern:
    DROP TRIGGER set_updated_at ON orders;
    ALTER TABLE orders DISABLE TRIGGER set_updated_at;   -- and no ENABLE later in the file

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
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropTrigger(Rule):
    code = "VC208"
    name = "drop-trigger"
    severity = "warn"
    kinds = frozenset({"drop_trigger", "drop_rule", "disable_trigger"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[Hit]:
        if ch.kind == "disable_trigger":
            if ctx.table_is_new(ch.table):
                return
            which = {"ALL": "every trigger", "USER": "every user trigger"}.get(ch.value or "",
                                                                           f"trigger {ch.value}")
            table, trig = ch.table, ch.value or ""
            yield Hit(f"disables {which} on {fq(table)} and does not enable it again in this file",
                      lambda schema: not schema.trigger_disabled(table, trig))
            return
        if ctx.table_is_new(ch.table) or ctx.is_new("trigger", ch.table, ch.name[1] if ch.name else ""):
            return
        yield Hit(f"drops {ch.obj_kind} {ch.name[1] if ch.name else ''} on {fq(ch.table)}")
