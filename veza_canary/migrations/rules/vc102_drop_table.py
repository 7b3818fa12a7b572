"""Dropping a table the old binary may use.

Anti-pattern:
    DROP TABLE sessions;

Safe pattern:
    Stop using the table in one release (expand/contract), drop it in a later one.

Why it breaks the old binary:
    Every query of the old binary that touches the table fails with "relation does not exist".
"""

from __future__ import annotations

from veza_canary.migrations.rules import register
from veza_canary.migrations.rules._helpers import DropObjectRule


@register
class DropTable(DropObjectRule):
    code = "VC102"
    name = "drop-table"
    obj_kinds = frozenset({"table"})
