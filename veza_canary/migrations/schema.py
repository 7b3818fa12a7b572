"""The schema model: what the old binary can see, rebuilt by replaying migrations.

``Schema.apply(change)`` updates the model; it never judges. The engine replays
the history (every earlier ``.up.sql``) into it, then judges each new file's
changes against it before applying them.

Two extra pieces of bookkeeping make the judgement precise:

* ``NewObjects``: what the *new* migrations created (tables, columns, views,
  functions, types, enum values, indexes, constraints, ...). The old binary never
  uses those, so changing or dropping them is exempt.
* a per-file snapshot: the first time a file touches an object, its state before
  the file is kept (``pre_file``), so "once this file has run" compares the end of
  the file with its start (``DROP VIEW v; CREATE VIEW v ...`` with the same
  columns is fine).

An object the history does not know is *unknown*, never "new": judging it fails
closed (a drop is still a drop; a type change cannot be proven widening).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from veza_canary.migrations.changes import Change, ColumnSpec, ConstraintSpec, QName, _fast_pickle


@dataclass(slots=True)
class Index:
    table: QName
    unique: bool
    columns: tuple[str, ...]


@dataclass(slots=True)
class Table:
    columns: dict[str, ColumnSpec] = field(default_factory=dict)
    constraints: dict[str, ConstraintSpec] = field(default_factory=dict)
    rls: bool = False
    complete: bool = True  # False: created in a way we could not fully model

    def copy(self) -> Table:
        return Table({k: v.clone() for k, v in self.columns.items()}, dict(self.constraints), self.rls,
                     self.complete)

    def unique_sets(self, indexes: dict[QName, Index] | None = None, table: QName | None = None) -> set[tuple[str, ...]]:
        sets = {tuple(sorted(c.columns)) for c in self.constraints.values() if c.kind in ("unique", "pk")}
        if indexes is not None and table is not None:
            sets |= {tuple(sorted(i.columns)) for i in indexes.values() if i.table == table and i.unique}
        return sets


@dataclass(slots=True)
class View:
    columns: tuple[str, ...] | None
    materialized: bool = False


@dataclass(slots=True)
class EnumType:
    values: list[str] | None  # None: not an enum (domain, composite, unknown)


class NewObjects:
    """Keys of objects created by the new migrations being judged."""

    def __init__(self) -> None:
        self.keys: set[tuple[Any, ...]] = set()

    def add(self, *key: Any) -> None:
        self.keys.add(key)

    def discard(self, *key: Any) -> None:
        self.keys.discard(key)

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self.keys

    def move(self, old: tuple[Any, ...], new: tuple[Any, ...]) -> None:
        if old in self.keys:
            self.keys.discard(old)
            self.keys.add(new)

    def move_table(self, old: QName, new: QName) -> None:
        moved = set()
        for k in self.keys:
            if len(k) >= 2 and k[0] in ("table", "column", "constraint") and k[1] == old:
                moved.add(k)
        for k in moved:
            self.keys.discard(k)
            self.keys.add((k[0], new, *k[2:]))


class Schema:
    def __init__(self, dialect: str = "postgres") -> None:
        self.dialect = dialect
        self.default_schema = "" if dialect == "mysql" else "public"
        self.tables: dict[QName, Table] = {}
        self.views: dict[QName, View] = {}
        self.indexes: dict[QName, Index] = {}
        self.functions: dict[QName, str | None] = {}
        #: What a CREATE FUNCTION said besides the body: params (input names), language, volatility.
        self.function_info: dict[QName, dict[str, Any]] = {}
        self.sequences: set[QName] = set()
        self.types: dict[QName, EnumType] = {}
        self.schemas: set[str] = {self.default_schema}
        self.policies: dict[QName, bool] = {}  # (table-schema, policy) -> restrictive
        self.triggers: dict[tuple[QName, str], QName | None] = {}
        self.disabled_triggers: set[tuple[QName, str]] = set()  # (table, trigger | "ALL" | "USER")
        self.trigger_functions: set[QName] = set()  # functions some trigger has called
        self.new: NewObjects | None = None
        self._snap: dict[tuple[Any, ...], Any] | None = None

    # -- per-file snapshots ------------------------------------------------------
    def begin_file(self) -> None:
        self._snap = {}

    def _touch(self, key: tuple[Any, ...], current: Any) -> None:
        if self._snap is not None and key not in self._snap:
            self._snap[key] = _snapshot(current)

    def pre_file(self, key: tuple[Any, ...], current: Any) -> Any:
        """State of an object before the current file (``current`` if the file has not touched it)."""
        if self._snap is not None and key in self._snap:
            return self._snap[key]
        return current

    def touched(self, key: tuple[Any, ...]) -> bool:
        return self._snap is not None and key in self._snap

    # -- lookups -------------------------------------------------------------------
    def table(self, qn: QName | None) -> Table | None:
        return self.tables.get(qn) if qn is not None else None

    def column(self, qn: QName | None, col: str | None) -> ColumnSpec | None:
        t = self.table(qn)
        return t.columns.get(col) if t is not None and col is not None else None

    def index_named(self, schema: str, name: str) -> Index | None:
        return self.indexes.get((schema, name))

    def _ensure_table(self, qn: QName) -> Table:
        t = self.tables.get(qn)
        if t is None:
            t = Table(complete=False)
            self.tables[qn] = t
        return t

    # -- apply ---------------------------------------------------------------------
    def apply(self, ch: Change) -> None:
        fn = getattr(self, "_a_" + ch.kind, None)
        if fn is not None:
            fn(ch)

    def _mark(self, *key: Any) -> None:
        if self.new is not None:
            self.new.add(*key)

    def _a_create_table(self, ch: Change) -> None:
        qn = ch.name
        assert qn is not None
        if ch.extra.get("if_not_exists") and qn in self.tables:
            return  # a no-op in the database: the existing table stays "old"
        self._touch(("table", qn), self.tables.get(qn))
        cols: list[ColumnSpec] = ch.extra.get("columns", [])
        t = Table({c.name: c.clone() for c in cols}, {c.name: c for c in ch.extra.get("constraints", []) if c.name})
        like = ch.extra.get("like")
        if like is not None:
            src = self.tables.get(like)
            if src is not None:
                for k, v in src.columns.items():
                    t.columns.setdefault(k, replace(v))
            else:
                t.complete = False
        if ch.extra.get("as_query"):
            names = self.expand_columns(ch.extra.get("as_columns"), ch.extra.get("as_star", ()))
            if names is None:
                t.complete = False
            else:  # CREATE TABLE ... AS SELECT: the names are known, the types are not
                t.columns = {n: t.columns.get(n) or ColumnSpec(n) for n in names}
        for iname, icols in ch.extra.get("indexes", []):
            self.indexes[(qn[0], iname)] = Index(qn, False, tuple(icols))
        self.tables[qn] = t
        self._mark("table", qn)

    def _a_drop(self, ch: Change) -> None:
        for qn in ch.names:
            k = ch.obj_kind
            if k == "table":
                self._touch(("table", qn), self.tables.get(qn))
                self.tables.pop(qn, None)
                for iname in [n for n, i in self.indexes.items() if i.table == qn]:
                    self.indexes.pop(iname, None)
            elif k in ("view", "materialized view"):
                self._touch(("view", qn), self.views.get(qn))
                self.views.pop(qn, None)
            elif k == "index":
                self._touch(("index", qn), self.indexes.get(qn))
                self.indexes.pop(qn, None)
            elif k == "function":
                self._touch(("function", qn), self.functions.get(qn))
                self.functions.pop(qn, None)
                self.function_info.pop(qn, None)
            elif k == "sequence":
                self.sequences.discard(qn)
            elif k == "type":
                self._touch(("type", qn), self.types.get(qn))
                self.types.pop(qn, None)
            elif k == "schema":
                s = qn[0]
                self.schemas.discard(s)
                for d in (self.tables, self.views, self.indexes, self.functions, self.types):
                    for key in [x for x in d if x[0] == s]:
                        d.pop(key, None)  # type: ignore[attr-defined]
            if self.new is not None:
                self.new.discard(_kind_key(k), qn)

    def _a_rename(self, ch: Change) -> None:
        qn = ch.name
        assert qn is not None and ch.new_name is not None
        new = (qn[0], ch.new_name)
        self._move(ch.obj_kind, qn, new)

    def _a_set_schema(self, ch: Change) -> None:
        qn = ch.name
        assert qn is not None and ch.new_schema is not None
        self._move(ch.obj_kind, qn, (ch.new_schema, qn[1]))

    def _move(self, kind: str, qn: QName, new: QName) -> None:
        if kind == "schema":
            old_s, new_s = qn[0], new[1]
            self.schemas.discard(old_s)
            self.schemas.add(new_s)
            for d in (self.tables, self.views, self.indexes, self.functions, self.types):
                for key in [x for x in d if x[0] == old_s]:
                    d[(new_s, key[1])] = d.pop(key)  # type: ignore[attr-defined]
            return
        store: dict[QName, Any] | None = {
            "table": self.tables, "view": self.views, "materialized view": self.views, "index": self.indexes,
            "function": self.functions, "type": self.types}.get(kind)
        if store is not None:
            self._touch((_kind_key(kind), qn), store.get(qn))
            if qn in store:
                store[new] = store.pop(qn)
        elif kind == "sequence" and qn in self.sequences:
            self.sequences.discard(qn)
            self.sequences.add(new)
        if kind == "function" and qn in self.function_info:
            self.function_info[new] = self.function_info.pop(qn)
        if kind == "type" and self.new is not None:
            self.new.add("type", new)  # a name the old binary never used (the rename itself is judged)
        if kind == "type":  # columns follow their type (by OID), whatever its name becomes
            old_base, new_base = f"USER:{qn[1]}", f"USER:{new[1]}"
            for tq, t in self.tables.items():
                hit = [c for c in t.columns.values() if c.type is not None and c.type.base == old_base]
                if hit:
                    self._touch(("table", tq), t)
                    for c in t.columns.values():
                        if c.type is not None and c.type.base == old_base:
                            c.type = replace(c.type, base=new_base, sql=new[1])
        if kind == "index":  # a constraint's name is its index's name (ALTER INDEX ... RENAME renames both)
            idx = self.indexes.get(new)
            for tq, t in self.tables.items():
                if (idx is None or idx.table == tq) and qn[1] in t.constraints and tq[0] == qn[0]:
                    self._touch(("table", tq), t)
                    t.constraints[new[1]] = replace(t.constraints.pop(qn[1]), name=new[1])
        if kind == "table":
            for i in self.indexes.values():
                if i.table == qn:
                    i.table = new
            if self.new is not None:
                self.new.move_table(qn, new)
        elif self.new is not None:
            self.new.move((_kind_key(kind), qn), (_kind_key(kind), new))

    def _table_for(self, ch: Change) -> Table:
        assert ch.name is not None
        t = self._ensure_table(ch.name)
        self._touch(("table", ch.name), t)
        return t

    def _a_add_column(self, ch: Change) -> None:
        if ch.obj_kind != "table" or ch.column_spec is None:
            return
        t = self._table_for(ch)
        spec = replace(ch.column_spec)
        t.columns[spec.name] = spec
        for c in spec.constraints:
            if c.name:
                t.constraints[c.name] = c
        self._mark("column", ch.name, spec.name)

    def _a_drop_column(self, ch: Change) -> None:
        t = self._table_for(ch)
        t.columns.pop(ch.column or "", None)
        for name in [n for n, c in t.constraints.items() if ch.column in c.columns]:
            t.constraints.pop(name)
        for iname in [n for n, i in self.indexes.items() if i.table == ch.name and ch.column in i.columns]:
            self.indexes.pop(iname)
        if self.new is not None:
            self.new.discard("column", ch.name, ch.column)

    def _a_rename_column(self, ch: Change) -> None:
        if ch.obj_kind in ("view", "materialized view"):
            v = self.views.get(ch.name)  # type: ignore[arg-type]
            if v is not None and v.columns is not None:
                self._touch(("view", ch.name), v)
                v.columns = tuple(ch.new_name if c == ch.column else c for c in v.columns)  # type: ignore[misc]
            return
        t = self._table_for(ch)
        old, new = ch.column or "", ch.new_name or ""
        if old in t.columns:
            spec = t.columns.pop(old)
            spec.name = new
            t.columns[new] = spec
        else:
            t.columns[new] = ColumnSpec(new)
        for name, c in list(t.constraints.items()):
            if old in c.columns:
                t.constraints[name] = replace(c, columns=tuple(new if x == old else x for x in c.columns))
        for i in self.indexes.values():
            if i.table == ch.name and old in i.columns:
                i.columns = tuple(new if x == old else x for x in i.columns)
        if self.new is not None:
            self.new.move(("column", ch.name, old), ("column", ch.name, new))

    def _col(self, ch: Change) -> ColumnSpec | None:
        if ch.obj_kind != "table":
            return None
        t = self._table_for(ch)
        col = t.columns.get(ch.column or "")
        if col is None and ch.column:
            col = ColumnSpec(ch.column)
            t.columns[ch.column] = col
        return col

    def _a_alter_type(self, ch: Change) -> None:
        col = self._col(ch)
        if col is not None:
            col.type = ch.type

    def _a_modify_column(self, ch: Change) -> None:
        t = self._table_for(ch)
        spec = replace(ch.column_spec) if ch.column_spec else ColumnSpec(ch.new_name or "")
        if ch.column and ch.column != spec.name:
            t.columns.pop(ch.column, None)
            if self.new is not None:
                self.new.move(("column", ch.name, ch.column), ("column", ch.name, spec.name))
        t.columns[spec.name] = spec

    def _a_set_not_null(self, ch: Change) -> None:
        col = self._col(ch)
        if col is not None:
            col.not_null = True

    def _a_drop_not_null(self, ch: Change) -> None:
        col = self._col(ch)
        if col is not None:
            col.not_null = False

    def _a_set_default(self, ch: Change) -> None:
        col = self._col(ch)
        if col is not None:
            col.default = ch.value or "?"

    def _a_drop_default(self, ch: Change) -> None:
        col = self._col(ch)
        if col is not None:
            col.default = None

    def _a_add_identity(self, ch: Change) -> None:
        col = self._col(ch)
        if col is not None:
            col.identity = ch.value or "default"
            col.not_null = True

    def _a_drop_identity(self, ch: Change) -> None:
        col = self._col(ch)
        if col is not None:
            col.identity = None

    def _a_add_constraint(self, ch: Change) -> None:
        if ch.obj_kind != "table" or ch.constraint is None:
            return
        t = self._table_for(ch)
        c = ch.constraint
        if c.using_index:
            idx = self.indexes.pop((ch.name[0], c.using_index), None)  # type: ignore[index]
            c = replace(c, columns=idx.columns if idx else ())
        name = c.name or f"{ch.name[1]}_{c.kind}"  # type: ignore[index]
        t.constraints[name] = c
        if c.kind == "pk":
            for col in c.columns:
                if col in t.columns:
                    t.columns[col].not_null = True
        self._mark("constraint", ch.name, name)

    def _a_drop_constraint(self, ch: Change) -> None:
        t = self._table_for(ch)
        name = ch.value or ""
        if ch.obj_kind == "index":
            key = (ch.name[0], name)  # type: ignore[index]
            self.indexes.pop(key, None)
            t.constraints.pop(name, None)
            return
        if ch.extra.get("pk"):
            for n in [n for n, c in t.constraints.items() if c.kind == "pk"]:
                t.constraints.pop(n)
            return
        t.constraints.pop(name, None)
        if self.new is not None:
            self.new.discard("constraint", ch.name, name)

    def _a_rename_constraint(self, ch: Change) -> None:
        t = self._table_for(ch)
        old, new = ch.value or "", ch.new_value or ""
        if old in t.constraints:
            t.constraints[new] = replace(t.constraints.pop(old), name=new)
        key = (ch.name[0], old)  # type: ignore[index]
        if key in self.indexes:
            self.indexes[(ch.name[0], new)] = self.indexes.pop(key)  # type: ignore[index]

    def _a_validate_constraint(self, ch: Change) -> None:
        t = self.tables.get(ch.name)  # type: ignore[arg-type]
        if t is not None and ch.value in t.constraints:
            t.constraints[ch.value] = replace(t.constraints[ch.value], not_valid=False)

    def _a_create_index(self, ch: Change) -> None:
        assert ch.table is not None and ch.name is not None
        name = ch.name[1] or index_default_name(ch.table[1], ch.index_columns)
        key = (ch.table[0], name)
        self._touch(("index", key), self.indexes.get(key))
        self.indexes[key] = Index(ch.table, ch.unique, ch.index_columns)
        self._mark("index", key)

    def _a_create_view(self, ch: Change) -> None:
        assert ch.name is not None
        self._touch(("view", ch.name), self.views.get(ch.name))
        self.views[ch.name] = View(self.expand_view_columns(ch), ch.materialized)
        self._mark("view", ch.name)

    def expand_view_columns(self, ch: Change) -> tuple[str, ...] | None:
        """A view's columns with each ``*`` replaced by its relation's columns (None: unknown)."""
        return self.expand_columns(ch.view_columns, ch.view_star_from)

    def expand_columns(self, cols: tuple[str, ...] | None, star_from: tuple[QName, ...]) -> tuple[str, ...] | None:
        """Output columns with each ``*`` replaced by the columns of its relation (None: unknown)."""
        if cols is None or "*" not in cols:
            return cols
        stars = list(star_from)
        paired = cols.count("*") == len(stars)  # the i-th '*' expands from stars[i]
        out: list[str] = []
        k = 0
        for c in cols:
            if c != "*":
                out.append(c)
                continue
            for src in ([stars[k]] if paired else stars):
                t = self.tables.get(src)
                v = self.views.get(src)
                if t is not None and t.complete:
                    out.extend(t.columns)
                elif v is not None and v.columns is not None:
                    out.extend(v.columns)
                else:
                    return None
            k += 1
        return tuple(out)

    def _a_create_function(self, ch: Change) -> None:
        assert ch.name is not None
        self._touch(("function", ch.name), self.functions.get(ch.name))
        self.functions[ch.name] = ch.body
        self.function_info[ch.name] = {k: ch.extra[k] for k in ("params", "language", "volatility", "returns")
                                       if k in ch.extra}
        self._mark("function", ch.name)

    def _a_create_type(self, ch: Change) -> None:
        assert ch.name is not None
        self._touch(("type", ch.name), self.types.get(ch.name))
        self.types[ch.name] = EnumType(list(ch.values) if ch.extra.get("enum") else None)
        self._mark("type", ch.name)

    def _a_enum_add_value(self, ch: Change) -> None:
        t = self.types.get(ch.name)  # type: ignore[arg-type]
        if t is None:
            t = EnumType([])
            self.types[ch.name] = t  # type: ignore[index]
        if t.values is not None and ch.value not in t.values:
            t.values.append(ch.value or "")
        self._mark("enum_value", ch.name, ch.value)

    def _a_enum_rename_value(self, ch: Change) -> None:
        t = self.types.get(ch.name)  # type: ignore[arg-type]
        if t is not None and t.values is not None:
            t.values = [ch.new_value or "" if v == ch.value else v for v in t.values]
        if self.new is not None:
            self.new.move(("enum_value", ch.name, ch.value), ("enum_value", ch.name, ch.new_value))

    def _a_create_sequence(self, ch: Change) -> None:
        assert ch.name is not None
        self.sequences.add(ch.name)
        self._mark("sequence", ch.name)

    def _a_create_schema(self, ch: Change) -> None:
        assert ch.name is not None
        self.schemas.add(ch.name[0])
        self._mark("schema", (ch.name[0], ""))

    def _a_enable_rls(self, ch: Change) -> None:
        self._table_for(ch).rls = True

    def _a_create_policy(self, ch: Change) -> None:
        assert ch.name is not None
        self.policies[ch.name] = ch.restrictive
        self._mark("policy", ch.name)

    def _a_drop_policy(self, ch: Change) -> None:
        self.policies.pop(ch.name, None)  # type: ignore[arg-type]

    def trigger_disabled(self, table: QName | None, trigger: str) -> bool:
        """Is ``trigger`` on ``table`` (or all, or every user trigger) disabled now?"""
        return any((table, t) in self.disabled_triggers for t in {trigger, "ALL", "USER"})

    def _a_disable_trigger(self, ch: Change) -> None:
        self.disabled_triggers.add((ch.table, ch.value or ""))  # type: ignore[arg-type]

    def _a_enable_trigger(self, ch: Change) -> None:
        if ch.value in ("ALL", "USER"):
            self.disabled_triggers = {k for k in self.disabled_triggers if k[0] != ch.table}
        else:
            self.disabled_triggers.discard((ch.table, ch.value or ""))  # type: ignore[arg-type]

    def _a_rename_trigger(self, ch: Change) -> None:
        assert ch.table is not None and ch.name is not None
        key = (ch.table, ch.name[1])
        if key in self.triggers:
            self.triggers[(ch.table, ch.new_name or "")] = self.triggers.pop(key)
        if self.new is not None:
            self.new.move(("trigger", ch.table, ch.name[1]), ("trigger", ch.table, ch.new_name))

    def _a_drop_trigger(self, ch: Change) -> None:
        if ch.table is not None and ch.name is not None:
            self.triggers.pop((ch.table, ch.name[1]), None)

    def _a_create_trigger(self, ch: Change) -> None:
        assert ch.table is not None and ch.name is not None
        self.triggers[(ch.table, ch.name[1])] = ch.function
        if ch.function is not None:
            self.trigger_functions.add(ch.function)
        self._mark("trigger", ch.table, ch.name[1])


for _cls in (Index, Table, View, EnumType):
    _fast_pickle(_cls)  # read back from the cache with every replayed history


def _snapshot(obj: Any) -> Any:
    """A copy deep enough that later in-place changes do not show through (cheaper than deepcopy)."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Table):
        return obj.copy()
    if isinstance(obj, Index | View):
        return replace(obj)
    if isinstance(obj, EnumType):
        return EnumType(list(obj.values) if obj.values is not None else None)
    return copy.deepcopy(obj)


def _kind_key(kind: str) -> str:
    return {"materialized view": "view"}.get(kind, kind)


def index_default_name(table: str, cols: tuple[str, ...]) -> str:
    return f"{table}_{'_'.join(c for c in cols if c != '(expr)') or 'expr'}_idx"
