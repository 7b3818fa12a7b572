"""Dropping an extension whose types and functions the old binary may use.

Anti-pattern:
    DROP EXTENSION pg_trgm;

Safe pattern:
    Keep the extension until no binary uses its functions, operators or types.

Why it breaks the old binary:
    Every type, function and operator of the extension disappears; queries of the old binary that use them fail.
"""

from __future__ import annotations

from veza_canary.migrations.rules import register
from veza_canary.migrations.rules._helpers import DropObjectRule


@register
class DropExtension(DropObjectRule):
    code = "VC108"
    name = "drop-extension"
    dialects = ("postgres",)
    obj_kinds = frozenset({"extension"})
