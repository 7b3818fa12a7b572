"""Changing an existing column default to a different value (warning).

Anti-pattern:
    ALTER TABLE accounts ALTER COLUMN plan SET DEFAULT 'free';   -- was 'trial'

Safe pattern:
    Make the binary write the value explicitly instead of relying on the default.

Why it matters:
    Rows the old binary inserts without the column silently get the new value.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class ChangeDefault(Rule):
    code = "VC206"
    name = "change-default"
    severity = "warn"
    kinds = frozenset({"set_default", "modify_column"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.obj_kind != "table" or ctx.column_is_new(ch.name, ch.column):
            return
        old = ctx.column(ch.name, ch.column)
        if old is None or old.default is None:
            return
        new = ch.value if ch.kind == "set_default" else (ch.column_spec.default if ch.column_spec else None)
        if new is not None and _norm(new) != _norm(old.default):
            yield f"changes the default of {fq(ch.name, ch.column)} from {old.default} to {new}"


def _norm(s: str) -> str:
    return " ".join(s.upper().split())
