"""Renaming a view, materialized view, sequence, type, function or schema the old binary uses.

Anti-pattern:
    ALTER VIEW active_users RENAME TO current_users;
    ALTER TYPE mood RENAME TO feeling;

Safe pattern:
    Create the object under the new name next to the old one, move the binary over,
    drop the old name in a later release. Two renames pass: a trigger function's (a
    trigger calls it by identity, the binary never does) and the sequence a serial
    column created for itself (its DEFAULT follows it by identity).

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
        if ch.obj_kind == "function" and ch.name is not None and \
                ctx.schema.function_info.get(ch.name, {}).get("returns") == "trigger":
            return
        if ch.obj_kind == "sequence" and ch.name is not None and ch.name not in ctx.schema.sequences \
                and ch.name[1].endswith("_seq"):
            return  # never created by name: the implicit sequence of a serial column
        shown = ch.name[0] if ch.obj_kind == "schema" and ch.name else fq(ch.name)
        yield f"renames {ch.obj_kind} {shown} to {ch.new_name}"
