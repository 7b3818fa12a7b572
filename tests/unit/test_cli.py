"""The CLI: help, version, and the exit-code table through CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from veza_canary import __version__
from veza_canary.cli import app
from veza_canary.errors import EXIT_CODE_MEANINGS, ExitCode

runner = CliRunner()


def test_help_lists_the_command_groups():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("deploy", "lint-migrations", "status", "rollback", "haproxy", "health", "sli", "lab"):
        assert cmd in r.output, cmd


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_exit_codes_are_distinct_and_documented():
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} " in readme, f"exit code {int(code)} missing from README"


@pytest.mark.parametrize("env,args,code,needle", [
    ({"CANARY_NODE": "backend-api-2; rm -rf /"}, [], 2, "CANARY_NODE"),
    ({}, ["--sli-window", "10"], 2, "--sli-window"),
    ({"PROM_URL": "not a url"}, [], 2, "PROM_URL"),
    ({}, ["--artifact", "/nonexistent/veza-api"], 2, "no such file"),
])
def test_bad_input_is_one_line_and_a_documented_code(env, args, code, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["deploy", "--yes", *args], env={"STATE_DIR": str(tmp_path), **env})
    assert r.exit_code == code, r.output
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("veza-canary: error:")]
    assert len(errs) == 1 and needle in errs[0]


def test_dry_run_changes_nothing_and_prints_the_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["deploy", "--dry-run", "--peer-nodes", "backend-api-1 backend-api-3"])
    assert r.exit_code == 0
    assert "set server api_pool/backend-api-3 state drain" in r.stdout
