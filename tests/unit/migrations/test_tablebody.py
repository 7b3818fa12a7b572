"""CREATE TABLE bodies read item by item (``tablebody``) must give exactly what a whole-statement parse gives.

The fast path in ``analyze.analyze_code`` splits a plain ``CREATE TABLE`` at its
top-level commas and parses each item on its own, memoized by the text after the
column name. It is only an optimisation: every test here compares it with the
whole-statement parse (``BodyParser.parse`` patched to decline), cold and with the
memo warm, and checks that the fast path is really taken where it should be.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from veza_canary.migrations import analyze
from veza_canary.migrations.analyze import analyze_text
from veza_canary.migrations.changes import AnalyzedFile
from veza_canary.migrations.parse import lex_file, normalize_text
from veza_canary.migrations.tablebody import BodyParser, Head, split_body

from .helpers import codes, lint_sql

PG_CASES: dict[str, str] = {
    "plain": "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, "
             "created_at timestamptz NOT NULL DEFAULT now());",
    "quoted_columns": 'CREATE TABLE t ("My Col" int NOT NULL, "other" text, "MiXeD" int);',
    "quoted_table_with_comma_and_parens": 'CREATE TABLE "we,ird(t)" (id int PRIMARY KEY, v text);',
    "quoted_table_with_close_paren": 'CREATE TABLE "a)b" (x int);',
    "quoted_columns_with_comma_and_parens": 'CREATE TABLE t ("a(b" int, "c,d" text DEFAULT \'x\', e int);',
    "quoted_column_with_escaped_quote": 'CREATE TABLE t ("a""b" int, c int);',
    "schema_qualified": "CREATE TABLE app.orders (id int PRIMARY KEY, total numeric(12,2));",
    "schema_qualified_quoted": 'CREATE TABLE "App"."Orders" (id int, "Total" numeric(12, 2) NOT NULL);',
    "keyword_columns_quoted": 'CREATE TABLE t ("type" text, "date" date, "key" int, status text, "order" int, '
                              '"user" text, "like" int, "check" int, "primary" int);',
    "keywordish_columns_unquoted": "CREATE TABLE t (type text, date date, key text, status text, name text, "
                                   "value int, level int, comment text, data jsonb);",
    "names_starting_with_constraint_words": "CREATE TABLE t (constraint_name text, primary_key int, "
                                            "check_count int, unique_id int, foreign_id int, like_count int);",
    "defaults_with_commas_and_parens": "CREATE TABLE t (a text DEFAULT 'x, y', b text DEFAULT 'it''s (a) test', "
                                       "c int DEFAULT (1 + 2), d numeric DEFAULT round(1.234, 2));",
    "nested_paren_defaults": "CREATE TABLE t (a int DEFAULT ((1 + (2 * 3))), b text DEFAULT lower(upper('A,B')));",
    "escape_string_default": "CREATE TABLE t (a text DEFAULT E'x\\', y', b int);",
    "dollar_quoted_default": "CREATE TABLE t (a text DEFAULT $$x, (y$$, b int);",
    "jsonb_default": "CREATE TABLE t (meta jsonb NOT NULL DEFAULT '{}'::jsonb);",
    "array_defaults": "CREATE TABLE t (tags text[] DEFAULT '{}', arr int[] DEFAULT ARRAY[1,2]);",
    "volatile_defaults": "CREATE TABLE t (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                         "n bigint DEFAULT nextval('t_seq'), at timestamptz DEFAULT now(), r float DEFAULT random());",
    "nextval_regclass": "CREATE TABLE t (id int NOT NULL DEFAULT nextval('t_id_seq'::regclass));",
    "special_value_defaults": "CREATE TABLE t (d date DEFAULT CURRENT_DATE, ts timestamp DEFAULT CURRENT_TIMESTAMP, "
                              "x text DEFAULT CAST(1 AS text), i interval DEFAULT interval '1 day');",
    "null_and_boolean_defaults": "CREATE TABLE t (a int DEFAULT NULL, b int NULL, c boolean DEFAULT false, "
                                 "d boolean DEFAULT TRUE);",
    "check_inline": "CREATE TABLE t (price int CHECK (price > 0), qty int NOT NULL CHECK (qty >= 0 AND qty < 100));",
    "check_inline_no_space": "CREATE TABLE t (a int, CHECK(a > 0));",
    "check_table_level": "CREATE TABLE t (a int, b int, CHECK (a < b), CONSTRAINT b_pos CHECK (b > 0));",
    "named_inline_constraints": "CREATE TABLE t (a int CONSTRAINT a_nn NOT NULL, b int CONSTRAINT b_uq UNIQUE, "
                                "c int CONSTRAINT c_pk PRIMARY KEY);",
    "named_table_pk_and_fk": "CREATE TABLE t (a int, u int, CONSTRAINT t_pk PRIMARY KEY (a), "
                             "CONSTRAINT t_u_fk FOREIGN KEY (u) REFERENCES users (id) ON DELETE CASCADE);",
    "pk_composite": pytest.param("CREATE TABLE t (a int, b int, c text, PRIMARY KEY (a, b));"),
    "pk_lower_case": pytest.param("create table t (a int, primary key (a));"),
    "pk_include": "CREATE TABLE t (a int, b int, PRIMARY KEY (a) INCLUDE (b));",
    "unique_composite": "CREATE TABLE t (a int, b int, UNIQUE (a, b), CONSTRAINT t_ab UNIQUE (b, a));",
    "unique_inline": "CREATE TABLE t (a int UNIQUE, b int UNIQUE NOT NULL, c text);",
    "unique_nulls_not_distinct": "CREATE TABLE t (a int, UNIQUE NULLS NOT DISTINCT (a));",
    "fk_table_level": pytest.param("CREATE TABLE t (id int, u int, FOREIGN KEY (u) REFERENCES users (id) "
                                   "ON DELETE CASCADE);"),
    "fk_inline": "CREATE TABLE t (u bigint REFERENCES users(id) ON DELETE CASCADE, "
                 "s int NOT NULL REFERENCES app.s (id));",
    "fk_deferrable": "CREATE TABLE t (u int REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED, "
                     "CONSTRAINT fk2 FOREIGN KEY (u) REFERENCES x(y) DEFERRABLE);",
    "pk_using_index_tablespace": "CREATE TABLE t (a int, CONSTRAINT t_pk PRIMARY KEY (a) USING INDEX TABLESPACE f);",
    "identity": "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "id2 int GENERATED BY DEFAULT AS IDENTITY, x int);",
    "identity_options": "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY (START WITH 10 INCREMENT BY 5), "
                        "x int);",
    "generated_stored": "CREATE TABLE t (a int, b int, s int GENERATED ALWAYS AS (a + b) STORED, "
                        "f text GENERATED ALWAYS AS (coalesce(a::text, '') || ',' || b::text) STORED);",
    "serials": "CREATE TABLE t (a serial, b bigserial PRIMARY KEY, c smallserial, d serial4, e serial8);",
    "arrays": "CREATE TABLE t (tags text[] NOT NULL, m int[][], v varchar(10)[]);",
    "numeric_params": "CREATE TABLE t (a numeric(12,2), b decimal(5, 0) DEFAULT 0, c varchar(255), "
                      "d timestamp(3) with time zone, e time without time zone, f double precision, "
                      "g character varying(20));",
    "unparseable_type_same_error": "CREATE TABLE t (a int, h bit varying(8));",
    "comments_in_body": "CREATE TABLE t (\n  a int, -- a comment, with commas (and parens\n"
                        "  b text /* ( , ) */ NOT NULL,\n  /* leading, comment */ c int\n);",
    "comment_before_close": "CREATE TABLE t (\n  a int,\n  b int -- last, column\n);",
    "comment_in_header": "CREATE TABLE t /* (x, y) */ (a int, b int);",
    "crlf": "CREATE TABLE t (\r\n  a int NOT NULL,\r\n  b text DEFAULT 'x,\r\ny'\r\n);\r\n",
    "odd_whitespace": "CREATE   TABLE\n  t\n(\n\ta\tint\n\t,b\ttext\n)\n;",
    "name_then_newline": "CREATE TABLE t (a\nint, b\tint);",
    "no_space_before_paren": "CREATE TABLE t(a int,b int);",
    "space_before_commas": "CREATE TABLE t (a int , b int );",
    "no_semicolon": "CREATE TABLE t (a int)",
    "if_not_exists": "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text);",
    "if_not_exists_schema": "CREATE TABLE IF NOT EXISTS s.t (id int PRIMARY KEY);",
    "partition_by_range": pytest.param("CREATE TABLE m (id bigint NOT NULL, at timestamptz NOT NULL, "
                                       "PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"),
    "partition_by_range_no_pk": "CREATE TABLE m (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at);",
    "partition_of": "CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');",
    "inherits": "CREATE TABLE child (extra int) INHERITS (parent);",
    "with_fillfactor": "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (fillfactor=70);",
    "tablespace": "CREATE TABLE t (a int) TABLESPACE fast;",
    "like_including_all": "CREATE TABLE t (LIKE other INCLUDING ALL);",
    "like_plus_columns": "CREATE TABLE t (LIKE other INCLUDING DEFAULTS, extra int NOT NULL DEFAULT 0);",
    "ctas": "CREATE TABLE t AS SELECT id, name FROM users;",
    "ctas_parenthesized": "CREATE TABLE t AS (SELECT 1 AS a, 2 AS b);",
    "ctas_with_column_list": "CREATE TABLE t (a, b) AS SELECT 1, 2;",
    "of_type": "CREATE TABLE t OF mytype;",
    "temp": "CREATE TEMP TABLE t (a int, b text);",
    "temporary_on_commit": "CREATE TEMPORARY TABLE t (a int) ON COMMIT DROP;",
    "unlogged": "CREATE UNLOGGED TABLE t (a int PRIMARY KEY);",
    "trailing_comma": "CREATE TABLE t (a int, b int,);",
    "double_comma": "CREATE TABLE t (a int,, b int);",
    "comment_only_item": "CREATE TABLE t (a int, /* nothing */ );",
    "empty_body": "CREATE TABLE t ();",
    "unbalanced_open": "CREATE TABLE t (a int, b numeric(12,2;",
    "unbalanced_close": "CREATE TABLE t (a int, b int));",
    "missing_close": "CREATE TABLE t (a int, b int",
    "exclude": "CREATE TABLE t (r tsrange, EXCLUDE USING gist (r WITH &&));",
    "exclude_without_using": "CREATE TABLE t (r tsrange, EXCLUDE (r WITH &&));",
    "collate": 'CREATE TABLE t (name text COLLATE "C" NOT NULL, n2 text COLLATE "de_DE");',
    "storage_same_error": "CREATE TABLE t (a text STORAGE EXTERNAL, b text);",
    "upper_case_names": "CREATE TABLE Users (ID INT PRIMARY KEY, EMail TEXT NOT NULL, CreatedAt TIMESTAMPTZ);",
    "user_types": "CREATE TABLE t (s mood NOT NULL DEFAULT 'ok', c public.citext, x my_schema.my_type[]);",
    "dollar_in_name": "CREATE TABLE t (a$b int, c int);",
    "unicode_names": 'CREATE TABLE t ("naïve" int, café int);',
    "same_tail_two_tables": "CREATE TABLE t1 (id bigserial PRIMARY KEY, email text UNIQUE, name text NOT NULL);\n"
                            "CREATE TABLE t2 (id bigserial PRIMARY KEY, email text UNIQUE, name text NOT NULL);",
    "same_tail_different_name_case": "CREATE TABLE t1 (A int NOT NULL);\nCREATE TABLE t2 (a int NOT NULL);",
    "same_inline_check_tail": "CREATE TABLE a1 (x int CHECK (x > 0));\nCREATE TABLE a2 (y int CHECK (x > 0));",
    "same_inline_fk_tail": "CREATE TABLE b1 (u int REFERENCES users(id));\nCREATE TABLE b2 (v int REFERENCES users(id));",
    "same_tail_in_two_schemas": "CREATE TABLE a.t (id int PRIMARY KEY);\nCREATE TABLE b.t (id int PRIMARY KEY);",
    "create_table_in_do_block": "DO $$ BEGIN CREATE TABLE t (a int, b text DEFAULT 'x, y'); END $$;",
}

MYSQL_CASES: dict[str, Any] = {
    "plain_named_pk": "CREATE TABLE users (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, email VARCHAR(255) NOT NULL, "
                      "CONSTRAINT pk PRIMARY KEY (id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;",
    "plain_unnamed_pk": pytest.param("CREATE TABLE users (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, "
                                     "email VARCHAR(255) NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB "
                                     "DEFAULT CHARSET=utf8mb4;"),
    "pk_using_btree": pytest.param("CREATE TABLE t (id int, PRIMARY KEY (id) USING BTREE);"),
    "backtick_names": "CREATE TABLE `my table` (`id` int NOT NULL AUTO_INCREMENT PRIMARY KEY, `the,col` varchar(10), "
                      "`a(b` int);",
    "backtick_schema": "CREATE TABLE `db`.`t` (`Id` INT, Name TEXT);",
    "backtick_keyword_columns": "CREATE TABLE t (`key` int, `order` int, `type` varchar(5), `status` int);",
    "backtick_pk_columns": pytest.param("CREATE TABLE t (`a` int, `B` int, PRIMARY KEY (`a`, `B`));"),
    "keys_and_indexes": "CREATE TABLE t (a int, b int, c varchar(20), KEY idx_a (a), UNIQUE KEY uq_bc (b, c), "
                        "INDEX idx_c (c), UNIQUE INDEX (a, b));",
    "key_no_space": "CREATE TABLE t (a int, KEY(a));",
    "unique_unnamed": "CREATE TABLE t (a int, b int, UNIQUE (a), UNIQUE KEY (b));",
    "fulltext_key": pytest.param("CREATE TABLE t (body text, FULLTEXT KEY ft (body));"),
    "fulltext_index": pytest.param("CREATE TABLE t (body text, FULLTEXT INDEX ft (body));"),
    "fulltext_anonymous": "CREATE TABLE t (body text, FULLTEXT (body));",
    "spatial_index": pytest.param("CREATE TABLE t (g geometry NOT NULL, SPATIAL INDEX sp (g));"),
    "enum_and_set": "CREATE TABLE t (status ENUM('a','b','c, d') NOT NULL DEFAULT 'a', s SET('x','y'));",
    "unsigned": "CREATE TABLE t (a INT UNSIGNED, b TINYINT(1) UNSIGNED NOT NULL DEFAULT 0, c DECIMAL(10,2) UNSIGNED);",
    "auto_increment": "CREATE TABLE t (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, n int);",
    "engine_suffix": "CREATE TABLE t (id int) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 "
                     "COLLATE=utf8mb4_unicode_ci COMMENT='a, b';",
    "column_comment_and_charset": "CREATE TABLE t (a int COMMENT 'the, a', b varchar(10) CHARACTER SET utf8mb4 "
                                  "COLLATE utf8mb4_bin);",
    "on_update": "CREATE TABLE t (updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP "
                 "ON UPDATE CURRENT_TIMESTAMP, d DATETIME(6));",
    "fk_named": "CREATE TABLE t (id int, u int, CONSTRAINT fk_u FOREIGN KEY (u) REFERENCES users (id) "
                "ON DELETE CASCADE);",
    "fk_unnamed": pytest.param("CREATE TABLE t (id int, FOREIGN KEY (id) REFERENCES x (y));"),
    "check": "CREATE TABLE t (a int CHECK (a > 0), b int, CHECK (b < 10), CONSTRAINT chk_b CHECK (b < 10));",
    "if_not_exists": "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY);",
    "upper_case_names": "CREATE TABLE Orders (OrderId INT PRIMARY KEY, CustomerName VARCHAR(100));",
    "generated": "CREATE TABLE t (a int, b int, s int GENERATED ALWAYS AS (a + b) STORED, v int AS (a * 2) VIRTUAL);",
    "hash_comment": "CREATE TABLE t (\n a int, # a, comment (\n b int\n);",
    "double_quoted_string_default": 'CREATE TABLE t (a varchar(10) DEFAULT "x,y", b int);',
    "backslash_string_default": "CREATE TABLE t (a varchar(10) DEFAULT 'x\\', y', b int);",
    "json_and_text_types": "CREATE TABLE t (j JSON, b BLOB, t TINYTEXT, m MEDIUMTEXT, y YEAR);",
    "temporary": "CREATE TEMPORARY TABLE t (a int);",
    "like": "CREATE TABLE t LIKE other;",
    "ctas": "CREATE TABLE t AS SELECT * FROM other;",
    "trailing_comma": "CREATE TABLE t (a int, b int,);",
    "unbalanced": "CREATE TABLE t (a int, b decimal(10,2);",
    "partition_same_error": "CREATE TABLE t (id int, d date) PARTITION BY RANGE (YEAR(d)) "
                            "(PARTITION p0 VALUES LESS THAN (2000), PARTITION p1 VALUES LESS THAN MAXVALUE);",
    "same_tail_two_tables": "CREATE TABLE t1 (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, email varchar(255) UNIQUE);\n"
                            "CREATE TABLE t2 (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, login varchar(255) UNIQUE);",
}


def _params() -> list[Any]:
    out = []
    for dialect, cases in (("postgres", PG_CASES), ("mysql", MYSQL_CASES)):
        for name, case in cases.items():
            if isinstance(case, str):
                out.append(pytest.param(dialect, case, id=f"{dialect}-{name}"))
            else:
                out.append(pytest.param(dialect, *case.values, marks=case.marks, id=f"{dialect}-{name}"))
    return out


@pytest.fixture
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty item memos for this test (they are process-wide, per dialect)."""
    monkeypatch.setattr(analyze, "_BODIES", {})
    monkeypatch.setattr(analyze, "_SHAPES", {})


@pytest.fixture
def fast_taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per ``BodyParser.parse`` call: whether it returned a result (the fast path)."""
    taken: list[bool] = []
    real = BodyParser.parse

    def spy(self: BodyParser, code: str, skel: str, shapes: Any = None) -> Any:
        r = real(self, code, skel, shapes)
        taken.append(r is not None)
        return r

    monkeypatch.setattr(BodyParser, "parse", spy)
    return taken


def _whole_statement(sql: str, dialect: str, monkeypatch: pytest.MonkeyPatch) -> AnalyzedFile:
    with monkeypatch.context() as m:
        m.setattr(BodyParser, "parse", lambda self, code, skel, shapes=None: None)
        return analyze_text(sql, dialect)


def _changes(af: AnalyzedFile) -> list[Any]:
    return [st.changes for st in af.statements]


def _assert_same(got: AnalyzedFile, want: AnalyzedFile) -> None:
    assert got.error == want.error
    assert _changes(got) == _changes(want)
    assert got == want


def _stmt(sql: str, dialect: str = "postgres") -> tuple[str, str]:
    st = lex_file(normalize_text(sql), dialect).statements[0]
    return st.code, st.skeleton


# --- the differential test -----------------------------------------------------------


@pytest.mark.parametrize(("dialect", "sql"), _params())
def test_fast_path_equals_whole_statement_parse(dialect: str, sql: str, monkeypatch: pytest.MonkeyPatch,
                                               fresh_memo: None) -> None:
    want = _whole_statement(sql, dialect, monkeypatch)
    _assert_same(analyze_text(sql, dialect), want)  # cold memo
    _assert_same(analyze_text(sql, dialect), want)  # every item from the memo


def test_the_differential_cases_mostly_take_the_fast_path(monkeypatch: pytest.MonkeyPatch, fresh_memo: None,
                                                          fast_taken: list[bool]) -> None:
    """Otherwise the differential test above compares the slow path with itself."""
    for cases, dialect in ((PG_CASES, "postgres"), (MYSQL_CASES, "mysql")):
        fast_taken.clear()
        for case in cases.values():
            analyze_text(case if isinstance(case, str) else case.values[0], dialect)
        assert sum(fast_taken) >= 0.6 * len(cases), (dialect, fast_taken)


@pytest.mark.parametrize(("dialect", "sql", "n_items"), [
    ("postgres", PG_CASES["plain"], 3),
    ("postgres", PG_CASES["quoted_columns_with_comma_and_parens"], 3),
    ("postgres", PG_CASES["quoted_table_with_comma_and_parens"], 2),
    ("postgres", PG_CASES["defaults_with_commas_and_parens"], 4),
    ("postgres", PG_CASES["comments_in_body"], 3),
    ("postgres", PG_CASES["crlf"], 2),
    ("postgres", PG_CASES["with_fillfactor"], 2),
    ("postgres", PG_CASES["partition_by_range_no_pk"], 2),
    ("postgres", PG_CASES["generated_stored"], 4),
    ("mysql", MYSQL_CASES["backtick_names"], 3),
    ("mysql", MYSQL_CASES["engine_suffix"], 1),
    ("mysql", MYSQL_CASES["enum_and_set"], 2),
])
def test_fast_path_is_taken_for_plain_tables(dialect: str, sql: str, n_items: int, fresh_memo: None,
                                             fast_taken: list[bool]) -> None:
    af = analyze_text(sql, dialect)
    assert af.error is None
    assert fast_taken == [True]
    code, skel = _stmt(sql, dialect)
    parsed = BodyParser(analyze._dialect(dialect)).parse(code, skel)
    assert parsed is not None
    assert len(parsed[1]) == n_items


@pytest.mark.parametrize(("dialect", "sql", "plain_head"), [
    ("postgres", "CREATE TABLE t (a int, b text)", True),
    ("postgres", "CREATE TABLE IF NOT EXISTS app.t (a int)", True),
    ("postgres", 'CREATE TABLE "My T" (a int)', True),
    ("postgres", "CREATE TABLE t (a int) PARTITION BY RANGE (a)", False),  # something follows the body
    ("postgres", "CREATE TABLE t (a int) WITH (fillfactor = 70)", False),
    ("postgres", "CREATE TABLE t (a int) INHERITS (p)", False),
    ("mysql", "CREATE TABLE `db`.`t` (a int)", True),
    ("mysql", "CREATE TABLE t (a int) ENGINE=InnoDB", False),
])
def test_plain_heads_are_read_without_sqlglot(dialect: str, sql: str, plain_head: bool, monkeypatch: pytest.MonkeyPatch,
                                              fresh_memo: None) -> None:
    """Only ``CREATE TABLE [IF NOT EXISTS] name (...)`` with nothing after the body skips the header parse."""
    heads: list[str] = []
    real = BodyParser._one_item

    def spy(self: BodyParser, sql: str) -> Any:
        if "veza_dummy_col" in sql:
            heads.append(sql)
        return real(self, sql)

    monkeypatch.setattr(BodyParser, "_one_item", spy)
    code, skel = _stmt(sql, dialect)
    parsed = BodyParser(analyze._dialect(dialect)).parse(code, skel, analyze._shapes(analyze.Ctx(dialect, sql)))
    if parsed is not None:
        assert isinstance(parsed[0], Head) is plain_head
    assert (heads == []) is plain_head
    with monkeypatch.context() as m:
        m.setattr(BodyParser, "parse", lambda self, code, skel, shapes=None: None)
        want = analyze_text(sql + ";", dialect)
    _assert_same(analyze_text(sql + ";", dialect), want)


@pytest.mark.parametrize(("dialect", "sql"), [
    ("postgres", PG_CASES["ctas"]),
    ("postgres", PG_CASES["ctas_parenthesized"]),
    ("postgres", PG_CASES["ctas_with_column_list"]),
    ("postgres", PG_CASES["partition_of"]),
    ("postgres", PG_CASES["trailing_comma"]),
    ("postgres", PG_CASES["double_comma"]),
    ("postgres", PG_CASES["comment_only_item"]),
    ("postgres", PG_CASES["empty_body"]),
    ("postgres", PG_CASES["unbalanced_open"]),
    ("postgres", PG_CASES["unbalanced_close"]),
    ("postgres", PG_CASES["missing_close"]),
    ("postgres", PG_CASES["unparseable_type_same_error"]),
    ("mysql", MYSQL_CASES["like"]),
    ("mysql", MYSQL_CASES["ctas"]),
    ("mysql", MYSQL_CASES["trailing_comma"]),
    ("mysql", MYSQL_CASES["unbalanced"]),
])
def test_unusual_shapes_fall_back_to_the_whole_statement(dialect: str, sql: str) -> None:
    code, skel = _stmt(sql, dialect)
    assert BodyParser(analyze._dialect(dialect)).parse(code, skel) is None


def test_errors_are_reported_at_the_same_place(monkeypatch: pytest.MonkeyPatch, fresh_memo: None) -> None:
    sql = "CREATE TABLE ok (a int);\n\nCREATE TABLE t (\n  a int,\n  b numeric(12,2\n);\n"
    want = _whole_statement(sql, "postgres", monkeypatch)
    got = analyze_text(sql, "postgres")
    assert want.error is not None and want.error[0] >= 3  # the broken statement, not the first one
    assert got.error == want.error


# --- the memo: one parse per column tail, names per table ------------------------------------


def test_memoized_tail_gets_each_tables_own_column_and_constraint_names(fresh_memo: None,
                                                                         fast_taken: list[bool]) -> None:
    sql = ("CREATE TABLE t1 (id bigserial PRIMARY KEY, email text UNIQUE, a int NOT NULL);\n"
           "CREATE TABLE t2 (id bigserial PRIMARY KEY, email text UNIQUE, b int NOT NULL);\n")
    af = analyze_text(sql, "postgres")
    assert af.error is None
    assert fast_taken == [True, True]
    t1, t2 = (st.changes[0] for st in af.statements)
    assert t1.name == ("public", "t1") and t2.name == ("public", "t2")
    assert [c.name for c in t1.extra["columns"]] == ["id", "email", "a"]
    assert [c.name for c in t2.extra["columns"]] == ["id", "email", "b"]
    assert [(k.kind, k.name, k.columns) for k in t1.extra["constraints"]] == [
        ("pk", "t1_pkey", ("id",)), ("unique", "t1_email_key", ("email",))]
    assert [(k.kind, k.name, k.columns) for k in t2.extra["constraints"]] == [
        ("pk", "t2_pkey", ("id",)), ("unique", "t2_email_key", ("email",))]
    # The column-level constraints are the table's constraints.
    assert t2.extra["columns"][0].constraints == (t2.extra["constraints"][0],)
    assert all(c.not_null for c in t2.extra["columns"][::2])
    tails = {key[1] for key in analyze._BODIES["postgres"].memo}
    assert {"bigserial PRIMARY KEY", "text UNIQUE", "int NOT NULL"} <= tails  # the memo was hit


def test_memoized_tail_in_mysql_names_unique_keys_after_their_column(fresh_memo: None,
                                                                     fast_taken: list[bool]) -> None:
    af = analyze_text(MYSQL_CASES["same_tail_two_tables"], "mysql")
    assert fast_taken == [True, True]
    t1, t2 = (st.changes[0] for st in af.statements)
    assert [(k.kind, k.name, k.columns) for k in t1.extra["constraints"]] == [
        ("pk", "primary", ("id",)), ("unique", "email", ("email",))]
    assert [(k.kind, k.name, k.columns) for k in t2.extra["constraints"]] == [
        ("pk", "primary", ("id",)), ("unique", "login", ("login",))]
    assert t1.extra["columns"][0].identity == t2.extra["columns"][0].identity == "auto_increment"


def test_memoized_column_specs_are_not_shared_between_tables(fresh_memo: None) -> None:
    sql = "CREATE TABLE t1 (a int NOT NULL DEFAULT 0);\nCREATE TABLE t2 (b int NOT NULL DEFAULT 0);\n"
    first = analyze_text(sql, "postgres")
    col = first.statements[0].changes[0].extra["columns"][0]
    col.not_null, col.default, col.name = False, "changed", "changed"  # a consumer mutating its copy
    again = analyze_text(sql, "postgres")
    for st, name in zip(again.statements, ("a", "b"), strict=True):
        c = st.changes[0].extra["columns"][0]
        assert (c.name, c.not_null, c.default) == (name, True, "0")


def test_memo_is_per_dialect(fresh_memo: None) -> None:
    # Quoted "A" keeps its case in Postgres; MySQL folds every identifier.
    assert analyze_text('CREATE TABLE t (x int, "A" int);', "postgres").statements[0].changes[0] \
        .extra["columns"][1].name == "A"
    my = analyze_text("CREATE TABLE t (x int, `A` int);", "mysql").statements[0].changes[0]
    assert [c.name for c in my.extra["columns"]] == ["x", "a"]
    assert set(analyze._BODIES) == {"postgres", "mysql"}


# --- a generated history -----------------------------------------------------------------------

_PG_TAILS = [
    "bigserial PRIMARY KEY", "uuid PRIMARY KEY DEFAULT gen_random_uuid()", "text NOT NULL", "text",
    "varchar(255) NOT NULL DEFAULT ''", "timestamptz NOT NULL DEFAULT now()", "jsonb NOT NULL DEFAULT '{{}}'::jsonb",
    "numeric(12,2) NOT NULL DEFAULT 0", "integer CHECK ({c} > 0)", "bigint REFERENCES users(id) ON DELETE CASCADE",
    "boolean NOT NULL DEFAULT false", "text[] DEFAULT '{{}}'", "int GENERATED ALWAYS AS IDENTITY", "text UNIQUE",
    "int CONSTRAINT {t}_{n}_nn NOT NULL", "text DEFAULT 'a, (b)'", "int GENERATED ALWAYS AS (1 + 2) STORED",
    "date DEFAULT CURRENT_DATE", "bigint NOT NULL DEFAULT nextval('s_seq')", "smallint NOT NULL DEFAULT 1",
    "int /* a, comment ( */ NOT NULL", "varchar(10)[]",
]
_PG_NAMES = ["id", "name", "email", "status", "type", '"Order"', '"key"', "created_at", "value", "data", "level",
             "amount", '"My Col"', "owner_id", "Kind", "note$1"]
_PG_TABLE_ITEMS = ["UNIQUE ({c1}, {c2})", "CONSTRAINT {t}_chk CHECK ({c1} IS NOT NULL)",
                   "CONSTRAINT {t}_pk PRIMARY KEY ({c1}, {c2})",
                   "CONSTRAINT {t}_fk FOREIGN KEY ({c1}) REFERENCES users (id)", "CHECK ({c1} <> {c2})"]
_MY_TAILS = ["int NOT NULL AUTO_INCREMENT PRIMARY KEY", "varchar(255) NOT NULL DEFAULT ''", "INT UNSIGNED",
             "ENUM('a','b, c') NOT NULL DEFAULT 'a'", "decimal(10,2) NOT NULL DEFAULT 0", "text",
             "datetime NOT NULL DEFAULT CURRENT_TIMESTAMP", "tinyint(1) NOT NULL DEFAULT 0", "varchar(20) UNIQUE",
             "int COMMENT 'x, (y)'", "bigint REFERENCES users(id)"]
_MY_NAMES = ["id", "name", "`order`", "`key`", "status", "`Mixed Case`", "Email", "type", "level"]
_MY_TABLE_ITEMS = ["KEY idx_{n} ({c1})", "UNIQUE KEY uq_{n} ({c1}, {c2})", "INDEX ({c2})",
                   "CONSTRAINT fk_{n} FOREIGN KEY ({c1}) REFERENCES users (id)", "CONSTRAINT {t}_pk PRIMARY KEY ({c1})"]


def _history(rng: random.Random, n: int, tails: list[str], names: list[str], items: list[str],
             table: Callable[[int], str], suffixes: list[str]) -> str:
    out = []
    for i in range(n):
        t = table(i)
        cols = rng.sample(names, rng.randint(1, min(7, len(names))))
        body = []
        for j, c in enumerate(cols):
            plain = c.strip('"`').lower().replace(" ", "_").replace("$", "_")
            body.append(f"{c} " + rng.choice(tails).format(c=c, t=f"t{i}", n=f"{plain}{j}"))
        if len(cols) >= 2 and rng.random() < 0.5:
            body.append(rng.choice(items).format(c1=cols[0], c2=cols[1], t=f"t{i}", n=i))
        sep = rng.choice([", ", ",\n  ", " ,", ",\r\n  "])
        out.append(f"CREATE TABLE {t} ({sep.join(body)}){rng.choice(suffixes)};")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_postgres_history(seed: int, monkeypatch: pytest.MonkeyPatch, fresh_memo: None,
                                    fast_taken: list[bool]) -> None:
    rng = random.Random(seed)
    sql = _history(rng, 60, _PG_TAILS, _PG_NAMES, _PG_TABLE_ITEMS,
                   lambda i: rng.choice([f"t{i}", f"app.t{i}", f'"T {i}"', f"IF NOT EXISTS t{i}"]),
                   ["", " WITH (fillfactor=70)", " PARTITION BY RANGE (id)", " INHERITS (base)"])
    want = _whole_statement(sql, "postgres", monkeypatch)
    assert want.error is None
    got = analyze_text(sql, "postgres")
    assert sum(fast_taken) >= 45  # most tables took the fast path
    _assert_same(got, want)
    _assert_same(analyze_text(sql, "postgres"), want)


@pytest.mark.parametrize("seed", [1, 2])
def test_generated_mysql_history(seed: int, monkeypatch: pytest.MonkeyPatch, fresh_memo: None,
                                 fast_taken: list[bool]) -> None:
    rng = random.Random(seed)
    sql = _history(rng, 40, _MY_TAILS, _MY_NAMES, _MY_TABLE_ITEMS,
                   lambda i: rng.choice([f"t{i}", f"`db`.`t{i}`", f"`T {i}`", f"IF NOT EXISTS t{i}"]),
                   ["", " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", " ENGINE=InnoDB AUTO_INCREMENT=10"])
    want = _whole_statement(sql, "mysql", monkeypatch)
    assert want.error is None
    got = analyze_text(sql, "mysql")
    assert sum(fast_taken) >= 30
    _assert_same(got, want)


# --- ALTER TABLE ... ADD through the same item memo (``analyze._add_column_fast``) ----------------------

@pytest.mark.parametrize(("dialect", "sql"), [
    ("postgres", "ALTER TABLE t ADD COLUMN a int NOT NULL DEFAULT 0;"),
    ("postgres", "ALTER TABLE t ADD a text;"),
    ("postgres", "ALTER TABLE t ADD COLUMN IF NOT EXISTS a int;"),
    ("postgres", "ALTER TABLE ONLY s.t ADD COLUMN \"My Col\" text DEFAULT 'x, y';"),
    ("postgres", "ALTER TABLE IF EXISTS t ADD COLUMN a jsonb NOT NULL DEFAULT '{}'::jsonb;"),
    ("postgres", "ALTER TABLE t ADD COLUMN a int REFERENCES u(id);"),
    ("postgres", "ALTER TABLE t ADD COLUMN id bigserial PRIMARY KEY;"),
    ("postgres", "ALTER TABLE t ADD COLUMN e text UNIQUE;"),
    ("postgres", "ALTER TABLE t ADD COLUMN a int CHECK (a > 0);"),
    ("postgres", "ALTER TABLE t ADD COLUMN type text;"),
    ("postgres", "ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS IDENTITY;"),
    ("postgres", "ALTER TABLE t ADD COLUMN a int, ADD COLUMN b int;"),
    ("postgres", "ALTER TABLE t ADD CHECK (a > 0);"),
    ("postgres", "ALTER TABLE t ADD UNIQUE (a);"),
    ("postgres", "ALTER TABLE t ADD CONSTRAINT c PRIMARY KEY (a);"),
    ("postgres", "ALTER TABLE t ADD EXCLUDE USING gist (r WITH &&);"),
    pytest.param("postgres", "ALTER TABLE t ADD PRIMARY KEY (id);"),
    pytest.param("postgres", "ALTER TABLE t ADD FOREIGN KEY (u) REFERENCES x(y);"),
    ("mysql", "ALTER TABLE t ADD COLUMN a int NOT NULL DEFAULT 0;"),
    ("mysql", "ALTER TABLE `t` ADD `a` ENUM('x','y') NOT NULL;"),
    ("mysql", "ALTER TABLE t ADD COLUMN a int AFTER b;"),
    ("mysql", "ALTER TABLE t ADD COLUMN a INT UNSIGNED AUTO_INCREMENT PRIMARY KEY;"),
    ("mysql", "ALTER TABLE t ADD KEY k (a);"),
    ("mysql", "ALTER TABLE t ADD UNIQUE KEY k (a);"),
    pytest.param("mysql", "ALTER TABLE t ADD PRIMARY KEY (id);"),
    pytest.param("mysql", "ALTER TABLE t ADD FOREIGN KEY (u) REFERENCES x(y);"),
    pytest.param("mysql", "ALTER TABLE t ADD FULLTEXT KEY ft (b);"),
    pytest.param("mysql", "ALTER TABLE t ADD SPATIAL INDEX sp (g);"),
])
def test_add_column_fast_path_equals_whole_statement_parse(dialect: str, sql: str, monkeypatch: pytest.MonkeyPatch,
                                                           fresh_memo: None) -> None:
    with monkeypatch.context() as m:
        m.setattr(analyze, "_add_column_fast", lambda *a: None)
        want = analyze_text(sql, dialect)
    _assert_same(analyze_text(sql, dialect), want)
    _assert_same(analyze_text(sql, dialect), want)


def test_add_column_fast_path_is_taken(monkeypatch: pytest.MonkeyPatch, fresh_memo: None) -> None:
    taken: list[bool] = []
    real = analyze._add_column_fast
    monkeypatch.setattr(analyze, "_add_column_fast", lambda *a: taken.append(real(*a) is not None) or real(*a))
    ch = analyze_text("ALTER TABLE t ADD COLUMN a int NOT NULL DEFAULT 0;", "postgres").statements[0].changes[0]
    assert taken == [True]
    assert (ch.kind, ch.column, ch.column_spec.not_null, ch.column_spec.default) == ("add_column", "a", True, "0")


# --- split_body ----------------------------------------------------------------------------------


def test_split_body_offsets() -> None:
    sql = "CREATE TABLE t (a int, b numeric(12,2) DEFAULT 'x, (y', c text) WITH (fillfactor=70);"
    code, skel = _stmt(sql)
    open_at, close_at, items = split_body(code, skel)
    assert code[open_at] == "(" and code[:open_at] == "CREATE TABLE t "
    assert code[close_at:].startswith(") WITH (fillfactor=70)")
    assert [code[s:e] for s, e in items] == ["a int", " b numeric(12,2) DEFAULT 'x, (y'", " c text"]
    assert items[0][0] == open_at + 1 and items[-1][1] == close_at
    for (_s1, e1), (s2, _e2) in zip(items, items[1:], strict=False):
        assert code[e1] == "," and s2 == e1 + 1


@pytest.mark.parametrize(("dialect", "sql", "want"), [
    ("postgres", "CREATE TABLE s.t(a int)", ["a int"]),
    ("postgres", "create table if not exists T (a int,b int)", ["a int", "b int"]),
    ("postgres", 'CREATE TABLE "a,(b" ("c,)d" int, e int)', ['"c,)d" int', "e int"]),
    ("postgres", 'CREATE TABLE "x"."y" ("a""(" int)', ['"a""(" int']),
    ("postgres", "CREATE TABLE t (a int, -- x, (\n b int)", ["a int", "b int"]),
    ("postgres", "CREATE TABLE t (a text DEFAULT $$,($$, b int)", ["a text DEFAULT $$,($$", "b int"]),
    ("postgres", "CREATE TABLE t (a numeric(1,2), CHECK (a IN (1, 2)))", ["a numeric(1,2)", "CHECK (a IN (1, 2))"]),
    ("mysql", "CREATE TABLE `a,b` (`c(` int, d ENUM('x,', ')'))", ["`c(` int", "d ENUM('x,', ')')"]),
    ("mysql", "CREATE TABLE t (a int # c, (\n, b int)", ["a int", "b int"]),
])
def test_split_body_items(dialect: str, sql: str, want: list[str]) -> None:
    code, skel = _stmt(sql, dialect)
    split = split_body(code, skel)
    assert split is not None
    assert [code[s:e].strip() for s, e in split[2]] == want


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t (a int)",
    "CREATE UNLOGGED TABLE t (a int)",
    "CREATE TABLE t PARTITION OF m DEFAULT",
    "CREATE TABLE a.b.c (x int)",
    "ALTER TABLE t ADD COLUMN (a int)",
    "CREATE INDEX i ON t (a, b)",
    "CREATE TABLE t ()",
    "CREATE TABLE t (a int, )",
    "CREATE TABLE t (, a int)",
    "CREATE TABLE t (a int,, b int)",
    "CREATE TABLE t (a int, b numeric(1,2)",
    "CREATE TABLE t (a int",
    "CREATE TABLE t",
    "CREATE TABLE (a int)",
])
def test_split_body_declines_other_shapes(sql: str) -> None:
    code, skel = _stmt(sql)
    assert split_body(code, skel) is None


# --- what the difference costs a lint ----------------------------------------------------------


def test_unnamed_table_level_primary_key_is_known_to_the_schema(tmp_path: Path) -> None:
    # An unnamed table-level PRIMARY KEY starts with a word that is not itself a tokenizer keyword
    # ("PRIMARY KEY" is one two-word entry): the fast path once read it as a column "primary",
    # so t_pkey was unknown and its drop passed. It must be reported (VC134).
    history = ["CREATE TABLE t (a int, b int, c text, PRIMARY KEY (a, b));"]
    assert codes(lint_sql(tmp_path, history, ["ALTER TABLE t DROP CONSTRAINT t_pkey;"])) == ["VC134"]
