"""Dropping a function, procedure, aggregate, cast or operator the old binary may call.

Anti-pattern:
    DROP FUNCTION calc_score(int);

Safe pattern:
    Keep the old function (or a compatible wrapper) until no binary calls it; re-creating it in the same file is fine.

Why it breaks the old binary:
    The old binary's queries that call the function, or rely on the cast or operator, fail.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropFunction(Rule):
    code = "VC105"
    name = "drop-function"
    kinds = frozenset({"drop"})
    dialects = ("postgres",)
    obj_kinds = frozenset({"function", "cast", "operator"})

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
        # Re-created later in the same file: judged by the create (view columns), not as a drop.
        store = "views" if key == "view" else "functions"
        return lambda schema: qn in getattr(schema, store)
