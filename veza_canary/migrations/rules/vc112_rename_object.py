"""Renaming a view, materialized view, sequence, type, function or schema the old binary uses.

Anti-pattern:
    ALTER VIEW active_users RENAME TO current_users;
    ALTER TYPE mood RENAME TO feeling;

Safe pattern:
    Create the object under the new name next to the old one, move the binary over,
    drop the old name in a later release.

Why it breaks the old binary:
    The old binary refers to the object by its old name; its queries, casts and
    calls fail once the name is gone.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq, schema_key


@register
class RenameObject(Rule):
    code = "VC112"
    name = "rename-object"
    kinds = frozenset({"rename"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.obj_kind in ("table", "index"):
            return
        key = schema_key(ch.obj_kind)
        name = (ch.name[0], "") if ch.obj_kind == "schema" and ch.name else ch.name
        if ctx.is_new(key, name):
            return
        shown = ch.name[0] if ch.obj_kind == "schema" and ch.name else fq(ch.name)
        yield f"renames {ch.obj_kind} {shown} to {ch.new_name}"
