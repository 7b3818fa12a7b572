"""Shared judgement helpers for the rule modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from veza_canary.migrations.changes import Change, ColumnSpec, ConstraintSpec, QName
from veza_canary.migrations.rules import Hit, Rule, RuleContext


def fq(qn: QName | None, col: str | None = None) -> str:
    """Display name: ``schema.name[.col]``, without the default schema."""
    if qn is None:
        return "?"
    s, n = qn
    if not n:
        return s  # a schema
    base = n if s in ("", "public") else f"{s}.{n}"
    return f"{base}.{col}" if col else base


def constraints_added(ch: Change, kinds: set[str]) -> Iterator[tuple[ConstraintSpec, ColumnSpec | None]]:
    """Constraints a change adds, with the inline column they sit on (for ADD COLUMN)."""
    if ch.kind == "add_constraint" and ch.constraint is not None and ch.constraint.kind in kinds:
        yield ch.constraint, None
    elif ch.kind == "add_column" and ch.column_spec is not None:
        for c in ch.column_spec.constraints:
            if c.kind in kinds:
                yield c, ch.column_spec
    elif ch.kind == "create_index" and ch.unique and "unique" in kinds:
        yield ConstraintSpec("unique", ch.name[1] if ch.name else None, ch.index_columns), None


def old_binary_writes_null(ctx: RuleContext, table: QName | None, cols: tuple[str, ...],
                           inline: ColumnSpec | None) -> bool:
    """True when every column is brand new and an INSERT from the old binary leaves it NULL.

    The old binary never names a new column, so its rows get the column's default;
    with no default that is NULL, which passes UNIQUE, FOREIGN KEY and NULL-propagating
    CHECK constraints.
    """
    if not cols:
        return False
    for c in cols:
        if inline is not None and c == inline.name:
            spec: ColumnSpec | None = inline
        elif ctx.is_new("column", table, c):
            spec = ctx.column(table, c)
        else:
            return False
        if spec is None or not spec.old_binary_writes_null:
            return False
    return True


def had_unique(ctx: RuleContext, table: QName | None, cols: tuple[str, ...], *, pk: bool = False) -> bool:
    """Did the table already enforce this uniqueness before the current file?"""
    if table is None:
        return False
    sch = ctx.schema
    t = sch.pre_file(("table", table), sch.table(table))
    if t is None:
        return False
    want = tuple(sorted(cols))
    for c in t.constraints.values():
        if (c.kind == "pk" if pk else c.kind in ("unique", "pk")) and tuple(sorted(c.columns)) == want:
            return True
    if not pk:
        for key, idx in sch.indexes.items():
            pre = sch.pre_file(("index", key), idx)
            if pre is not None and pre.table == table and pre.unique and tuple(sorted(pre.columns)) == want:
                return True
    return False


def was_not_null_and_unique(ctx: RuleContext, table: QName | None, cols: tuple[str, ...]) -> bool:
    """Before the current file, were these columns all NOT NULL and unique together (a PK adds nothing)?"""
    if table is None or not cols or not had_unique(ctx, table, cols):
        return False
    t = ctx.schema.pre_file(("table", table), ctx.schema.table(table))
    return t is not None and all(c in t.columns and t.columns[c].not_null for c in cols)


def had_foreign_key(ctx: RuleContext, table: QName | None, cols: tuple[str, ...], ref: QName | None) -> bool:
    """Before the current file, did the same columns reference the same table (a FK re-created, e.g. with CASCADE)?"""
    if table is None or not cols:
        return False
    t = ctx.schema.pre_file(("table", table), ctx.schema.table(table))
    if t is None:
        return False
    want = tuple(sorted(cols))
    return any(c.kind == "fk" and not c.not_valid and tuple(sorted(c.columns)) == want
               and (ref is None or c.ref_table == ref) for c in t.constraints.values())


def enum_values(ctx: RuleContext, t: Any) -> list[str] | None:
    """The values of a Postgres enum type a column has (``USER:name``), as the history defines them, or None."""
    base = getattr(t, "base", "") or ""
    if not base.startswith("USER:"):
        return None
    short = base[5:]
    types = ctx.schema.types
    e = types.get((ctx.schema.default_schema, short))
    if e is None:
        e = next((v for (_s, n), v in types.items() if n == short), None)
    return list(e.values) if e is not None and e.values is not None else None


def unique_still_there(table: QName | None, cols: tuple[str, ...]):  # noqa: ANN201
    """Cancel test for a dropped unique constraint re-created later in the same file."""
    want = tuple(sorted(cols))

    def test(schema) -> bool:  # noqa: ANN001
        t = schema.table(table)
        if t is None or not cols:
            return False
        if want in {tuple(sorted(c.columns)) for c in t.constraints.values() if c.kind in ("unique", "pk")}:
            return True
        return any(i.table == table and i.unique and tuple(sorted(i.columns)) == want
                   for i in schema.indexes.values())

    return test


def schema_key(obj_kind: str) -> str:
    """The schema model's kind for an object kind (a materialized view is kept with the views)."""
    return "view" if obj_kind == "materialized view" else obj_kind


class DropObjectRule(Rule):
    """Shared check of the DROP rules: every dropped object that existed before this set of migrations is a hit.

    Subclasses set ``code``, ``name`` and ``obj_kinds``; ``cancel`` may return a predicate on the final
    schema that withdraws the hit (the object is re-created later in the same file).
    """

    kinds = frozenset({"drop"})
    obj_kinds: frozenset[str] = frozenset()

    def check(self, ch: Change, ctx: RuleContext) -> Iterator[Hit]:
        if ch.obj_kind not in self.obj_kinds:
            return
        if not ch.names:
            yield Hit(f"drops a {ch.obj_kind} the old binary may depend on")
        for qn in ch.names:
            key = schema_key(ch.obj_kind)
            if ctx.is_new(key, qn) or self.skip(qn, ctx):
                continue
            yield Hit(f"drops {ch.obj_kind} {fq(qn)}", self.cancel(key, qn))

    def skip(self, qn, ctx: RuleContext) -> bool:  # noqa: ANN001
        """An object of this kind the old binary cannot depend on (a subclass says which)."""
        return False

    def cancel(self, key: str, qn):  # noqa: ANN001, ANN201
        return None
