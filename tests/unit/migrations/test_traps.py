"""Traps: things that must not fool the linter, in either direction."""

from __future__ import annotations

from pathlib import Path

import pytest

from veza_canary.errors import LintInputError

from .helpers import codes, lint_sql

HIST = "CREATE TABLE users (id bigint PRIMARY KEY, email varchar(50) NOT NULL, bio text);\n"


def test_scary_words_in_comments_and_strings_trigger_nothing(tmp_path: Path) -> None:
    sql = (
        "-- DROP TABLE users; ALTER TABLE users DROP COLUMN email;\n"
        "/* DROP TABLE users; /* nested */ still a comment; DROP COLUMN bio */\n"
        "COMMENT ON TABLE users IS 'we will DROP COLUMN bio; later';\n"
        "INSERT INTO users (id, email) VALUES (1, 'drop table users; --'), (2, E'it''s \\' ; DROP');\n"
        "COMMENT ON COLUMN users.bio IS $x$ ALTER TABLE users DROP COLUMN bio; $x$;\n"
    )
    assert codes(lint_sql(tmp_path, [HIST], [sql])) == []


def test_ddl_inside_a_do_block_is_analysed(tmp_path: Path) -> None:
    sql = "DO $$\nBEGIN\n  ALTER TABLE users DROP COLUMN bio;\nEND\n$$;\n"
    r = lint_sql(tmp_path, [HIST], [sql])
    assert codes(r) == ["VC101"]
    assert r.findings[0].line == 3  # the line of the statement inside the body


def test_do_block_with_declare_loop_and_exception_handler(tmp_path: Path) -> None:
    sql = """DO $body$
DECLARE
  r record;
  n int := 0;
BEGIN
  FOR r IN SELECT id FROM users LOOP
    n := n + 1;
  END LOOP;
  IF n > 0 THEN
    ALTER TABLE users ADD COLUMN nick text;
  ELSE
    RAISE NOTICE 'empty';
  END IF;
EXCEPTION WHEN duplicate_column THEN
  NULL;
END
$body$ LANGUAGE plpgsql;
"""
    assert codes(lint_sql(tmp_path, [HIST], [sql])) == []


def test_constant_execute_is_analysed_and_dynamic_execute_blocks(tmp_path: Path) -> None:
    const = "DO $$ BEGIN EXECUTE 'ALTER TABLE users DROP COLUMN bio'; END $$;"
    dyn = "DO $$ DECLARE t text := 'users'; BEGIN EXECUTE 'ALTER TABLE ' || t || ' ADD COLUMN x int'; END $$;"
    assert codes(lint_sql(tmp_path / "a", [HIST], [const])) == ["VC101"]
    assert codes(lint_sql(tmp_path / "b", [HIST], [dyn])) == ["VC001"]


def test_top_level_dynamic_sql_blocks(tmp_path: Path) -> None:
    sql = "PREPARE q AS SELECT 1;\nEXECUTE q;\n"
    assert set(codes(lint_sql(tmp_path, [HIST], [sql]))) == {"VC001"}


def test_opaque_command_is_unverifiable(tmp_path: Path) -> None:
    # (ENABLE TRIGGER used to be the example; it is now understood, and harmless.)
    r = lint_sql(tmp_path, [HIST], ["ALTER TABLE users INHERIT parent_t;"])
    assert codes(r) == ["VC001"]
    assert "cannot verify" in r.findings[0].message
    assert "sqlglot" not in r.findings[0].message  # the user's terms, not the parser's


def test_drop_column_without_a_name_is_unverifiable_not_ignored(tmp_path: Path) -> None:
    assert codes(lint_sql(tmp_path, [HIST], ["ALTER TABLE users DROP COLUMN;"])) == ["VC001"]


def test_quoted_schema_qualified_and_mixed_case_identifiers(tmp_path: Path) -> None:
    hist = 'CREATE TABLE public."Users" ("Email" text, bio text);\n'
    assert codes(lint_sql(tmp_path / "a", [hist], ['ALTER TABLE "Users" DROP COLUMN "Email";'])) == ["VC101"]
    assert codes(lint_sql(tmp_path / "b", [hist], ['ALTER TABLE PUBLIC."Users" DROP COLUMN BIO;'])) == ["VC101"]
    # Unquoted Users folds to users: a different (unknown) table, still a drop.
    r = lint_sql(tmp_path / "c", [hist], ['CREATE TABLE users (a int); ALTER TABLE Users DROP COLUMN a;'])
    assert codes(r) == []


def test_mixed_case_keywords_and_crlf(tmp_path: Path) -> None:
    sql = "alter TABLE users\r\n  Drop Column bio;\r\nAlter Table users add column x int;\r\n"
    r = lint_sql(tmp_path, [HIST], [sql])
    assert codes(r) == ["VC101"]
    assert (r.findings[0].line, r.findings[0].col) == (1, 1)


def test_begin_commit_wrappers_and_many_statements_per_file(tmp_path: Path) -> None:
    sql = ("BEGIN;\nSET LOCAL lock_timeout = '5s';\nALTER TABLE users ADD COLUMN a int;\n"
           "ALTER TABLE users ADD COLUMN b text DEFAULT 'x';\nALTER TABLE users DROP COLUMN bio;\nCOMMIT;\n"
           "START TRANSACTION;\nCREATE INDEX CONCURRENTLY users_a_idx ON users (a);\nEND;\n")
    r = lint_sql(tmp_path, [HIST], [sql])
    assert codes(r) == ["VC101"]
    assert r.findings[0].line == 5


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    assert codes(lint_sql(tmp_path, [HIST], ["\ufeffALTER TABLE users ADD COLUMN x int;"])) == []


def test_mysql_hash_comments_backticks_and_backslash_strings(tmp_path: Path) -> None:
    hist = "CREATE TABLE `users` (`id` INT PRIMARY KEY, `bio` TEXT);"
    sql = ("# DROP TABLE users;\nINSERT INTO users VALUES (1, 'it\\'s; DROP TABLE users');\n"
           "ALTER TABLE `users` DROP COLUMN `bio`;\n")
    assert codes(lint_sql(tmp_path, [hist], [sql], "mysql")) == ["VC101"]


def test_unparseable_sql_is_an_input_error_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(LintInputError) as ei:
        lint_sql(tmp_path, [HIST], ["ALTER TABLE users ADD COLUMN x int;\nCREATE TABLE (;\n"])
    msg = str(ei.value)
    assert "000002_m2.up.sql:2: cannot parse SQL:" in msg
    assert "\n" not in msg


def test_unterminated_string_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(LintInputError, match=r":1: cannot parse SQL: unterminated string"):
        lint_sql(tmp_path, [HIST], ["INSERT INTO users VALUES ('oops);"])


def test_a_function_call_at_top_level_is_unverifiable_unless_known_safe(tmp_path: Path) -> None:
    assert codes(lint_sql(tmp_path / "a", [HIST], ["SELECT rebuild_indexes();"])) == ["VC001"]
    assert codes(lint_sql(tmp_path / "b", [HIST], ["SELECT setval('users_id_seq', 100);"])) == []


def test_dml_is_not_judged(tmp_path: Path) -> None:
    sql = "UPDATE users SET bio = 'x' WHERE id = 1;\nDELETE FROM users WHERE id = 2;\nTRUNCATE users;\n"
    assert codes(lint_sql(tmp_path, [HIST], [sql])) == []


def test_messages_name_the_object(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, ["CREATE SCHEMA reporting; CREATE TABLE reporting.t (a int);"],
                 ["DROP SCHEMA reporting CASCADE; ALTER TABLE reporting.t DROP COLUMN a;"])
    assert [f.message for f in r.findings] == ["drops schema reporting", "drops column reporting.t.a"]


def test_rename_without_the_column_keyword_is_a_column_rename(tmp_path: Path) -> None:
    """sqlglot reads Postgres' ``RENAME c TO d`` as two table renames; the model must not follow it."""
    r = lint_sql(tmp_path, [HIST], ["ALTER TABLE users RENAME bio TO biography;\nALTER TABLE users DROP COLUMN email;"])
    assert [(f.code, f.message) for f in r.findings] == [
        ("VC110", "renames column users.bio to biography"), ("VC101", "drops column users.email")]


def test_mysql_delimiter_blocks_are_unverifiable(tmp_path: Path) -> None:
    sql = "DELIMITER //\nCREATE PROCEDURE p() BEGIN DROP TABLE users; END //\nDELIMITER ;\n"
    assert "VC001" in codes(lint_sql(tmp_path, ["CREATE TABLE users (id INT);"], [sql], "mysql"))


def test_plpgsql_labels_and_nested_blocks(tmp_path: Path) -> None:
    sql = """DO $$
<<outer>>
DECLARE n int;
BEGIN
  <<inner>>
  BEGIN
    ALTER TABLE users ADD COLUMN x int;
  END inner;
  EXIT outer WHEN n > 1;
END outer
$$;"""
    assert codes(lint_sql(tmp_path, [HIST], [sql])) == []
