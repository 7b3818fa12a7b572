"""Dropping a UNIQUE or PRIMARY KEY constraint, or a unique index, the old binary may rely on.

Anti-pattern:
    ALTER TABLE users DROP CONSTRAINT users_email_key;
    DROP INDEX CONCURRENTLY users_email_idx;      -- a unique index

Safe pattern:
    Keep the uniqueness until no binary relies on it (ON CONFLICT targets, lookups
    that expect one row); dropping and re-creating it in the same file is fine.

Why it breaks the old binary:
    INSERT ... ON CONFLICT (email) fails with "there is no unique or exclusion
    constraint matching the ON CONFLICT specification", and code that assumed one
    row per key silently reads duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator

from veza_canary.migrations.changes import Change
from veza_canary.migrations.rules import Hit, Rule, RuleContext, register
from veza_canary.migrations.rules._helpers import fq, unique_still_there


@register
class DropUnique(Rule):
    code = "VC134"
    name = "drop-unique"
    kinds = frozenset({"drop_constraint", "drop"})

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[Hit]:
        sch = ctx.schema
        if ch.kind == "drop":
            if ch.obj_kind != "index":
                return
            for qn in ch.names:
                if ctx.is_new("index", qn):
                    continue
                idx = sch.indexes.get(qn)
                if idx is None:
                    yield Hit(f"drops index {fq(qn)}, unknown to the migration history: it may be unique",
                              _recreated_unique(qn))
                elif idx.unique and not ctx.table_is_new(idx.table):
                    yield Hit(f"drops unique index {fq(qn)} on {fq(idx.table)} ({', '.join(dict.fromkeys(idx.columns))})",
                              unique_still_there(idx.table, idx.columns))
            return
        if ctx.table_is_new(ch.name) or ctx.is_new("constraint", ch.name, ch.value):
            return
        t = sch.table(ch.name)
        name = ch.value or ""
        if ch.extra.get("pk"):
            pk = [c for c in (t.constraints.values() if t else []) if c.kind == "pk"]
            cols = pk[0].columns if pk else ()
            yield Hit(f"drops the PRIMARY KEY of {fq(ch.name)}", unique_still_there(ch.name, cols) if cols else None)
            return
        c = t.constraints.get(name) if t else None
        if c is None and ch.obj_kind == "index" or (c is None and ctx.dialect == "mysql"):
            idx = sch.indexes.get((ch.name[0], name)) if ch.name else None
            if idx is not None:
                if idx.unique:
                    yield Hit(f"drops unique index {name} on {fq(ch.name)}", unique_still_there(ch.name, idx.columns))
                return
        if c is None:
            if t is not None and t.complete and ctx.dialect != "mysql":
                return  # the history knows every constraint of this table: not a unique one
            yield Hit(f"drops constraint {name} on {fq(ch.name)}, unknown to the migration history: it may be unique")
            return
        if c.kind in ("unique", "pk"):
            what = "PRIMARY KEY" if c.kind == "pk" else "UNIQUE constraint"
            yield Hit(f"drops {what} {name} on {fq(ch.name)} ({', '.join(dict.fromkeys(c.columns))})",
                      unique_still_there(ch.name, c.columns))


def _recreated_unique(qn):  # noqa: ANN001, ANN202
    """Cancel test for an index unknown to the history: the file creates a unique index of that name again."""

    def test(schema) -> bool:  # noqa: ANN001
        idx = schema.indexes.get(qn)
        if idx is None and qn[0] == schema.default_schema:  # unqualified: found on the search path
            idx = next((i for (_s, n), i in schema.indexes.items() if n == qn[1]), None)
        return idx is not None and idx.unique

    return test
