"""Adding a column with a volatile default (or a serial/identity) to an existing table (operational).

Anti-pattern:
    ALTER TABLE events ADD COLUMN token uuid DEFAULT gen_random_uuid();

A user-defined function is VOLATILE unless its CREATE FUNCTION says IMMUTABLE or
STABLE, so a default that calls one the history defines as VOLATILE (or without a
volatility) rewrites the table too.

Safe pattern:
    Add the column without a default (or with a constant one), set the default
    afterwards, and backfill existing rows in batches.

Why it matters:
    A volatile default is evaluated per row, so Postgres rewrites the whole table
    under an ACCESS EXCLUSIVE lock; both binaries stall until it finishes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class VolatileDefault(Rule):
    code = "VC202"
    name = "volatile-default"
    severity = "warn"
    kinds = frozenset({"add_column"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        spec = ch.column_spec
        if spec is None or ctx.table_is_new(ch.name):
            return
        if spec.default_volatile or spec.identity in ("serial", "always", "default") or spec.generated:
            what = spec.default or spec.identity or "a generated expression"
            yield f"adds {fq(ch.name, spec.name)} with {what}: rewrites the table under an exclusive lock"
            return
        fn = _volatile_user_function(spec.default, ctx)
        if fn is not None:
            yield (f"adds {fq(ch.name, spec.name)} with DEFAULT {spec.default}: {fn} is a VOLATILE function, so the "
                   "table is rewritten under an exclusive lock")


_CALL_RE = re.compile(r"((?:[A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*)\s*\(")


def _volatile_user_function(default: str | None, ctx: RuleContext) -> str | None:
    """The first function the history defines as VOLATILE that ``default`` calls, or None."""
    if not default:
        return None
    text = re.sub(r"'(?:[^']|'')*'", "''", default)
    for m in _CALL_RE.finditer(text):
        name = m.group(1).lower()
        schema, _, short = name.rpartition(".")
        info = ctx.schema.function_info.get((schema or ctx.schema.default_schema, short))
        if info is not None and info.get("volatility", "VOLATILE") == "VOLATILE":
            return name
    return None
