"""The CLI: help, version, and the exit-code table through CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from veza_canary import __version__
from veza_canary.cli import app
from veza_canary.errors import EXIT_CODE_MEANINGS, ExitCode
from veza_canary.settings import KNOBS

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


GROUPS = ("deploy", "lint-migrations", "status", "rollback", "unlock", "health", "history", "acceptance", "haproxy",
          "sli", "lab")


def test_help_lists_the_command_groups():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in GROUPS:
        assert cmd in r.output, cmd
    assert set(typer.main.get_command(app).commands) == set(GROUPS), "a new group needs its line in GROUPS and README"


def test_the_readme_lists_every_command_group():
    readme = (ROOT / "README.md").read_text()
    para = readme[readme.index("`veza-canary --help` lists the command groups"):][:600]
    for cmd in GROUPS:
        assert f"`{cmd}`" in para, cmd


def leaf_commands() -> list[tuple[str, ...]]:
    """Every command path (``("haproxy", "drain")``, ``("status",)``, ...)."""

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            return [path]
        return [p for name, sub in sorted(subs.items()) for p in walk(sub, (*path, name))]

    return walk(typer.main.get_command(app), ())


def help_of(path: tuple[str, ...]) -> str:
    r = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("path", leaf_commands(), ids=" ".join)
def test_every_command_help_shows_real_types_defaults_env_and_exit_codes(path):
    text = help_of(path)
    assert "Exit codes:" in text and "  0  success" in text and "  2  usage" in text, text
    options = [ln for ln in text.splitlines() if ln.lstrip().startswith("--")]
    assert not [ln for ln in options if re.search(r"--[a-z-]+ TEXT\b", ln)], "an option typed TEXT"
    for k in KNOBS if path != ("acceptance",) else ():  # acceptance's --sli-window is the job's, not the knob
        line = next((ln for ln in options if ln.lstrip().startswith(k.flag + " ") or
                     ln.lstrip().startswith(f"{k.flag} /")), None)
        if line is None:
            continue
        block = text[text.index(line):][:400]
        assert f"env: {k.env}" in block, (k.env, block)
        # lint-migrations writes its own option help (cli/lint.py; its defaults are in words, e.g. "postgres
        # (default)"); the knob options the CLI generates say "default: X".
        if k.default is not None and path != ("lint-migrations",):
            assert "default: " in block, (k.env, block)
    assert "--log-format" in text and "--verbose" in text  # the global options also after the command


def test_knob_options_show_their_kind_and_default():
    text = help_of(("deploy",))
    for flag, kind in (("--sli-window", "DURATION"), ("--prom-err-rate-threshold", "FLOAT"),
                       ("--sli-max-errors", "INTEGER"), ("--artifact", "PATH"), ("--prom-url", "URL"),
                       ("--canary-node", "NAME"), ("--drain-timeout-action", "fail|shutdown-sessions")):
        assert re.search(rf"{flag} {re.escape(kind)}\b", text), flag
    assert "[env: SLI_WINDOW; default: 1h]" in text.replace("\n", " ").replace("  ", " ") or \
        "default: 1h" in text


def test_each_command_lists_only_the_knobs_it_uses():
    unlock = help_of(("unlock",))
    for flag in ("--artifact", "--sli-window", "--drain-timeout", "--prom-url", "--migrations-dir", "--canary-node",
                 "--webhook-urls"):
        assert flag not in unlock, flag
    for flag in ("--haproxy-container", "--incus-host", "--ssh-key-file", "--lock-stale-after", "--state-dir"):
        assert flag in unlock, flag
    assert len(unlock.splitlines()) < 50
    deploy = help_of(("deploy",))
    assert len(unlock.splitlines()) * 3 < len(deploy.splitlines())
    assert "--artifact" not in help_of(("status",)) and "--sli-window" not in help_of(("haproxy", "show"))
    assert "--rollback-binary" in help_of(("rollback",)) and "--drain-timeout" in help_of(("rollback",))


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_work_before_and_after_the_command(where, tmp_path, monkeypatch):
    from tests.fakes import SimFleet, sim_fleet
    from veza_canary.cli import build_app

    monkeypatch.chdir(tmp_path)
    for k in KNOBS:
        monkeypatch.delenv(k.env, raising=False)
    sim = SimFleet(["backend-api-2", "backend-api-1"])
    sim_app = build_app(fleet_factory=lambda settings: sim_fleet(settings, sim)[0])

    def run(*glob: str):
        args = [*glob, "haproxy", "drain", "backend-api-1"] if where == "before" else \
            ["haproxy", "drain", "backend-api-1", *glob]
        return runner.invoke(sim_app, args, env={"STATE_DIR": str(tmp_path)})

    r = run("--log-format", "json")
    assert r.exit_code == 0, r.output
    events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.strip()]
    assert events and {e["level"] for e in events} <= {"info", "warning", "error"}
    r = run("--log-format", "json", "-v")
    debug = [json.loads(ln) for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 0 and any(e["level"] == "debug" for e in debug)
    r = run("--log-format", "console")
    assert r.exit_code == 0 and not r.stderr.lstrip().startswith("{")
    assert run("--log-format", "yaml").exit_code == 2


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
    artifact = tmp_path / "veza-api"
    artifact.write_bytes(b"#!/bin/sh\necho veza-api 2.0.0\n")
    artifact.chmod(0o755)
    r = runner.invoke(app, ["deploy", "--dry-run", "--artifact", str(artifact), "--peer-nodes",
                            "backend-api-1 backend-api-3"])
    assert r.exit_code == 0
    assert "set server api_pool/backend-api-3 state drain" in r.stdout
