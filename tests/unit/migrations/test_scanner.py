"""The one statement scanner (``parse``): tokens and bracket structure read from the lexer's skeleton."""

from __future__ import annotations

import pytest

from veza_canary.migrations.parse import has_top_level_comma, lex, split_top_level, tokens, top_level_items


def _one(sql: str, dialect: str = "postgres") -> tuple[str, str]:
    [(_s, _e, code, skel)] = lex(sql, dialect)[0]
    return code, skel


@pytest.mark.parametrize("sql,want", [
    ("ALTER TYPE mood ADD VALUE 'it''s; fine' BEFORE 'ok'",
     [("word", "ALTER"), ("word", "TYPE"), ("word", "mood"), ("word", "ADD"), ("word", "VALUE"),
      ("str", "'it''s; fine'"), ("word", "BEFORE"), ("str", "'ok'")]),
    ("SELECT E'a\\'b', $x$ ) ; $x$, \"Odd \"\"(\" , $1::int",
     [("word", "SELECT"), ("str", "E'a\\'b'"), ("op", ","), ("dol", "$x$ ) ; $x$"), ("op", ","),
      ("qid", '"Odd ""("'), ("op", ","), ("op", "$"), ("num", "1"), ("op", "::"), ("word", "int")]),
    ("CREATE INDEX i ON t (a) -- a comment ( with a bracket\n", None),
])
def test_tokens_take_their_extent_from_the_skeleton_and_their_text_from_the_code(sql: str, want) -> None:
    code, skel = _one(sql)
    got = [(k, t) for k, t, _pos in tokens(code, skel)]
    if want is None:  # comments are gone: no token from inside one
        assert ("word", "comment") not in got and got[-1] == ("op", ")")
    else:
        assert got == want


def test_token_offsets_index_the_statement() -> None:
    code, skel = _one("DROP TABLE \"a b\", c")
    for _kind, text, pos in tokens(code, skel):
        assert code[pos:pos + len(text)] == text


def test_top_level_items_skip_strings_comments_and_quoted_identifiers() -> None:
    code, skel = _one("CREATE TABLE t (a text DEFAULT 'x, (y', \"b,)\" int, /* , ) */ c numeric(12, 2))")
    open_at = skel.index("(")
    close, items = top_level_items(skel, open_at)
    assert close == len(skel) - 1
    assert [code[s:e].strip() for s, e in items] == ["a text DEFAULT 'x, (y'", '"b,)" int',
                                                     "c numeric(12, 2)"]


def test_an_unclosed_bracket_has_no_items() -> None:
    assert top_level_items("CREATE TABLE t (a int", 15) is None


@pytest.mark.parametrize("skel,start,want", [
    ("ADD COLUMN a numeric(1, 2)", 0, False),
    ("ADD COLUMN a int, ADD COLUMN b int", 0, True),
    ('ADD COLUMN "x,y" int', 0, False),
    ("a, b", 2, False),
])
def test_has_top_level_comma(skel: str, start: int, want: bool) -> None:
    assert has_top_level_comma(skel, start) is want


def test_split_top_level() -> None:
    s = 'lower(a, b), "c,d" DESC, e'
    assert [s[a:b] for a, b in split_top_level(s)] == ["lower(a, b)", ' "c,d" DESC', " e"]
