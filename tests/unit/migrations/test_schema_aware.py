"""Schema-aware judgement over realistic multi-file histories."""

from __future__ import annotations

from pathlib import Path

from .helpers import codes, lint_sql

HISTORY = [
    """CREATE TABLE accounts (
         id bigserial PRIMARY KEY,
         email varchar(120) NOT NULL,
         display_name varchar(50),
         plan text NOT NULL DEFAULT 'free',
         balance numeric(12,2) NOT NULL DEFAULT 0,
         created_at timestamptz NOT NULL DEFAULT now()
       );
       CREATE UNIQUE INDEX accounts_email_uidx ON accounts (lower(email));""",
    """ALTER TABLE accounts ADD COLUMN referrer_id bigint;
       ALTER TABLE accounts ALTER COLUMN display_name TYPE varchar(80);
       CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id),
                              amount_cents integer NOT NULL, status text NOT NULL DEFAULT 'open');""",
    """ALTER TABLE invoices RENAME COLUMN amount_cents TO amount;
       CREATE VIEW open_invoices AS SELECT * FROM invoices WHERE status = 'open';""",
]


def test_widening_is_judged_from_the_type_after_the_whole_history(tmp_path: Path) -> None:
    # display_name is varchar(80) after file 2: 100 widens, 60 narrows (though 60 > the original 50).
    assert codes(lint_sql(tmp_path / "a", HISTORY,
                          ["ALTER TABLE accounts ALTER COLUMN display_name TYPE varchar(100);"])) == []
    assert codes(lint_sql(tmp_path / "b", HISTORY,
                          ["ALTER TABLE accounts ALTER COLUMN display_name TYPE varchar(60);"])) == ["VC120"]


def test_renamed_column_keeps_its_type(tmp_path: Path) -> None:
    r = lint_sql(tmp_path / "a", HISTORY, ["ALTER TABLE invoices ALTER COLUMN amount TYPE bigint;"])
    assert codes(r) == ["VC204"]  # int -> bigint: compatible, but a rewrite
    r = lint_sql(tmp_path / "b", HISTORY, ["ALTER TABLE invoices ALTER COLUMN amount TYPE smallint;"])
    assert "VC120" in codes(r)


def test_unknown_column_type_fails_closed(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, HISTORY, ["ALTER TABLE legacy ALTER COLUMN x TYPE text;"])
    assert codes(r) == ["VC120"]
    assert "not known" in r.findings[0].message


def test_objects_created_earlier_in_the_new_set_are_exempt(tmp_path: Path) -> None:
    new = [
        "CREATE TABLE coupons (id bigserial PRIMARY KEY, code varchar(20), pct int);",
        """ALTER TABLE coupons ALTER COLUMN code TYPE varchar(10);
           ALTER TABLE coupons ALTER COLUMN code SET NOT NULL;
           ALTER TABLE coupons ADD CONSTRAINT coupons_code_key UNIQUE (code);
           ALTER TABLE coupons RENAME COLUMN pct TO percent;
           ALTER TABLE accounts ADD COLUMN coupon_id bigint;
           ALTER TABLE accounts ADD CONSTRAINT accounts_coupon_fk FOREIGN KEY (coupon_id) REFERENCES coupons (id);""",
        "ALTER TABLE accounts DROP COLUMN coupon_id; DROP TABLE coupons;",
    ]
    assert codes(lint_sql(tmp_path, HISTORY, new)) == []


def test_new_not_null_column_on_existing_table_is_breaking_even_later_in_the_set(tmp_path: Path) -> None:
    new = ["ALTER TABLE accounts ADD COLUMN region text;", "ALTER TABLE accounts ALTER COLUMN region SET NOT NULL;"]
    assert codes(lint_sql(tmp_path, HISTORY, new)) == ["VC122"]


def test_constraint_on_new_column_with_a_default_is_breaking(tmp_path: Path) -> None:
    new = ["ALTER TABLE accounts ADD COLUMN tier int DEFAULT 1; "
           "ALTER TABLE accounts ADD CONSTRAINT accounts_tier_key UNIQUE (tier);"]
    assert codes(lint_sql(tmp_path, HISTORY, new)) == ["VC130"]


def test_view_star_expands_from_the_model(tmp_path: Path) -> None:
    ok = "CREATE OR REPLACE VIEW open_invoices AS SELECT *, 1 AS extra FROM invoices WHERE status = 'open';"
    bad = "CREATE OR REPLACE VIEW open_invoices AS SELECT id, account_id FROM invoices;"
    assert codes(lint_sql(tmp_path / "a", HISTORY, [ok])) == []
    r = lint_sql(tmp_path / "b", HISTORY, [bad])
    assert codes(r) == ["VC152"]
    assert "amount" in r.findings[0].message and "status" in r.findings[0].message


def test_create_table_if_not_exists_on_an_existing_table_does_not_make_it_new(tmp_path: Path) -> None:
    new = ["CREATE TABLE IF NOT EXISTS invoices (id bigint); ALTER TABLE invoices DROP COLUMN status;"]
    assert codes(lint_sql(tmp_path, HISTORY, new)) == ["VC101"]


def test_all_mode_judges_each_file_against_the_ones_before(tmp_path: Path) -> None:
    from veza_canary.migrations.engine import LintOptions, run

    from .helpers import write_history

    files = write_history(tmp_path / "m", [*HISTORY, "ALTER TABLE accounts DROP COLUMN plan;"])
    r = run(files, [], LintOptions(cache=False), each_own_set=True, root=tmp_path)
    assert [(f.code, f.path.split("/")[-1]) for f in r.findings if f.severity == "block"] == [
        ("VC110", "000003_m3.up.sql"), ("VC101", "000004_m4.up.sql")]


def test_history_file_that_cannot_be_parsed_is_a_note_not_an_error(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, ["CREATE TABLE t (a int);", "THIS IS NOT SQL (;"], ["ALTER TABLE t DROP COLUMN a;"])
    assert codes(r) == ["VC101"]
    assert any("history file not understood" in n for n in r.notes)


def test_mysql_history_modify_keeps_defaults_honest(tmp_path: Path) -> None:
    hist = ["CREATE TABLE t (id INT PRIMARY KEY, state VARCHAR(10) NOT NULL DEFAULT 'a');",
            "ALTER TABLE t MODIFY state VARCHAR(20) NOT NULL DEFAULT 'a';"]
    assert codes(lint_sql(tmp_path / "a", hist, ["ALTER TABLE t MODIFY state VARCHAR(30) NOT NULL DEFAULT 'a';"],
                          "mysql")) == []
    assert codes(lint_sql(tmp_path / "b", hist, ["ALTER TABLE t MODIFY state VARCHAR(30) NOT NULL;"],
                          "mysql")) == ["VC123"]


def test_analysis_read_back_from_the_cache_equals_a_fresh_one(tmp_path: Path) -> None:
    from veza_canary.migrations import engine
    from veza_canary.migrations.cache import Cache

    datas = [f"CREATE TABLE t{i} (id int, v varchar({i + 1}));\nINSERT INTO t{i} VALUES (1, 'x;y');\n"
             f"ALTER TABLE t{i} DROP COLUMN v;".encode() for i in range(20)]
    datas.append(datas[3])  # the same content twice: analysed once
    fresh = engine.analyze_all(datas, engine.LintOptions(cache=False))
    opts = engine.LintOptions(cache=True, cache_dir=tmp_path / "cache")
    first = Cache(opts.cache_dir)
    assert engine.analyze_all(datas, opts, cache=first) == fresh
    first.close()
    assert first.hits == 0
    second = Cache(opts.cache_dir)
    assert engine.analyze_all(datas, opts, cache=second) == fresh
    second.close()
    assert second.hits == len(datas) and second.misses == 0
