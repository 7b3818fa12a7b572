"""Dropping an extension whose types and functions the old binary may use.

Anti-pattern:
    DROP EXTENSION pg_trgm;

Safe pattern:
    Keep the extension until no binary uses its functions, operators or types.

Why it breaks the old binary:
    Every type, function and operator of the extension disappears; queries of the old binary that use them fail.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropExtension(Rule):
    code = "VC108"
    name = "drop-extension"
    kinds = frozenset({"drop"})
    dialects = ("postgres",)
    obj_kinds = frozenset({"extension"})

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
