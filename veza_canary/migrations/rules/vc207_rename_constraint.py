"""Renaming a constraint or index (warning).

Anti-pattern:
    ALTER TABLE users RENAME CONSTRAINT users_email_key TO users_email_uniq;

Safe pattern:
    Keep constraint names stable, or check that the old binary never matches on them.

Why it matters:
    Application code often maps a unique violation to a user error by the
    constraint name in the error; after the rename the old binary's mapping silently
    stops matching.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class RenameConstraint(Rule):
    code = "VC207"
    name = "rename-constraint"
    severity = "warn"
    kinds = frozenset({"rename_constraint", "rename"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.kind == "rename":
            if ch.obj_kind == "index" and not ctx.is_new("index", ch.name):
                yield f"renames index {fq(ch.name)} to {ch.new_name}"
            return
        if ctx.table_is_new(ch.name) or ctx.is_new("constraint", ch.name, ch.value):
            return
        yield f"renames {'index' if ch.obj_kind == 'index' else 'constraint'} {ch.value} on {fq(ch.name)} to {ch.new_value}"
