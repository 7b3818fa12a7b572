"""Dropping a schema (and everything in it) the old binary may use.

Anti-pattern:
    DROP SCHEMA reporting CASCADE;

Safe pattern:
    Move the old binary off every object of the schema first; drop the schema in a later release.

Why it breaks the old binary:
    All tables, views, functions and types of the schema disappear at once; the old binary's queries on them fail.
"""

from __future__ import annotations

from veza_canary.migrations.rules import register
from veza_canary.migrations.rules._helpers import DropObjectRule


@register
class DropSchema(DropObjectRule):
    code = "VC103"
    name = "drop-schema"
    dialects = ("postgres",)
    obj_kinds = frozenset({"schema"})
