"""CREATE TABLE bodies item by item, each distinct column definition parsed once.

Wide ``CREATE TABLE`` statements are most of what a migration history costs to parse,
and their column definitions repeat: ``created_at timestamptz NOT NULL DEFAULT now()``
appears in nearly every table, and a history has a few hundred distinct
"type + constraints" tails across tens of thousands of columns. So a statement of
the plain shape ``CREATE TABLE [IF NOT EXISTS] name ( item, ... ) [suffix]`` is
split here at its top-level commas (on the lexer's skeleton, where strings and
comments are blanked, so a comma in a default or a comment never splits), and

* the header -- when it is a plain ``CREATE TABLE [IF NOT EXISTS] name`` and nothing
  follows the body -- is read by ``shapes``; otherwise sqlglot parses it with one
  dummy column in place of the body;
* each item is parsed by sqlglot on its own, as ``CREATE TABLE t (item)``, memoized
  by its text; for a column whose name is a plain identifier that is no keyword of
  the dialect, by its text *after* the name, so the name is filled in afterwards.

A column definition parses the same wherever it stands in the list (sqlglot's
column-list grammar has no context), so the result equals parsing the whole
statement; ``tests/unit/migrations/test_tablebody.py`` checks that on tricky tables
and on a generated history. Anything unusual -- another shape, a quoted identifier
holding a bracket, an item sqlglot does not read as exactly one definition --
returns ``None`` and the caller parses the whole statement as before, so errors and
their positions are reported the usual way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from veza_canary.migrations.parse import top_level_items

_HEAD_RE = re.compile(
    r"\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?:\"[^\"]*\"|`[^`]*`|[A-Za-z_][A-Za-z0-9_$]*)(?:\s*\.\s*(?:\"[^\"]*\"|`[^`]*`|[A-Za-z_][A-Za-z0-9_$]*))?"
    r"\s*\(",
    re.IGNORECASE,
)
_FIRST_WORD_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_$]*)(?=\s)")
#: Words that start a table item other than a column in some dialect, keywords or not.
_ITEM_STARTS = frozenset({"CONSTRAINT", "PRIMARY", "FOREIGN", "UNIQUE", "CHECK", "EXCLUDE", "LIKE", "INDEX", "KEY",
                          "FULLTEXT", "SPATIAL", "PERIOD", "REFERENCES", "PARTITION"})
_DUMMY = "veza_dummy_col"
_PLACEHOLDER = "veza_col"
#: Cap on memoized items per process (a long-lived process must not grow without bound).
_MEMO_MAX = 50_000


@dataclass(slots=True)
class Memo:
    """A memoized item: sqlglot's node, and a slot for the caller's conversion of it."""

    node: Any
    converted: Any = None


@dataclass(frozen=True, slots=True)
class Head:
    """A plain table head read without sqlglot (``shapes.Shapes.table_head``)."""

    table: tuple[str, str]
    if_not_exists: bool


@dataclass(slots=True)
class Item:
    """One parsed item of a table body; ``name`` overrides a memoized column's placeholder."""

    node: Any
    name: str | None = None
    memo: Memo | None = None


def split_body(code: str, skel: str) -> tuple[int, int, list[tuple[int, int]]] | None:
    """``(open, close, items)``: offsets of the body's brackets and of each item, or None."""
    m = _HEAD_RE.match(skel)
    if m is None:
        return None
    open_at = m.end() - 1
    found = top_level_items(skel, open_at)
    if found is None:
        return None
    close_at, items = found
    if any(not code[s:e].strip() for s, e in items):
        return None
    return open_at, close_at, items


class BodyParser:
    """Parses table items with one dialect, memoizing each distinct item text."""

    def __init__(self, glot: Any) -> None:
        self.glot = glot
        # A word that starts a keyword phrase ("PRIMARY KEY", "FOREIGN KEY") starts no column either.
        self.keywords = frozenset(
            {k.upper() for k in glot.tokenizer_class.KEYWORDS}
            | {k.split()[0].upper() for k in glot.tokenizer_class.KEYWORDS if " " in k}
            | _ITEM_STARTS
        )
        self.memo: dict[tuple[bool, str], Memo | None] = {}

    def parse(self, code: str, skel: str, shapes: Any = None) -> tuple[exp.Create | Head, list[Item]] | None:
        """The header and the items of a plain CREATE TABLE, or None.

        The header is a ``Head`` read by ``shapes`` when it has a plain name and nothing
        follows the body, else sqlglot's parse of it with a dummy body.
        """
        split = split_body(code, skel)
        if split is None:
            return None
        open_at, close_at, spans = split
        header: exp.Create | Head | None = None
        if shapes is not None and not skel[close_at + 1:].strip():
            plain = shapes.table_head(skel)
            if plain is not None:
                header = Head(*plain)
        if header is None:
            head = self._one_item(f"{code[:open_at + 1]}{_DUMMY} INT{code[close_at:]}")
            if head is None or head[1].name != _DUMMY or head[0].expression is not None:
                return None
            header = head[0]
        items: list[Item] = []
        first_word, keywords, memo_get = _FIRST_WORD_RE.match, self.keywords, self.memo.get
        for s, e in spans:
            text = code[s:e].strip()
            m = first_word(skel, s, e)  # the memo hit of ``item``, inline: most items of a history are hits
            if m is not None:
                word = m.group(1)
                if text.startswith(word) and word.upper() not in keywords:
                    memo = memo_get((True, text[len(word):].lstrip()))
                    if memo is not None:
                        items.append(Item(memo.node, word.lower(), memo))
                        continue
            item = self.item(text, skel[s:e])
            if item is None:
                return None
            items.append(item)
        return header, items

    def item(self, text: str, skel: str) -> Item | None:
        """One item (``text`` stripped; ``skel`` its skeleton), parsed or from the memo; None if not one item."""
        m = _FIRST_WORD_RE.match(skel)
        word = m.group(1) if m else ""
        as_column = bool(word) and word.upper() not in self.keywords and text.startswith(word)
        key = (as_column, text[len(word):].lstrip() if as_column else text)
        memo = self.memo.get(key, False)
        if memo is False:
            sql = f"CREATE TABLE veza_t ({_PLACEHOLDER} {key[1]})" if as_column else f"CREATE TABLE veza_t ({text})"
            one = self._one_item(sql)
            node = one[1] if one is not None else None
            if as_column and not (isinstance(node, exp.ColumnDef) and node.name == _PLACEHOLDER):
                node = None
            if len(self.memo) >= _MEMO_MAX:
                self.memo.clear()
            memo = self.memo[key] = Memo(node) if node is not None else None
        if memo is None:
            return None
        return Item(memo.node, word.lower() if as_column else None, memo)

    def _one_item(self, sql: str) -> tuple[exp.Create, Any] | None:
        try:
            parsed = self.glot.parse(sql)
        except (ParseError, TokenError):
            return None
        if len(parsed) != 1 or not isinstance(parsed[0], exp.Create):
            return None
        e = parsed[0]
        if str(e.args.get("kind") or "").upper() != "TABLE" or not isinstance(e.this, exp.Schema):
            return None
        if len(e.this.expressions) != 1:
            return None
        return e, e.this.expressions[0]
