"""Dropping a function, procedure, aggregate, cast or operator the old binary may call.

Anti-pattern:
    DROP FUNCTION calc_score(int);

Safe pattern:
    Keep the old function (or a compatible wrapper) until no binary calls it; re-creating it in the same file is fine.
    A trigger function (RETURNS trigger) whose triggers are gone (dropped, or their tables dropped) is
    called by nobody: dropping it passes; losing the triggers is judged by VC208.

Why it breaks the old binary:
    The old binary's queries that call the function, or rely on the cast or operator, fail.
"""

from __future__ import annotations

from veza_canary.migrations.rules import register
from veza_canary.migrations.rules._helpers import DropObjectRule


@register
class DropFunction(DropObjectRule):
    code = "VC105"
    name = "drop-function"
    dialects = ("postgres",)
    obj_kinds = frozenset({"function", "cast", "operator"})

    def skip(self, qn, ctx) -> bool:  # noqa: ANN001
        sch = ctx.schema
        if sch.function_info.get(qn, {}).get("returns") != "trigger" or qn not in sch.trigger_functions:
            return False
        return not any(fn == qn and table in sch.tables for (table, _t), fn in sch.triggers.items())

    def cancel(self, key: str, qn):  # noqa: ANN001, ANN201
        # Re-created later in the same file: judged by the create (view columns), not as a drop.
        store = "views" if key == "view" else "functions"
        return lambda schema: qn in getattr(schema, store)
