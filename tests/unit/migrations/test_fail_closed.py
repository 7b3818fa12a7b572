"""The gate fails closed on its input: odd directory entries are refused, a configured directory must exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.settings_helper import make_settings
from veza_canary.errors import ExitCode, LintInputError
from veza_canary.migrations import deploy_gate, lint


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("FORCE_MIGRATE", "MIGRATIONS_DIR", "MIGRATIONS_SINCE", "MIGRATIONS_DIALECT", "VEZA_CANARY_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _dir(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    (d / "000001_users.up.sql").write_text("CREATE TABLE users (id bigint PRIMARY KEY);\n")
    return d


def _fifo(d: Path) -> None:
    os.mkfifo(d / "000002_pipe.up.sql")


def _dangling(d: Path) -> None:
    (d / "000002_gone.up.sql").symlink_to(d / "nowhere.sql")


def _outside(d: Path) -> None:
    target = d.parent / "elsewhere.sql"
    target.write_text("DROP TABLE users;\n")
    (d / "000002_out.up.sql").symlink_to(target)


def _device(d: Path) -> None:
    (d / "000002_null.up.sql").symlink_to("/dev/null")


def _directory(d: Path) -> None:
    (d / "000002_dir.up.sql").mkdir()


@pytest.mark.parametrize("make,words", [
    (_fifo, "FIFO"), (_dangling, "dangling"), (_outside, "outside"), (_device, "outside"), (_directory, "directory"),
])
def test_an_entry_that_is_not_a_regular_file_is_refused_never_skipped(tmp_path: Path, make, words: str) -> None:
    d = _dir(tmp_path)
    make(d)
    with pytest.raises(LintInputError, match=words) as info:
        lint(directory=d, all_files=True, cache=False)
    assert info.value.exit_code == ExitCode.LINT_INPUT


def test_a_link_to_a_regular_file_inside_the_directory_is_read(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    (d / "real.sql").write_text("ALTER TABLE users ADD COLUMN email text;\n")
    (d / "000002_email.up.sql").symlink_to(d / "real.sql")
    result = lint(directory=d, all_files=True, cache=False)
    assert len(result.files) == 2 and not result.blocking


@pytest.mark.parametrize("special", ["fifo", "device"])
def test_an_explicit_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, special: str) -> None:
    d = _dir(tmp_path)
    if special == "fifo":
        path = tmp_path / "new.up.sql"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    with pytest.raises(LintInputError, match="FIFO" if special == "fifo" else "device"):
        lint(directory=d, paths=[path], cache=False)


def test_deploy_gate_refuses_a_configured_directory_that_is_missing(tmp_path: Path) -> None:
    with pytest.raises(LintInputError, match="does not exist") as info:
        deploy_gate(make_settings(migrations_dir="db/migrations"), tmp_path)
    assert info.value.exit_code == ExitCode.LINT_INPUT


def test_deploy_gate_with_the_default_directory_missing_has_nothing_to_lint(tmp_path: Path) -> None:
    result = deploy_gate(make_settings(), tmp_path)
    assert result.files == [] and result.ok


def test_deploy_gate_no_migrations_in_the_config_skips_a_missing_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "deploy.toml"
    cfg.write_text("[lint]\nno_migrations = true\n")
    result = deploy_gate(make_settings(migrations_dir="db/migrations"), tmp_path, config_path=cfg)
    assert result.files == [] and result.ok and "no_migrations" in result.notes[0]


def test_deploy_gate_rejects_a_non_boolean_no_migrations(tmp_path: Path) -> None:
    from veza_canary.errors import ConfigError

    cfg = tmp_path / "deploy.toml"
    cfg.write_text('[lint]\nno_migrations = "yes"\n')
    with pytest.raises(ConfigError):
        deploy_gate(make_settings(), tmp_path, config_path=cfg)
