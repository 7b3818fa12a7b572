"""Git mode on a temporary repository with an origin/main, the deploy gate, and the wrapper script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.settings_helper import make_settings
from veza_canary.errors import LintInputError
from veza_canary.migrations import deploy_gate, lint


@pytest.fixture(autouse=True)
def _git_is_installed() -> None:
    # git is a dependency (scripts/install-system-deps.sh installs it): a missing git fails, never skips.
    assert shutil.which("git"), "git is not installed (bash scripts/install-system-deps.sh)"

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "scripts" / "check-migration-backward-compat.sh"


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone whose origin/main has two migrations; the work tree is a feature branch."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("FORCE_MIGRATE", "MIGRATIONS_DIR", "MIGRATIONS_SINCE", "MIGRATIONS_DIALECT", "VEZA_CANARY_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    upstream = tmp_path / "upstream"
    (upstream / "migrations").mkdir(parents=True)
    git(upstream, "init", "-q", "-b", "main")
    (upstream / "migrations" / "000001_users.up.sql").write_text(
        "CREATE TABLE users (id bigint PRIMARY KEY, email varchar(50) NOT NULL, bio text);")
    (upstream / "migrations" / "000001_users.down.sql").write_text("DROP TABLE users;")
    (upstream / "migrations" / "000002_orders.up.sql").write_text("CREATE TABLE orders (id bigint, user_id bigint);")
    git(upstream, "add", ".")
    git(upstream, "commit", "-q", "-m", "base")
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(upstream), str(work))
    git(work, "checkout", "-q", "-b", "feature")
    monkeypatch.chdir(work)
    return work


def test_only_files_added_since_the_merge_base_are_linted(repo: Path) -> None:
    m = repo / "migrations"
    (m / "000003_widen.up.sql").write_text("ALTER TABLE users ALTER COLUMN email TYPE varchar(100);")
    (m / "000003_widen.down.sql").write_text("ALTER TABLE users DROP COLUMN email;")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "widen")
    (m / "000004_drop.up.sql").write_text("ALTER TABLE users DROP COLUMN bio;")  # untracked, still new
    r = lint(directory=Path("migrations"), since="origin/main", repo_root=repo, cache=False)
    assert r.files == ["migrations/000003_widen.up.sql", "migrations/000004_drop.up.sql"]
    assert [f.code for f in r.findings] == ["VC101"]
    assert r.history == 2


def test_upstream_moving_on_does_not_make_its_files_new(repo: Path, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    (upstream / "migrations" / "000003_up.up.sql").write_text("ALTER TABLE orders DROP COLUMN user_id;")
    git(upstream, "add", ".")
    git(upstream, "commit", "-q", "-m", "more")
    git(repo, "fetch", "-q")
    r = lint(directory=Path("migrations"), since="origin/main", repo_root=repo, cache=False)
    assert r.files == [] and r.findings == []


def test_editing_a_merged_migration_is_a_warning(repo: Path) -> None:
    (repo / "migrations" / "000002_orders.up.sql").write_text("CREATE TABLE orders (id bigint);")
    r = lint(directory=Path("migrations"), since="origin/main", repo_root=repo, cache=False)
    assert [(f.code, f.severity) for f in r.findings] == [("VC209", "warn")]


def test_bad_ref_is_an_input_error(repo: Path) -> None:
    with pytest.raises(LintInputError, match="no such git ref"):
        lint(directory=Path("migrations"), since="origin/nope", repo_root=repo, cache=False)


def test_not_a_repository_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "plain" / "migrations").mkdir(parents=True)
    with pytest.raises(LintInputError, match="not a git repository"):
        lint(directory=Path("migrations"), repo_root=tmp_path / "plain", cache=False)


def test_deploy_gate_reports_and_does_not_raise_for_blocking(repo: Path) -> None:
    (repo / "migrations" / "000003_drop.up.sql").write_text("ALTER TABLE users DROP COLUMN bio;")
    result = deploy_gate(make_settings(), repo)
    assert result.files == ["migrations/000003_drop.up.sql"]
    assert [f.code for f in result.blocking] == ["VC101"] and not result.bypassed
    f = result.findings[0]
    assert (f.severity, f.path, f.line, f.col) == ("block", "migrations/000003_drop.up.sql", 1, 1)
    d = result.to_dict()
    assert d["ok"] is False and d["findings"][0]["code"] == "VC101"
    assert "1 blocking" in result.summary()


def test_deploy_gate_force_keeps_blocking_and_marks_bypassed(repo: Path) -> None:
    (repo / "migrations" / "000003_drop.up.sql").write_text("ALTER TABLE users DROP COLUMN bio;")
    result = deploy_gate(make_settings(force_migrate=True), repo)
    assert result.bypassed and len(result.blocking) == 1 and result.to_dict()["ok"] is True


def test_deploy_gate_honours_the_lint_table_of_the_config_it_is_given(repo: Path, tmp_path: Path) -> None:
    (repo / "migrations" / "000003_drop.up.sql").write_text("ALTER TABLE users DROP COLUMN bio;")
    cfg = tmp_path / "other.toml"
    cfg.write_text('[lint.severity]\nVC101 = "warn"\n')
    result = deploy_gate(make_settings(), repo, config_path=cfg)
    assert [(f.code, f.severity) for f in result.findings] == [("VC101", "warn")] and not result.blocking


def test_deploy_gate_without_a_migrations_dir_has_nothing_to_lint(tmp_path: Path) -> None:
    result = deploy_gate(make_settings(), tmp_path)
    assert result.files == [] and result.findings == [] and "nothing" in result.summary()


def test_deploy_gate_raises_for_unparseable_sql(repo: Path) -> None:
    (repo / "migrations" / "000003_bad.up.sql").write_text("CREATE TABLE (;")
    with pytest.raises(LintInputError, match="cannot parse SQL"):
        deploy_gate(make_settings(), repo)


def _script(repo: Path, *args: str, force: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FORCE_MIGRATE"}
    if force is not None:
        env["FORCE_MIGRATE"] = force
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)


def test_wrapper_script_exit_codes(repo: Path) -> None:
    assert _script(repo).returncode == 0  # nothing new
    (repo / "migrations" / "000003_drop.up.sql").write_text("ALTER TABLE users DROP COLUMN bio;")
    r = _script(repo, "--since", "origin/main")
    assert r.returncode == 4 and "VC101" in r.stdout
    r = _script(repo, force="1")
    assert r.returncode == 0 and "FORCE_MIGRATE" in r.stderr
    (repo / "migrations" / "000004_bad.up.sql").write_text("CREATE TABLE (;")
    assert _script(repo).returncode == 12
    assert _script(repo, "--since", "origin/nope").returncode == 12
    assert _script(repo, "--dialect", "oracle").returncode == 2
