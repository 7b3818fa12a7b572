"""Changing an existing column default to a different value (warning).

Anti-pattern:
    ALTER TABLE accounts ALTER COLUMN plan SET DEFAULT 'free';   -- was 'trial'

Safe pattern:
    Make the binary write the value explicitly instead of relying on the default.

Why it matters:
    Rows the old binary inserts without the column silently get the new value.
"""

from __future__ import annotations

import re
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


_CAST_FN = re.compile(r"CAST\(\s*('(?:[^']|'')*'|[^()']+?)\s+AS\s+[^()']*?(?:\([0-9, ]*\))?\s*\)")
_CAST_OP = re.compile(r"::\s*(?:\"[^\"]+\"|[A-Z_][A-Z0-9_]*)(?:\s*\.\s*(?:\"[^\"]+\"|[A-Z_][A-Z0-9_]*))?"
                      r"(?:\s+(?:VARYING|PRECISION|WITH(?:OUT)?\s+TIME\s+ZONE))*(?:\s*\([0-9, ]*\))?(?:\s*\[\])*")


def _norm(s: str) -> str:
    """A default's text with casts taken off: ``'a'``, ``'a'::text`` and ``CAST('a' AS TEXT)`` are one value."""
    parts = re.split(r"('(?:[^']|'')*')", " ".join(s.split()))
    s = "".join(p if p.startswith("'") else p.upper() for p in parts)  # string literals keep their case
    prev = None
    while prev != s:
        prev = s
        s = _CAST_FN.sub(r"\1", s)
        s = _CAST_OP.sub("", s)
    s = s.strip()
    while s.startswith("(") and s.endswith(")") and s.count("(") == 1:
        s = s[1:-1].strip()
    return s
