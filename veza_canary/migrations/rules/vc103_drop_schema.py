"""Dropping a schema (and everything in it) the old binary may use.

Anti-pattern:
    DROP SCHEMA reporting CASCADE;

Safe pattern:
    Move the old binary off every object of the schema first; drop the schema in a later release.

Why it breaks the old binary:
    All tables, views, functions and types of the schema disappear at once; the old binary's queries on them fail.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropSchema(Rule):
    code = "VC103"
    name = "drop-schema"
    kinds = frozenset({"drop"})
    dialects = ("postgres",)
    obj_kinds = frozenset({"schema"})

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
