"""Turning on row-level security, adding a restrictive policy, or dropping/altering a policy.

Anti-pattern:
    ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
    CREATE POLICY only_mine ON documents AS RESTRICTIVE USING (owner = current_user);

Safe pattern:
    Create permissive policies that keep the old binary's access first, check the
    old binary's role is exempt (BYPASSRLS or the table owner without FORCE), then
    enable RLS.

Why it breaks the old binary:
    With RLS on and no policy admitting its rows, the old binary's queries silently
    return no rows and its writes fail: the worst kind of break, a silent one.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq


@register
class RowLevelSecurity(Rule):
    code = "VC151"
    name = "row-level-security"
    kinds = frozenset({"enable_rls", "create_policy", "drop_policy", "alter_policy"})
    dialects = ("postgres",)

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        table = ch.table or ch.name
        if ctx.table_is_new(table):
            return
        if ch.kind == "enable_rls":
            yield f"enables row-level security on {fq(ch.name)}"
        elif ch.kind == "create_policy":
            if ch.restrictive:
                yield f"adds a RESTRICTIVE policy {ch.name[1] if ch.name else ''} on {fq(table)}"
        elif not ctx.is_new("policy", ch.name):
            verb = "drops" if ch.kind == "drop_policy" else "alters"
            yield f"{verb} policy {ch.name[1] if ch.name else ''} on {fq(table)}: the old binary may lose access to rows"
