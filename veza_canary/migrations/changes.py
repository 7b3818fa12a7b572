"""What a statement does to the schema, as plain data.

The analyzer (``analyze.py``) turns each statement into a list of ``Change``
records; rules judge a ``Change`` against the schema model, and the model applies
it. Changes do not depend on the schema (``SELECT *`` in a view is expanded later),
so a file's changes are cached by content hash and replayed as history.

Names are normalized: ``QName = (schema, name)``, unquoted identifiers folded the
way the dialect folds them, an unqualified name in the default schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

QName = tuple[str, str]

#: Bumped whenever analysis output changes; part of the cache key.
ANALYZER_VERSION = "6"


def _fast_pickle(cls: Any) -> Any:
    """Pickle as ``cls(*fields)``: one C-level getter and the dataclass ``__init__``.

    Analysis results and replayed schemas go to the cache; dataclasses with slots
    otherwise pickle through a Python ``__setstate__`` loop per object, which dominates
    reading them back.
    """
    names = [f.name for f in fields(cls)]
    getter = attrgetter(*names)
    single = len(names) == 1  # attrgetter of one name returns the value, not a 1-tuple

    def __reduce__(self: Any) -> tuple[Any, tuple[Any, ...]]:
        return cls, (getter(self),) if single else getter(self)

    cls.__reduce__ = __reduce__
    return cls


@dataclass(slots=True, frozen=True)
class TypeInfo:
    """A column type: base name (sqlglot DType name or user type), parameters, enum values."""

    base: str
    params: tuple[str, ...] = ()
    values: tuple[str, ...] = ()  # MySQL ENUM/SET values
    inner: TypeInfo | None = None  # element type of an ARRAY
    sql: str = ""

    def __str__(self) -> str:
        return self.sql or self.base


@dataclass(slots=True, frozen=True)
class ConstraintSpec:
    """A table constraint (or an inline column constraint lifted to the table)."""

    kind: str  # unique | pk | check | fk | exclude
    name: str | None = None
    columns: tuple[str, ...] = ()
    null_propagating: bool = False  # CHECK: passes when its columns are NULL
    not_valid: bool = False
    ref_table: QName | None = None
    using_index: str | None = None


@dataclass(slots=True)
class ColumnSpec:
    name: str
    type: TypeInfo | None = None
    not_null: bool = False
    default: str | None = None
    default_volatile: bool = False
    identity: str | None = None  # "always" | "default" | "auto_increment" | "serial"
    generated: bool = False  # GENERATED ALWAYS AS (expr)
    constraints: tuple[ConstraintSpec, ...] = ()

    def clone(self) -> ColumnSpec:
        return ColumnSpec(self.name, self.type, self.not_null, self.default, self.default_volatile, self.identity,
                          self.generated, self.constraints)

    @property
    def has_default(self) -> bool:
        return self.default is not None or self.identity is not None or self.generated

    @property
    def old_binary_writes_null(self) -> bool:
        """True when an INSERT that omits this column stores NULL."""
        return not self.has_default


@dataclass(slots=True)
class Change:
    """One effect of a statement. ``kind`` picks the fields that matter.

    Kinds: create_table, drop (obj_kind), rename (obj_kind), set_schema (obj_kind),
    add_column, drop_column, rename_column, alter_type, modify_column (MySQL),
    set_not_null, drop_not_null, set_default, drop_default, add_identity, drop_identity,
    add_constraint, drop_constraint, rename_constraint, validate_constraint,
    create_index, create_view, create_function, create_type, create_sequence,
    create_schema, create_other, enum_add_value, enum_rename_value, revoke, owner,
    enable_rls, create_policy, drop_policy, alter_policy, create_trigger,
    unverifiable, noop, call_function.
    """

    kind: str
    line: int = 0
    col: int = 0
    obj_kind: str = ""
    name: QName | None = None
    names: tuple[QName, ...] = ()
    column: str | None = None
    new_name: str | None = None
    new_schema: str | None = None
    column_spec: ColumnSpec | None = None
    constraint: ConstraintSpec | None = None
    type: TypeInfo | None = None
    unique: bool = False
    concurrently: bool = False
    index_columns: tuple[str, ...] = ()
    view_columns: tuple[str, ...] | None = None
    view_star_from: tuple[QName, ...] = ()
    or_replace: bool = False
    materialized: bool = False
    values: tuple[str, ...] = ()
    value: str | None = None
    new_value: str | None = None
    body: str | None = None
    function: QName | None = None
    restrictive: bool = False
    table: QName | None = None
    reason: str = ""
    snippet: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AnalyzedStatement:
    """A statement and its changes; what the cache stores per file."""

    line: int
    col: int
    snippet: str
    changes: list[Change]
    directives: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class AnalyzedFile:
    statements: list[AnalyzedStatement]
    file_directives: list[Any]
    bad_directives: list[Any]
    error: tuple[int, int, str] | None = None  # (line, col, reason): cannot parse


for _cls in (TypeInfo, ConstraintSpec, ColumnSpec, Change, AnalyzedStatement, AnalyzedFile):
    _fast_pickle(_cls)
