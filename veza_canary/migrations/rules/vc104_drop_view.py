"""Dropping a view or materialized view the old binary may query.

Anti-pattern:
    DROP VIEW active_users;

Safe pattern:
    Replace the view in place (CREATE OR REPLACE VIEW, keeping its columns), or drop and re-create it in the same migration file; drop it for good only once no binary reads it.

Why it breaks the old binary:
    Queries of the old binary that read the view fail with "relation does not exist". A drop followed by a re-creation in the same file is judged on the re-created columns instead.
"""

from __future__ import annotations

from veza_canary.migrations.rules import register
from veza_canary.migrations.rules._helpers import DropObjectRule


@register
class DropView(DropObjectRule):
    code = "VC104"
    name = "drop-view"
    obj_kinds = frozenset({"view", "materialized view"})

    def cancel(self, key: str, qn):  # noqa: ANN001, ANN201
        # Re-created later in the same file: judged by the create (view columns), not as a drop.
        store = "views" if key == "view" else "functions"
        return lambda schema: qn in getattr(schema, store)
