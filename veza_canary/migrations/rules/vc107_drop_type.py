"""Dropping a type or domain the old binary may use.

Anti-pattern:
    DROP TYPE order_status;

Safe pattern:
    Migrate columns and casts off the type in one release; drop the type in a later one.

Why it breaks the old binary:
    Casts such as 'paid'::order_status in the old binary's queries fail, and CASCADE also drops the columns that use the type.
"""

from __future__ import annotations

from veza_canary.migrations.rules import register
from veza_canary.migrations.rules._helpers import DropObjectRule


@register
class DropType(DropObjectRule):
    code = "VC107"
    name = "drop-type"
    dialects = ("postgres",)
    obj_kinds = frozenset({"type"})
