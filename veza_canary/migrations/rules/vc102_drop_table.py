"""Dropping a table the old binary may use.

Anti-pattern:
    DROP TABLE sessions;

Safe pattern:
    Stop using the table in one release (expand/contract), drop it in a later one.

Why it breaks the old binary:
    Every query of the old binary that touches the table fails with "relation does not exist".
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropTable(Rule):
    code = "VC102"
    name = "drop-table"
    kinds = frozenset({"drop"})
    obj_kinds = frozenset({"table"})

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
