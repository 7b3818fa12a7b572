"""`veza-canary lint-migrations`: formats, --explain, exit codes, config, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from veza_canary.cli import app

from .helpers import write_history

runner = CliRunner()
HIST = "CREATE TABLE users (id bigint PRIMARY KEY, bio text, nick text);"


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("FORCE_MIGRATE", "MIGRATIONS_DIR", "MIGRATIONS_SINCE", "MIGRATIONS_DIALECT", "VEZA_CANARY_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    write_history(tmp_path / "migrations", [HIST])
    return tmp_path


def _lint(*args: str, env: dict[str, str] | None = None):  # noqa: ANN202
    return runner.invoke(app, ["lint-migrations", *args], env=env)


def test_clean_file_exits_0(repo: Path) -> None:
    write_history(repo / "migrations", ["ALTER TABLE users ADD COLUMN x int;"], start=2)
    r = _lint("migrations/000002_m2.up.sql")
    assert r.exit_code == 0, r.output
    assert "0 blocking" in r.stdout


def test_blocking_finding_exits_4_with_file_line_col_and_advice(repo: Path) -> None:
    write_history(repo / "migrations", ["\nALTER TABLE users DROP COLUMN bio;"], start=2)
    r = _lint("migrations/000002_m2.up.sql")
    assert r.exit_code == 4
    assert "migrations/000002_m2.up.sql:2:1: error VC101 drop-column: drops column users.bio" in r.stdout
    assert "why:" in r.stdout and "instead:" in r.stdout


def test_warnings_alone_exit_0(repo: Path) -> None:
    write_history(repo / "migrations", ["CREATE INDEX users_nick_idx ON users (nick);"], start=2)
    r = _lint("migrations/000002_m2.up.sql")
    assert r.exit_code == 0 and "warning VC201" in r.stdout


def test_force_migrate_env_exits_0_and_says_so_loudly(repo: Path) -> None:
    write_history(repo / "migrations", ["ALTER TABLE users DROP COLUMN bio;"], start=2)
    r = _lint("migrations/000002_m2.up.sql", env={"FORCE_MIGRATE": "1"})
    assert r.exit_code == 0
    assert "FORCE_MIGRATE" in r.stderr and "IGNORED" in r.stdout


def test_unparseable_sql_exits_12_with_one_line(repo: Path) -> None:
    write_history(repo / "migrations", ["CREATE TABLE (;"], start=2)
    r = _lint("migrations/000002_m2.up.sql")
    assert r.exit_code == 12
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("veza-canary: error:")]
    assert len(errs) == 1 and "000002_m2.up.sql:1: cannot parse SQL:" in errs[0]


@pytest.mark.parametrize("content,needle", [
    (b"\xff\xfeA\x00L\x00", "binary"),
    (b"ALTER TABLE users ADD COLUMN caf\xe9 int;", "not UTF-8"),
])
def test_unreadable_input_exits_12(repo: Path, content: bytes, needle: str) -> None:
    p = repo / "migrations" / "000002_bad.up.sql"
    p.write_bytes(content)
    r = _lint(str(p))
    assert r.exit_code == 12 and needle in r.stderr


def test_explicit_missing_dir_exits_12(repo: Path) -> None:
    r = _lint("--dir", "nope", "--all")
    assert r.exit_code == 12 and "does not exist" in r.stderr


def test_bad_dialect_is_a_usage_error(repo: Path) -> None:
    r = _lint("--dialect", "oracle", "--all")
    assert r.exit_code == 2 and "MIGRATIONS_DIALECT" in r.stderr or "--migrations-dialect" in r.stderr


def test_json_format(repo: Path) -> None:
    write_history(repo / "migrations", ["ALTER TABLE users DROP COLUMN bio;"], start=2)
    r = _lint("--format", "json", "migrations/000002_m2.up.sql")
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["counts"]["blocking"] == 1
    assert data["findings"][0]["code"] == "VC101" and data["findings"][0]["line"] == 1


def test_github_format(repo: Path) -> None:
    write_history(repo / "migrations", ["ALTER TABLE users DROP COLUMN bio;"], start=2)
    r = _lint("--format", "github", "migrations/000002_m2.up.sql")
    assert r.stdout.startswith("::error file=migrations/000002_m2.up.sql,line=1,col=1,title=VC101 drop-column::")


def test_sarif_format(repo: Path) -> None:
    write_history(repo / "migrations", ["ALTER TABLE users DROP COLUMN bio; CREATE INDEX i ON users (nick);"],
                  start=2)
    r = _lint("--format", "sarif", "migrations/000002_m2.up.sql")
    sarif = json.loads(r.stdout)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert {x["id"] for x in run["tool"]["driver"]["rules"]} == {"VC101", "VC201"}
    assert [(x["ruleId"], x["level"]) for x in run["results"]] == [("VC101", "error"), ("VC201", "warning")]


def test_format_and_severity_from_the_config_file(repo: Path) -> None:
    (repo / "veza-canary.toml").write_text('[lint]\nformat = "json"\n[lint.severity]\ndrop-column = "warn"\n')
    write_history(repo / "migrations", ["ALTER TABLE users DROP COLUMN bio;"], start=2)
    r = _lint("migrations/000002_m2.up.sql")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["findings"][0]["severity"] == "warn"


def test_unknown_rule_in_config_is_a_usage_error(repo: Path) -> None:
    (repo / "veza-canary.toml").write_text('[lint.severity]\nno-such-rule = "off"\n')
    r = _lint("--all")
    assert r.exit_code == 2 and "no-such-rule" in r.stderr


def test_explain_prints_the_rule_docs(repo: Path) -> None:
    r = _lint("--explain", "VC101")
    assert r.exit_code == 0
    assert "drop-column" in r.stdout and "Safe pattern" in r.stdout and "Why it breaks the old binary" in r.stdout
    assert _lint("--explain", "rename-column").exit_code == 0
    assert _lint("--explain", "VC999").exit_code == 2


def test_list_rules(repo: Path) -> None:
    r = _lint("--list-rules")
    assert r.exit_code == 0 and "VC001" in r.stdout and "VC209" in r.stdout


def test_down_files_are_ignored(repo: Path) -> None:
    (repo / "migrations" / "000002_m2.down.sql").write_text("DROP TABLE users;")
    r = _lint("--all")
    assert r.exit_code == 0 and "1 file," in r.stdout


def test_cache_is_outside_the_repo_and_reused(repo: Path) -> None:
    import sqlite3

    from veza_canary.migrations.cache import Cache

    assert _lint("--all").exit_code == 0
    db = repo / "cache" / "veza-canary" / "lint" / "cache.sqlite3"
    assert db.is_file()
    assert sorted(p.name for p in repo.iterdir()) == ["cache", "migrations"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
    c = Cache(db.parent)
    assert _lint("--all").exit_code == 0
    c.get_many(["x"])
    assert _lint("--all", "--no-cache").exit_code == 0


def test_a_corrupt_cache_is_ignored(repo: Path) -> None:
    db = repo / "cache" / "veza-canary" / "lint" / "cache.sqlite3"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 100)
    write_history(repo / "migrations", ["ALTER TABLE users DROP COLUMN bio;"], start=2)
    r = _lint("migrations/000002_m2.up.sql")
    assert r.exit_code == 4 and "VC101" in r.stdout
    assert not db.exists()  # deleted, so the next run rebuilds it instead of being slow for ever
    again = _lint("migrations/000002_m2.up.sql")
    assert again.exit_code == 4 and again.stdout == r.stdout
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] > 0


def test_importing_the_cli_does_not_import_sqlglot() -> None:
    code = "import sys, veza_canary.cli.lint, veza_canary.cli, veza_canary.migrations; print('sqlglot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_history_schema_cache_gives_the_same_answer_and_tracks_edits(repo: Path) -> None:
    m = repo / "migrations"
    write_history(m, ["ALTER TABLE users ALTER COLUMN bio TYPE varchar(10);"], start=3)
    new = str(m / "000003_m3.up.sql")
    first = _lint("--format", "json", new)
    second = _lint("--format", "json", new)  # history schema from the cache
    assert first.exit_code == second.exit_code == 4
    assert json.loads(first.stdout)["findings"] == json.loads(second.stdout)["findings"]
    import sqlite3

    with sqlite3.connect(repo / "cache" / "veza-canary" / "lint" / "cache.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM entries WHERE key LIKE 'schema-%'").fetchone()[0] == 1
    # The history changes: bio becomes varchar(5), so varchar(10) is now a widening.
    write_history(m, ["ALTER TABLE users ALTER COLUMN bio TYPE varchar(5);"], start=2)
    third = _lint("--format", "json", new)
    assert third.exit_code == 0, third.stdout


def test_a_warm_run_does_not_import_sqlglot(repo: Path) -> None:
    code = ("import sys; from pathlib import Path; from veza_canary.migrations import lint; "
            "lint(directory=Path('migrations'), all_files=True); "
            "r = lint(directory=Path('migrations'), all_files=True); print('sqlglot' in sys.modules)")
    # First run in this process fills the cache and imports sqlglot; check a fresh process.
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=repo)
    code2 = ("import sys; from pathlib import Path; from veza_canary.migrations import lint; "
             "lint(directory=Path('migrations'), all_files=True); print('sqlglot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code2], check=True, capture_output=True, text=True, cwd=repo)
    assert out.stdout.strip().endswith("False")


def test_explicit_files_without_the_default_dir_are_linted_without_history(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MIGRATIONS_DIR", raising=False)
    f = tmp_path / "0001_x.up.sql"
    f.write_text("ALTER TABLE legacy DROP COLUMN a;")
    r = _lint(str(f))
    assert r.exit_code == 4 and "VC101" in r.stdout
