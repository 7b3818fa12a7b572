"""Is a column type change safe for the old binary? Judged from the column's known type.

``judge(old, new, dialect)`` answers with a ``Verdict``:

* ``same``: nothing changes;
* ``widening``: every value the old type holds, the new one holds, with the same
  operators (``varchar(50)->varchar(100)``, ``varchar->text``, ``int->bigint``,
  ``numeric(10,2)->numeric(12,2)``, ``real->double``, ``timestamp->timestamptz``,
  ``json->jsonb``, MySQL ``ENUM`` gaining values) -- not breaking; ``rewrite`` says
  whether Postgres rewrites the table to do it (an operational warning);
* ``enum_values_removed``: a MySQL ``ENUM``/``SET`` lost values;
* ``narrowing`` / ``incompatible`` / ``unknown``: breaking.
"""

from __future__ import annotations

from dataclasses import dataclass

from veza_canary.migrations.changes import TypeInfo


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # same | widening | narrowing | incompatible | enum_values_removed | unknown
    reason: str = ""
    rewrite: bool = False

    @property
    def breaking(self) -> bool:
        return self.kind not in ("same", "widening")


# Integer ladders: (family, rank, decimal digits).
_INTS = {
    "TINYINT": (1, 3), "UTINYINT": (1, 3), "SMALLINT": (2, 5), "USMALLINT": (2, 5), "MEDIUMINT": (3, 7),
    "UMEDIUMINT": (3, 8), "INT": (4, 10), "UINT": (4, 10), "BIGINT": (8, 19), "UBIGINT": (8, 20),
}
_FLOATS = {"FLOAT": 4, "DOUBLE": 8}
# Text capacity in characters (MySQL text types assuming 4-byte utf8mb4 characters).
_INF = 1 << 62
_MYSQL_TEXT = {"TINYTEXT": 63, "TEXT": 16383, "MEDIUMTEXT": 4194303, "LONGTEXT": _INF}
_PG_TEXTLIKE = {"TEXT", "VARCHAR", "NVARCHAR", "NAME"}
_DECIMALS = {"DECIMAL", "NUMERIC", "BIGDECIMAL", "UDECIMAL"}


def _int_param(t: TypeInfo, i: int) -> int | None:
    if len(t.params) <= i:
        return None
    try:
        return int(t.params[i])
    except ValueError:
        return None


def _text_capacity(t: TypeInfo, mysql: bool) -> int | None:
    """Characters a text type holds, or None if not a (var)char/text type."""
    b = t.base
    if mysql and b in _MYSQL_TEXT:
        return _MYSQL_TEXT[b]
    if b in ("VARCHAR", "NVARCHAR"):
        n = _int_param(t, 0)
        return _INF if n is None else n
    if b == "TEXT" or (b == "USER:citext"):
        return _INF
    return None


def judge(old: TypeInfo | None, new: TypeInfo | None, dialect: str = "postgres") -> Verdict:
    if old is None:
        return Verdict("unknown", "the column's current type is not known from the migration history")
    if new is None:
        return Verdict("unknown", "the new type is not understood")
    mysql = dialect == "mysql"
    if (old.base, old.params, old.values) == (new.base, new.params, new.values) and old.inner == new.inner:
        return Verdict("same")
    ob, nb = old.base, new.base

    # Arrays: judge the elements.
    if ob == "ARRAY" or nb == "ARRAY":
        if ob == nb == "ARRAY":
            inner = judge(old.inner, new.inner, dialect)
            return Verdict(inner.kind, f"array elements: {inner.reason}" if inner.reason else "", True)
        return Verdict("incompatible", f"{old} and {new} are not the same kind of value")

    # Text.
    oc, nc = _text_capacity(old, mysql), _text_capacity(new, mysql)
    if oc is not None and nc is not None:
        if nc >= oc:
            return Verdict("widening", rewrite=False)
        return Verdict("narrowing", f"{new} holds fewer characters than {old}")
    if ob in ("CHAR", "NCHAR", "BPCHAR") and nb == ob:
        o, n = _int_param(old, 0) or 1, _int_param(new, 0) or 1
        if n >= o:
            return Verdict("widening", rewrite=not mysql)
        return Verdict("narrowing", f"{new} holds fewer characters than {old}")
    if ob in ("CHAR", "NCHAR", "BPCHAR") and nc is not None:
        if mysql and nc >= (_int_param(old, 0) or 1):
            # MySQL strips CHAR padding on read, so VARCHAR/TEXT reads back the same values.
            return Verdict("widening", rewrite=True)
        return Verdict("incompatible", f"{old} -> {new} changes blank-padding semantics")

    # Integers and numbers.
    if ob in _INTS and nb in _INTS:
        osz, odig = _INTS[ob]
        nsz, ndig = _INTS[nb]
        o_uns, n_uns = ob.startswith("U"), nb.startswith("U")
        if o_uns == n_uns and nsz >= osz:
            return Verdict("widening" if nsz > osz else "same", rewrite=nsz > osz)
        if o_uns and not n_uns and nsz > osz:
            return Verdict("widening", rewrite=True)
        return Verdict("narrowing", f"{new} cannot hold every {old} value")
    if ob in _INTS and nb in _DECIMALS:
        p, s = _int_param(new, 0), _int_param(new, 1) or 0
        if p is None or p - s >= _INTS[ob][1]:
            return Verdict("widening", rewrite=True)
        return Verdict("narrowing", f"{new} cannot hold every {old} value")
    if ob in _DECIMALS and nb in _DECIMALS:
        op, os_ = _int_param(old, 0), _int_param(old, 1) or 0
        np_, ns = _int_param(new, 0), _int_param(new, 1) or 0
        if np_ is None:
            return Verdict("widening", rewrite=False)
        if op is None:
            return Verdict("narrowing", f"{new} has a limited precision, {old} had none")
        if ns >= os_ and np_ - ns >= op - os_:
            return Verdict("widening", rewrite=ns != os_)
        return Verdict("narrowing", f"{new} cannot hold every {old} value")
    if ob in _FLOATS and nb in _FLOATS:
        if _FLOATS[nb] >= _FLOATS[ob]:
            return Verdict("widening", rewrite=True)
        return Verdict("narrowing", f"{new} has less precision than {old}")
    if ob in _INTS and nb in _FLOATS:
        mantissa = 24 if _FLOATS[nb] == 4 else 53
        if _INTS[ob][0] * 8 <= mantissa:
            return Verdict("widening", rewrite=True)
        return Verdict("narrowing", f"{new} cannot represent every {old} value exactly")

    # Time.
    if ob == "TIMESTAMP" and nb == "TIMESTAMPTZ" and not mysql:
        return Verdict("widening", rewrite=True)
    if ob in ("TIMESTAMP", "TIMESTAMPTZ", "DATETIME", "TIME", "TIMETZ") and nb == ob:
        o, n = _int_param(old, 0), _int_param(new, 0)
        o = 6 if o is None and not mysql else (o or 0)
        n = 6 if n is None and not mysql else (n or 0)
        if n >= o:
            return Verdict("widening", rewrite=False)
        return Verdict("narrowing", f"{new} keeps fewer fractional digits than {old}")

    if ob == "JSON" and nb == "JSONB":
        return Verdict("widening", rewrite=True)
    if ob in ("VARBIT", "BIT") and nb == "VARBIT":
        o, n = _int_param(old, 0), _int_param(new, 0)
        if n is None or (o is not None and n >= o):
            return Verdict("widening", rewrite=ob != nb)
        return Verdict("narrowing", f"{new} holds fewer bits than {old}")
    if ob in ("BINARY", "VARBINARY") and nb in ("VARBINARY", "BLOB", "MEDIUMBLOB", "LONGBLOB") and mysql:
        o, n = _int_param(old, 0) or 0, _int_param(new, 0)
        if nb != "VARBINARY" or (n is not None and n >= o):
            return Verdict("widening", rewrite=True)
        return Verdict("narrowing", f"{new} holds fewer bytes than {old}")

    # MySQL ENUM / SET.
    if ob in ("ENUM", "SET") and nb == ob:
        removed = [v for v in old.values if v not in new.values]
        if removed:
            return Verdict("enum_values_removed", f"values removed: {', '.join(map(repr, removed))}", True)
        prefix = tuple(new.values[: len(old.values)]) == tuple(old.values)
        return Verdict("widening", rewrite=not prefix)

    if ob == nb and not old.params and not new.params:
        return Verdict("same")
    return Verdict("incompatible", f"{old} -> {new} changes the kind of value the old binary reads and writes")
