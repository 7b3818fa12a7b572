"""Dropping a function, procedure, aggregate, cast or operator the old binary may call.

Anti-pattern:
    DROP FUNCTION calc_score(int);

Safe pattern:
    Keep the old function (or a compatible wrapper) until no binary calls it; re-creating it in the same file is fine.

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

    def cancel(self, key: str, qn):  # noqa: ANN001, ANN201
        # Re-created later in the same file: judged by the create (view columns), not as a drop.
        store = "views" if key == "view" else "functions"
        return lambda schema: qn in getattr(schema, store)
