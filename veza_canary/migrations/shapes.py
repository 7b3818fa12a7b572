"""The commonest plain statement shapes, read without a whole-statement parse.

After wide CREATE TABLEs (``tablebody``), a history's parsing time goes to thousands
of one-line statements of two shapes:

* ``CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] name ON table [USING m] (col, ...)``
* ``ALTER TABLE [IF EXISTS] [ONLY] table ADD [COLUMN] [IF NOT EXISTS] <column definition>``
* the head ``CREATE TABLE [IF NOT EXISTS] name (`` of a table whose body ``tablebody``
  reads item by item, when nothing follows the body's closing bracket

For these exact shapes, on the skeleton (comments and strings blanked), the names
are read here and the column definition goes through ``tablebody``'s memo, so
sqlglot parses each distinct definition once. Only plain names qualify: an unquoted
identifier that is no keyword of the dialect, or a simply quoted one (double quotes
in PostgreSQL, backticks in MySQL); anything else -- expressions, ordering, opclasses,
``WHERE``, ``INCLUDE``, several actions -- is not matched and sqlglot parses the
statement as before. ``tests/unit/migrations/test_tablebody.py`` checks that each shape
gives the very same changes as the whole-statement parse.
"""

from __future__ import annotations

import re
from typing import Any

from veza_canary.migrations.parse import has_top_level_comma

_PG_ID = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_]*)'
_MY_ID = r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)"


def _patterns(ident: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    qname = rf"{ident}(?:\s*\.\s*{ident})?"
    index = re.compile(
        rf"\s*CREATE\s+(?P<unique>UNIQUE\s+)?INDEX\s+(?P<conc>CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
        rf"(?!(?:ON|CONCURRENTLY|IF)\b)(?P<name>{ident})\s+ON\s+(?P<table>{qname})\s*(?:USING\s+[A-Za-z_]+\s*)?"
        rf"\(\s*(?P<cols>{ident}(?:\s*,\s*{ident})*)\s*\)\s*\Z",
        re.IGNORECASE,
    )
    add = re.compile(
        rf"\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{qname})\s+ADD\s+(?:COLUMN\s+)?"
        rf"(?:IF\s+NOT\s+EXISTS\s+)?(?=[A-Za-z_\"`])",
        re.IGNORECASE,
    )
    table = re.compile(rf"\s*CREATE\s+TABLE\s+(?P<exists>IF\s+NOT\s+EXISTS\s+)?(?P<table>{qname})\s*\(",
                       re.IGNORECASE)
    return index, add, table


_PG = _patterns(_PG_ID)
_MY = _patterns(_MY_ID)
_IDENT_RE = {False: re.compile(_PG_ID), True: re.compile(_MY_ID)}


class Shapes:
    """Names read by the dialect's rules: unquoted ones folded to lower case, keywords refused."""

    def __init__(self, mysql: bool, default_schema: str, keywords: frozenset[str]) -> None:
        self.mysql = mysql
        self.default_schema = default_schema
        self.keywords = keywords
        self.index_re, self.add_re, self.table_re = _MY if mysql else _PG
        self.ident_re = _IDENT_RE[mysql]

    def ident(self, tok: str) -> str | None:
        if tok[0] in "\"`":
            inner = tok[1:-1]
            return inner.lower() if self.mysql else inner
        if tok.upper() in self.keywords:
            return None
        return tok.lower()

    def qname(self, text: str) -> tuple[str, str] | None:
        parts = [self.ident(t) for t in self.ident_re.findall(text)]
        if not parts or len(parts) > 2 or any(p is None for p in parts):
            return None
        if len(parts) == 1:
            return (self.default_schema, parts[0])  # type: ignore[return-value]
        return (parts[0], parts[1])  # type: ignore[return-value]

    def create_index(self, skel: str) -> dict[str, Any] | None:
        """The fields of a plain CREATE INDEX, or None."""
        if "(" not in skel:
            return None
        m = self.index_re.match(skel)
        if m is None:
            return None
        name = self.ident(m.group("name"))
        table = self.qname(m.group("table"))
        cols = [self.ident(t) for t in self.ident_re.findall(m.group("cols"))]
        if name is None or table is None or any(c is None for c in cols):
            return None
        return {"name": (table[0], name), "table": table, "unique": bool(m.group("unique")),
                "concurrently": bool(m.group("conc")), "index_columns": tuple(cols)}

    def table_head(self, skel: str) -> tuple[tuple[str, str], bool] | None:
        """``(table, if_not_exists)`` of a ``CREATE TABLE [IF NOT EXISTS] name (`` head, or None."""
        m = self.table_re.match(skel)
        if m is None:
            return None
        table = self.qname(m.group("table"))
        return None if table is None else (table, bool(m.group("exists")))

    def add_column(self, skel: str) -> tuple[tuple[str, str], int] | None:
        """``(table, offset of the column definition)`` of a plain ALTER TABLE ... ADD COLUMN, or None."""
        m = self.add_re.match(skel)
        if m is None:
            return None
        table = self.qname(m.group("table"))
        if table is None or has_top_level_comma(skel, m.end()):
            return None
        return table, m.end()
