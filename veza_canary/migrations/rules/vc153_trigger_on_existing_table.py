"""A new trigger on an existing table whose function may reject or drop the old binary's writes.

Anti-pattern:
    CREATE TRIGGER check_quota BEFORE INSERT ON uploads
        FOR EACH ROW EXECUTE FUNCTION enforce_quota();   -- RAISE EXCEPTION inside

Safe pattern:
    Triggers that only fill or log (no RAISE EXCEPTION, no RETURN NULL in a BEFORE or
    INSTEAD OF row trigger, no dynamic SQL) pass; Postgres ignores what AFTER and
    statement-level triggers return, so their RETURN NULL is harmless. Otherwise ship the rule in the new binary first and add the trigger
    once no old binary writes the table.

Why it breaks the old binary:
    A BEFORE trigger that raises makes the old binary's writes fail; one that
    returns NULL silently discards them. The linter reads the trigger function's
    body when the migrations define it, and fails closed when it cannot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq

_DANGER = re.compile(
    r"\bRAISE\s+(?:EXCEPTION|SQLSTATE)\b|\bRAISE\s*;|\bRAISE\s+'|\bRETURN\s+NULL\b|\bEXECUTE\b",
    re.IGNORECASE,
)
#: What may break the old binary in a trigger whose return value Postgres ignores (AFTER, FOR EACH STATEMENT).
_DANGER_IGNORING_RETURN = re.compile(
    r"\bRAISE\s+(?:EXCEPTION|SQLSTATE)\b|\bRAISE\s*;|\bRAISE\s+'|\bEXECUTE\b", re.IGNORECASE)


@register
class TriggerOnExistingTable(Rule):
    code = "VC153"
    name = "trigger-on-existing-table"
    kinds = frozenset({"create_trigger"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ctx.table_is_new(ch.table):
            return
        fn = ch.function
        body = ctx.schema.functions.get(fn) if fn is not None else None
        if fn is None or fn not in ctx.schema.functions or body is None:
            yield (f"adds trigger {ch.name[1] if ch.name else ''} on {fq(ch.table)} calling {fq(fn)}, "
                   "whose body the migration history does not show")
            return
        # A change recognised before trigger timings were recorded has no "timing": judged as BEFORE.
        ignores_return = ch.extra.get("timing") == "AFTER" or ch.extra.get("row_level") is False
        danger = _DANGER_IGNORING_RETURN if ignores_return else _DANGER
        m = danger.search(_strip_comments_and_strings(body))
        if m:
            yield (f"adds trigger {ch.name[1] if ch.name else ''} on {fq(ch.table)}; its function {fq(fn)} "
                   f"uses {' '.join(m.group(0).split()).upper()}")


def _strip_comments_and_strings(body: str) -> str:
    from veza_canary.migrations.parse import LexError, lex

    try:
        pieces, _ = lex(body, "postgres")
    except LexError:
        return body
    return " ; ".join(p[3] for p in pieces)
