"""Hooks with real executable scripts in tmp_path: env, output, timeout kill, gates, validation."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import structlog

from veza_canary.errors import ExitCode, PreflightError
from veza_canary.hooks import (
    CONFIRM_PROMOTION,
    ON_ROLLBACK,
    POST_CANARY,
    POST_DEPLOY,
    PRE_DEPLOY,
    HookRefused,
    Hooks,
    hook_env,
)
from veza_canary.notify import ROLLED_BACK, RunFacts

FACTS = RunFacts(command="deploy", artifact_path="/builds/veza-api", sha256="cd" * 32, version="2.0.0",
                 nodes=("backend-api-2", "backend-api-1", "backend-api-3"), canary="backend-api-2",
                 report_path="/state/reports/deploy-1.json", operator="bob@ci", run_id="r42")
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _hook(d: Path, name: str, body: str, mode: int = 0o755) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(mode)
    return p


def _hooks(tmp_path: Path, **kw) -> Hooks:
    kw.setdefault("base_env", BASE_ENV)
    return Hooks(tmp_path / "hooks", cwd=tmp_path, **kw)


def test_a_hook_gets_the_runs_facts_in_its_environment(tmp_path):
    _hook(tmp_path / "hooks", ON_ROLLBACK, 'env | grep ^VEZA_ | sort > "$PWD/env.txt"\n')
    ev = FACTS.event(ROLLED_BACK, "canary rolled back", exit_code=5, verdict="fail", cause="p95 0.9s > 0.5s",
                     fleet_state={"nodes": {"backend-api-2": {"binary": "rollback"}}})
    r = _hooks(tmp_path).run(ON_ROLLBACK, ev)
    assert r.ran and r.ok and r.exit_code == 0
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())
    assert env["VEZA_HOOK"] == "on-rollback" and env["VEZA_EVENT"] == "rolled-back"
    assert env["VEZA_ARTIFACT"] == "/builds/veza-api" and env["VEZA_SHA256"] == "cd" * 32
    assert env["VEZA_VERSION"] == "2.0.0"
    assert env["VEZA_NODES"] == "backend-api-2 backend-api-1 backend-api-3"
    assert env["VEZA_CANARY"] == "backend-api-2" and env["VEZA_PEERS"] == "backend-api-1 backend-api-3"
    assert env["VEZA_VERDICT"] == "fail" and env["VEZA_EXIT_CODE"] == "5"
    assert env["VEZA_CAUSE"] == "p95 0.9s > 0.5s" and env["VEZA_REPORT"] == "/state/reports/deploy-1.json"
    assert env["VEZA_OPERATOR"] == "bob@ci" and env["VEZA_RUN_ID"] == "r42"
    assert '"binary": "rollback"' in env["VEZA_FLEET_STATE"]


def test_hook_env_leaves_out_unknown_facts_and_takes_extras():
    env = hook_env(POST_DEPLOY, None, exit_code=0, nothing=None)
    assert env == {"VEZA_HOOK": "post-deploy", "VEZA_EXIT_CODE": "0"}


def test_output_is_logged_line_by_line_redacted_and_its_tail_kept(tmp_path):
    _hook(tmp_path / "hooks", POST_CANARY, "echo one\necho 'password=hunter2' >&2\necho three\n")
    with structlog.testing.capture_logs() as logs:
        r = _hooks(tmp_path).run(POST_CANARY, FACTS.event("verdict", "green"))
    lines = [e["line"] for e in logs if e["event"] == "hook.output"]
    assert lines == ["one", "password=[REDACTED]", "three"]
    assert r.output_tail == ("one", "password=[REDACTED]", "three")
    assert "hunter2" not in repr(logs)


def test_an_informing_hook_that_fails_is_recorded_not_raised(tmp_path):
    _hook(tmp_path / "hooks", POST_DEPLOY, "echo 'chat is down'\nexit 3\n")
    h = _hooks(tmp_path)
    r = h.run(POST_DEPLOY, FACTS.event("peers-done", "done", exit_code=0))
    assert r.ran and not r.ok and r.exit_code == 3 and "chat is down" in r.describe()
    assert h.results == [r]


@pytest.mark.parametrize("gate", [PRE_DEPLOY, CONFIRM_PROMOTION])
def test_a_gate_that_exits_non_zero_refuses(tmp_path, gate):
    _hook(tmp_path / "hooks", gate, "echo 'change freeze until Monday'\nexit 1\n")
    with pytest.raises(HookRefused) as ei:
        _hooks(tmp_path).run(gate, FACTS.event("deploy-started", "x"))
    assert gate in str(ei.value) and "change freeze until Monday" in str(ei.value)
    assert ei.value.result is not None and ei.value.result.exit_code == 1
    assert isinstance(ei.value, PreflightError) and ei.value.exit_code == ExitCode.HOOK_REFUSED


def test_a_gate_that_exits_zero_lets_the_run_go_on(tmp_path):
    _hook(tmp_path / "hooks", CONFIRM_PROMOTION, "exit 0\n")
    assert _hooks(tmp_path).run(CONFIRM_PROMOTION).ok


def test_a_hook_past_its_timeout_is_killed_with_its_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    # The hook starts a grandchild that would hold the output pipe open for 60 s.
    _hook(tmp_path / "hooks", POST_CANARY, f"sleep 60 &\necho $! > {pidfile}\nwait\n")
    t0 = time.monotonic()
    r = _hooks(tmp_path, timeout=0.5).run(POST_CANARY)
    assert time.monotonic() - t0 < 3
    assert r.timed_out and not r.ok and r.exit_code == 128 + 9
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.02)
    assert not _alive(child), "the grandchild must die with the group"


def test_a_gate_that_times_out_refuses(tmp_path):
    _hook(tmp_path / "hooks", PRE_DEPLOY, "sleep 30\n")
    with pytest.raises(HookRefused, match="timed out"):
        _hooks(tmp_path, timeout=0.3).run(PRE_DEPLOY)


def test_a_gate_that_cannot_start_refuses(tmp_path):
    p = tmp_path / "hooks" / PRE_DEPLOY
    p.parent.mkdir()
    p.write_bytes(b"\x7fELF not really")  # executable bit, but not a program the kernel can run
    p.chmod(0o755)
    with pytest.raises(HookRefused, match="could not run"):
        _hooks(tmp_path).run(PRE_DEPLOY)


def test_an_absent_optional_hook_is_skipped(tmp_path):
    r = _hooks(tmp_path).run(PRE_DEPLOY)
    assert not r.ran and r.ok and "does not exist" in (r.error or "")


def test_hooks_run_in_the_repository_root_with_no_stdin(tmp_path):
    _hook(tmp_path / "hooks", POST_DEPLOY, 'pwd > "$VEZA_OUT"\ncat > /dev/null\n')
    r = _hooks(tmp_path).run(POST_DEPLOY, out=str(tmp_path / "pwd.txt"))
    assert r.ok and (tmp_path / "pwd.txt").read_text().strip() == str(tmp_path)


def test_validate_refuses_a_required_hook_that_is_missing_or_not_executable(tmp_path):
    _hook(tmp_path / "hooks", CONFIRM_PROMOTION, "exit 0\n", mode=0o644)
    h = _hooks(tmp_path, required=(PRE_DEPLOY, CONFIRM_PROMOTION))
    with pytest.raises(PreflightError) as ei:
        h.validate()
    msg = str(ei.value)
    assert "pre-deploy does not exist" in msg and "confirm-promotion is not executable" in msg


def test_validate_lists_present_hooks_and_warns_about_a_non_executable_optional_one(tmp_path):
    _hook(tmp_path / "hooks", PRE_DEPLOY, "exit 0\n")
    _hook(tmp_path / "hooks", POST_DEPLOY, "exit 0\n", mode=0o644)
    with structlog.testing.capture_logs() as logs:
        present = _hooks(tmp_path, required=(PRE_DEPLOY,)).validate()
    assert present == [PRE_DEPLOY]
    assert any(e["event"] == "hook.unusable" and e["hook"] == POST_DEPLOY for e in logs)


def test_validate_with_no_hooks_directory_is_fine_when_nothing_is_required(tmp_path):
    assert _hooks(tmp_path).validate() == []


def test_a_required_gate_that_vanishes_mid_run_refuses(tmp_path):
    p = _hook(tmp_path / "hooks", CONFIRM_PROMOTION, "exit 0\n")
    h = _hooks(tmp_path, required=(CONFIRM_PROMOTION,))
    h.validate()
    p.unlink()
    with pytest.raises(HookRefused, match="does not exist"):
        h.run(CONFIRM_PROMOTION)


def test_an_unknown_required_hook_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pre-deplyo"):
        _hooks(tmp_path, required=("pre-deplyo",))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
