"""Lazy logging: structlog is imported on the first event that will be printed, not before.

Each check runs in a fresh interpreter, since the test process has imported and
configured structlog already (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

_REPO = Path(__file__).resolve().parents[2]
_SETTINGS_ENV = ("FORCE_MIGRATE", "MIGRATIONS_DIR", "MIGRATIONS_SINCE", "MIGRATIONS_DIALECT", "VEZA_CANARY_CONFIG")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS_ENV}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    return env


def _python(code: str, tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """Run ``code``; it reports by ``print(json.dumps(...))`` on its last stdout line. Returns (report, JSON
    lines of stderr, raw stderr)."""
    prelude = "import json, sys\nimported = lambda: 'structlog' in sys.modules\n"
    p = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    lines = [json.loads(line) for line in p.stderr.splitlines() if line.strip()]
    return report, lines, p.stderr


def test_an_event_below_the_level_imports_nothing_and_prints_nothing(tmp_path: Path) -> None:
    report, lines, _ = _python("""
        from veza_canary.log import defer_configure, get_logger
        at_start = imported()
        defer_configure(verbose=False)
        log = get_logger("x")
        log.debug("quiet.event", n=1)
        print(json.dumps({"at_start": at_start, "after_debug": imported()}))
    """, tmp_path)
    assert report == {"at_start": False, "after_debug": False}
    assert lines == []


def test_an_info_event_imports_structlog_and_prints_json_to_stderr(tmp_path: Path) -> None:
    report, lines, _ = _python("""
        from veza_canary.log import defer_configure, get_logger
        log = get_logger("x")  # made before the configuration, like a module-level logger
        defer_configure(verbose=False)
        log.debug("quiet.event")
        before = imported()
        log.info("loud.event", n=2, who="me")
        print(json.dumps({"before": before, "after": imported()}))
    """, tmp_path)
    assert report == {"before": False, "after": True}
    assert len(lines) == 1  # JSON (stderr is not a TTY), and the debug event is not there
    assert lines[0]["event"] == "loud.event" and lines[0]["level"] == "info"
    assert lines[0]["n"] == 2 and lines[0]["who"] == "me" and "timestamp" in lines[0]


@pytest.mark.parametrize("method", ["warning", "error"])
def test_higher_levels_are_printed_too(method: str, tmp_path: Path) -> None:
    _report, lines, _ = _python(f"""
        from veza_canary.log import defer_configure, get_logger
        defer_configure(verbose=False)
        get_logger("x").{method}("bad.thing")
        print(json.dumps({{}}))
    """, tmp_path)
    assert [(x["event"], x["level"]) for x in lines] == [("bad.thing", method)]


def test_verbose_prints_debug_events(tmp_path: Path) -> None:
    report, lines, _ = _python("""
        from veza_canary.log import defer_configure, get_logger
        defer_configure(verbose=True)
        get_logger("x").debug("detail.event", k="v")
        print(json.dumps({"after": imported()}))
    """, tmp_path)
    assert report == {"after": True}
    assert [(x["event"], x["level"], x["k"]) for x in lines] == [("detail.event", "debug", "v")]


def test_a_lazily_emitted_event_is_redacted(tmp_path: Path) -> None:
    _report, lines, raw = _python("""
        from veza_canary.log import defer_configure, get_logger
        defer_configure(verbose=False)
        get_logger("x").info("connect", url="http://u:secret@h/", password="pw123456",
                             note="Bearer abcdef1234567")
        print(json.dumps({}))
    """, tmp_path)
    assert "secret" not in raw and "pw123456" not in raw and "abcdef1234567" not in raw
    assert lines[0]["url"] == "http://[REDACTED]@h/"
    assert lines[0]["password"] == "[REDACTED]"


def test_explicit_console_format(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from veza_canary.log import defer_configure, get_logger
        defer_configure("console", verbose=False)
        get_logger("x").info("human.event", node="backend-api-2")
    """)], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "human.event" in p.stderr and "backend-api-2" in p.stderr
    assert not p.stderr.lstrip().startswith("{")


def test_ensure_configured_after_clear_deferred_imports_nothing(tmp_path: Path) -> None:
    report, lines, _ = _python("""
        from veza_canary.log import clear_deferred, defer_configure, ensure_configured
        ensure_configured()  # nothing deferred
        a = imported()
        defer_configure(verbose=True)
        clear_deferred()
        ensure_configured()
        b = imported()
        defer_configure(verbose=False)
        ensure_configured()  # applies it now
        print(json.dumps({"a": a, "b": b, "c": imported()}))
    """, tmp_path)
    assert report == {"a": False, "b": False, "c": True}
    assert lines == []


def test_with_structlog_already_imported_the_configuration_applies_at_once(tmp_path: Path) -> None:
    _report, lines, _ = _python("""
        import structlog
        from veza_canary.log import defer_configure, get_logger
        defer_configure(verbose=False)
        structlog.get_logger("direct").info("direct.event")  # configured already, not on first lazy event
        get_logger("x").debug("dropped.event")
        get_logger("x").info("kept.event")
        print(json.dumps({}))
    """, tmp_path)
    assert [(x["event"], x["level"]) for x in lines] == [("direct.event", "info"), ("kept.event", "info")]


# --- through the CLI ------------------------------------------------------------------------------


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    (d / "000001_users.up.sql").write_text("CREATE TABLE users (id bigint PRIMARY KEY, email text);\n")
    return d


def _cli(tmp_path: Path, *args: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *python_flags, "-m", "veza_canary", *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL)


def test_lint_command_runs_and_never_imports_structlog(tmp_path: Path, migrations: Path) -> None:
    p = _cli(tmp_path, "lint-migrations", "--dir", str(migrations), "--all", "--no-cache",
             python_flags=("-X", "importtime"))
    assert p.returncode == 0, p.stderr
    assert "migration lint" in p.stdout
    imported = re.findall(r"^import time:.*\|\s*([\w.]+)\s*$", p.stderr, re.MULTILINE)
    assert "veza_canary.log" in imported  # the -X importtime listing is there
    assert not [m for m in imported if m == "structlog" or m.startswith("structlog.")]


def test_lint_command_with_verbose_prints_its_debug_event(tmp_path: Path, migrations: Path) -> None:
    p = _cli(tmp_path, "-v", "lint-migrations", "--dir", str(migrations), "--all", "--no-cache")
    assert p.returncode == 0, p.stderr
    assert "migration lint" in p.stdout
    events = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    analysed = [e for e in events if e.get("event") == "lint.analysed"]
    assert analysed and analysed[0]["level"] == "debug" and analysed[0]["files"] == 1
