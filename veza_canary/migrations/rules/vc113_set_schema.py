"""Moving a table, view, sequence, type or function to another schema (SET SCHEMA).

Anti-pattern:
    ALTER TABLE events SET SCHEMA archive;

Safe pattern:
    Create the object in the new schema, move the binary over, and drop the old one
    later; or keep a view with the old qualified name.

Why it breaks the old binary:
    The old binary finds the object through its old schema (or the search_path);
    after the move its queries fail with "relation does not exist".
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq, schema_key


@register
class SetSchema(Rule):
    code = "VC113"
    name = "set-schema"
    kinds = frozenset({"set_schema"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        key = schema_key(ch.obj_kind)
        if ctx.is_new(key, ch.name):
            return
        yield f"moves {ch.obj_kind} {fq(ch.name)} to schema {ch.new_schema}"
