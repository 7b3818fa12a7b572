"""A statement the linter cannot fully understand, so it cannot prove it safe.

Anti-pattern:
    ALTER TABLE users ALTER COLUMN email SET STATISTICS 100, ENABLE TRIGGER audit;
    CALL rebuild_schema();
    DO $$ BEGIN EXECUTE format('ALTER TABLE %I DROP COLUMN x', t); END $$;

Safe pattern:
    Write the change as plain DDL statements, with constant SQL inside DO blocks (a
    PL/pgSQL helper the history defines, called with literal arguments, is expanded and
    judged); or, when you have checked it by hand, add
    ``-- veza-canary: accept VC001 "<what you checked>"`` to the statement.

Why it breaks the old binary:
    A statement the linter does not understand, a function call or dynamic SQL can run
    any DDL. The linter fails closed: what it cannot see might drop or rename something
    the old binary uses.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register


@register
class UnverifiableStatement(Rule):
    code = "VC001"
    name = "unverifiable-statement"
    kinds = frozenset({"unverifiable", "call_function"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.kind == "call_function":
            yield f"cannot verify {ch.reason}: a function can run any DDL"
        else:
            yield f"cannot verify this statement: {ch.reason}"
