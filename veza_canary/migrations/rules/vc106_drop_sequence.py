"""Dropping a sequence the old binary may use.

Anti-pattern:
    DROP SEQUENCE invoice_number_seq;

Safe pattern:
    Stop using the sequence (nextval, column defaults) in one release; drop it in a later one.

Why it breaks the old binary:
    Calls to nextval() and column defaults that use the sequence fail, so inserts of the old binary fail.
"""

from __future__ import annotations

from veza_canary.migrations.rules import register
from veza_canary.migrations.rules._helpers import DropObjectRule


@register
class DropSequence(DropObjectRule):
    code = "VC106"
    name = "drop-sequence"
    dialects = ("postgres",)
    obj_kinds = frozenset({"sequence"})
