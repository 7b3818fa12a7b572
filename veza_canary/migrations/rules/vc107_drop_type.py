"""Dropping a type or domain the old binary may use.

Anti-pattern:
    DROP TYPE order_status;

Safe pattern:
    Migrate columns and casts off the type in one release; drop the type in a later one.

Why it breaks the old binary:
    Casts such as 'paid'::order_status in the old binary's queries fail, and CASCADE also drops the columns that use the type.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropType(Rule):
    code = "VC107"
    name = "drop-type"
    kinds = frozenset({"drop"})
    dialects = ("postgres",)
    obj_kinds = frozenset({"type"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[Hit]:
        if ch.obj_kind not in self.obj_kinds:
            return
        if not ch.names:
            yield Hit(f"drops a {ch.obj_kind} the old binary may depend on")
        for qn in ch.names:
            key = "view" if ch.obj_kind == "materialized view" else ch.obj_kind
            if ctx.is_new(key, qn):
                continue
            yield Hit(f"drops {ch.obj_kind} {fq(qn)}", self.cancel(key, qn))

    def cancel(self, key: str, qn):  # noqa: ANN001, ANN201
        return None
