"""Dropping a sequence the old binary may use.

Anti-pattern:
    DROP SEQUENCE invoice_number_seq;

Safe pattern:
    Stop using the sequence (nextval, column defaults) in one release; drop it in a later one.

Why it breaks the old binary:
    Calls to nextval() and column defaults that use the sequence fail, so inserts of the old binary fail.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropSequence(Rule):
    code = "VC106"
    name = "drop-sequence"
    kinds = frozenset({"drop"})
    dialects = ("postgres",)
    obj_kinds = frozenset({"sequence"})

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
