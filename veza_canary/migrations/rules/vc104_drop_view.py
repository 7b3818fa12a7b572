"""Dropping a view or materialized view the old binary may query.

Anti-pattern:
    DROP VIEW active_users;

Safe pattern:
    Replace the view in place (CREATE OR REPLACE VIEW, keeping its columns), or drop and re-create it in the same migration file; drop it for good only once no binary reads it.

Why it breaks the old binary:
    Queries of the old binary that read the view fail with "relation does not exist". A drop followed by a re-creation in the same file is judged on the re-created columns instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class DropView(Rule):
    code = "VC104"
    name = "drop-view"
    kinds = frozenset({"drop"})
    obj_kinds = frozenset({"view", "materialized view"})

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
