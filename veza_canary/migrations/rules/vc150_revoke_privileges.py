"""Taking privileges away: REVOKE, ownership changes, dropping or altering roles.

Anti-pattern:
    REVOKE UPDATE ON accounts FROM app_rw;
    ALTER TABLE accounts OWNER TO admin;

Safe pattern:
    Remove privileges only after no binary needs them; grant new ones freely.

Why it breaks the old binary:
    Statements of the old binary that used the privilege fail with "permission denied".
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq, schema_key


@register
class RevokePrivileges(Rule):
    code = "VC150"
    name = "revoke-privileges"
    kinds = frozenset({"revoke", "owner"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[str]:
        if ch.kind == "owner":
            key = schema_key(ch.obj_kind)
            if not ctx.is_new(key, ch.name):
                yield f"changes the owner of {ch.obj_kind} {fq(ch.name)}: the old binary may lose its privileges"
            return
        if ch.names and all(ctx.is_new(schema_key(ch.obj_kind), qn)
                            for qn in ch.names):
            return
        target = ", ".join(fq(n) for n in ch.names) or ch.reason or "objects"
        yield f"revokes privileges on {target}"
