"""The Announcer: one run's webhooks, hooks and history entry, end to end on real receivers and scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.settings_helper import make_settings
from tests.unit.test_history import FakeStateTransport
from tests.unit.test_notify import receiver  # noqa: F401 - the real local HTTP receiver fixture
from veza_canary.announce import Announcer
from veza_canary.errors import PreflightError
from veza_canary.history import History
from veza_canary.hooks import (
    CONFIRM_PROMOTION,
    ON_ROLLBACK,
    POST_CANARY,
    POST_DEPLOY,
    PRE_DEPLOY,
    HookRefused,
)
from veza_canary.lock import StateStore
from veza_canary.notify import CANARY_IN_ROTATION, VERDICT
from veza_canary.report import Report

ALL_HOOKS = (PRE_DEPLOY, CONFIRM_PROMOTION, POST_CANARY, ON_ROLLBACK, POST_DEPLOY)


def _hooks(root: Path, refuse: str | None = None) -> None:
    d = root / ".veza-canary" / "hooks"
    d.mkdir(parents=True)
    for name in ALL_HOOKS:
        p = d / name
        p.write_text(f'#!/bin/sh\necho "$VEZA_HOOK $VEZA_EVENT ${{VEZA_EXIT_CODE:-}} ${{VEZA_VERDICT:-}}" >> '
                     f'"{root}/ran.txt"\n' + ("exit 1\n" if name == refuse else ""))
        p.chmod(0o755)


def _announcer(tmp_path: Path, url: str, **knobs) -> tuple[Announcer, FakeStateTransport]:
    s = make_settings(webhook_urls=url, canary_node="backend-api-2", peer_nodes="backend-api-1 backend-api-3",
                      artifact=str(tmp_path / "veza-api"), **knobs)
    t = FakeStateTransport()
    t.dirs.add("/var/lib/veza-canary")
    ann = Announcer.from_settings(s, store=StateStore(t), command="deploy", repo_root=tmp_path,
                                  report_path=tmp_path / "report.json")
    ann.learn(sha256="ab" * 32, version="1.4.2")
    return ann, t


def _report(exit_code: int, *, rolled_back: bool = False) -> Report:
    rep = Report(command="deploy")
    rep.artifact = {"path": "/b/veza-api", "sha256": "ab" * 32, "size": 3}
    rep.settings = {"canary_node": "backend-api-2"}
    rep.sli_samples = [{"at": float(i), "verdict": "pass"} for i in range(7)] + [{"at": 7.0, "verdict": "fail"}]
    rep.final_state = {"nodes": {"backend-api-2": {"binary": "rollback" if rolled_back else "artifact"},
                                 "backend-api-1": {"binary": "other"}, "backend-api-3": {"binary": "other"}}}
    if rolled_back:
        with pytest.raises(RuntimeError), rep.step("sli-watch", node="backend-api-2"):
            raise RuntimeError("p95 0.91s > 0.5s")
        rep.event("rollback_start", node="backend-api-2", cause="sli-watch: p95 0.91s > 0.5s")
        rep.event("rollback_done", node="backend-api-2", sha256="cd" * 32)
        rep.event("release_blocked", sha256="ab" * 32)
    rep.outcome = "success" if exit_code == 0 else "CanaryRolledBack"
    rep.exit_code, rep.message = exit_code, ("deployed" if exit_code == 0 else "sli-watch failed; canary rolled back")
    rep.ended_at = "2026-12-06T04:00:00+00:00"
    return rep


def test_a_successful_deploy_sends_every_event_runs_every_hook_and_records_history(tmp_path, receiver):  # noqa: F811
    _hooks(tmp_path)
    ann, t = _announcer(tmp_path, receiver.url)
    assert ann.check() == list((PRE_DEPLOY, CONFIRM_PROMOTION, POST_CANARY, ON_ROLLBACK, POST_DEPLOY))
    ann.gate(PRE_DEPLOY, "pre-deploy gate")
    ann.started("deploying abababababab to canary backend-api-2")
    ann.emit(CANARY_IN_ROTATION, "canary backend-api-2 UP on abababababab", node="backend-api-2")
    ann.emit(VERDICT, "canary green", step="sli-watch", node="backend-api-2", verdict="pass")
    ann.gate(CONFIRM_PROMOTION, "promote?", verdict="pass")
    ann.inform(POST_CANARY, "canary passed", verdict="pass")
    ann.conclude(_report(0))
    ann.post_deploy()
    out = ann.close()
    assert [b["event"] for b in receiver.bodies] == ["deploy-started", "canary-in-rotation", "verdict", "peers-done"]
    assert receiver.bodies[-1]["exit_code"] == 0 and receiver.bodies[-1]["artifact"]["version"] == "1.4.2"
    assert all(w["ok"] for w in out["webhooks"]) and len(out["webhooks"]) == 4
    ran = [ln.rstrip() for ln in (tmp_path / "ran.txt").read_text().splitlines()]
    assert ran == ["pre-deploy pre-deploy", "confirm-promotion confirm-promotion  pass",
                   "post-canary post-canary  pass", "post-deploy peers-done 0"]
    assert [h["name"] for h in out["hooks"]] == [PRE_DEPLOY, CONFIRM_PROMOTION, POST_CANARY, POST_DEPLOY]
    assert out["history"]["appended"]
    [entry] = History(StateStore(t)).read().entries
    assert entry["outcome"] == "success" and entry["run_id"] == ann.facts.run_id and entry["version"] == "1.4.2"
    assert json.dumps(out)  # the report can hold it


def test_a_rollback_sends_cause_and_evidence_and_runs_on_rollback_then_post_deploy(tmp_path, receiver):  # noqa: F811
    _hooks(tmp_path)
    ann, t = _announcer(tmp_path, receiver.url)
    ann.started("deploying")
    ann.conclude(_report(5, rolled_back=True))
    ann.post_deploy()
    ann.close()
    body = receiver.bodies[-1]
    assert body["event"] == "rolled-back" and body["exit_code"] == 5
    assert body["data"]["cause"] == "sli-watch: p95 0.91s > 0.5s" and body["data"]["step"] == "sli-watch"
    assert len(body["data"]["evidence"]) == 5 and body["data"]["evidence"][-1]["verdict"] == "fail"
    assert body["data"]["release_blocked"] is True
    assert body["fleet_state"]["nodes"]["backend-api-2"]["binary"] == "rollback"
    assert (tmp_path / "ran.txt").read_text().splitlines() == ["on-rollback rolled-back 5 rolled-back",
                                                               "post-deploy rolled-back 5 rolled-back"]
    [entry] = History(StateStore(t)).read().entries
    assert entry["outcome"] == "rolled-back" and entry["cause"] == "sli-watch: p95 0.91s > 0.5s"


def test_a_refusing_pre_deploy_gate_raises_and_the_run_ends_with_failed_but_no_post_deploy(tmp_path, receiver):  # noqa: F811
    _hooks(tmp_path, refuse=PRE_DEPLOY)
    ann, _t = _announcer(tmp_path, receiver.url)
    with pytest.raises(HookRefused) as ei:
        ann.gate(PRE_DEPLOY, "pre-deploy gate")
    assert isinstance(ei.value, PreflightError)
    rep = Report(command="deploy")
    rep.exit_code, rep.message = int(ei.value.exit_code), ei.value.message
    ann.conclude(rep)
    assert ann.post_deploy() is None
    ann.close()
    [body] = receiver.bodies
    assert body["event"] == "failed" and body["data"]["changed"] is False and "pre-deploy" in body["summary"]


def test_a_missing_required_hook_fails_check(tmp_path, receiver):  # noqa: F811
    ann, _t = _announcer(tmp_path, receiver.url, required_hooks="confirm-promotion")
    with pytest.raises(PreflightError, match="confirm-promotion does not exist"):
        ann.check()


def test_settings_knobs_reach_the_notifier_and_the_hooks(tmp_path):
    s = make_settings(webhook_urls="https://a.example/x, https://b.example/y", webhook_timeout="2s",
                      webhook_events="rolled-back failed", hooks_dir="ops/hooks", hook_timeout="1m",
                      required_hooks="pre-deploy")
    ann = Announcer.from_settings(s, store=None, repo_root=tmp_path)
    n, h = ann.notifier, ann.hooks
    assert n.urls == ("https://a.example/x", "https://b.example/y") and n.timeout == 2.0
    assert n.events == {"rolled-back", "failed"}
    assert h is not None and h.dir == tmp_path / "ops" / "hooks" and h.timeout == 60.0
    assert h.required == ("pre-deploy",) and h.cwd == tmp_path
    assert s.public_dict()["webhook_urls"] == "[REDACTED]"


@pytest.mark.parametrize(("knob", "value", "msg"), [
    ("webhook_urls", "ftp://x.example/hook", "must start with"),
    ("webhook_urls", "https://h.example/a https://h.example/a", "twice"),
    ("webhook_events", "rolled-back rolledback", "unknown event"),
    ("required_hooks", "pre-deplyo", "unknown hook"),
    ("webhook_timeout", "0", "too small"),
])
def test_bad_notify_knobs_are_config_errors(knob, value, msg):
    from veza_canary.errors import ConfigError

    with pytest.raises(ConfigError, match=msg):
        make_settings(**{knob: value})


def test_a_bad_webhook_url_is_not_echoed_whole():
    from veza_canary.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        make_settings(webhook_urls="https://hooks.example/services/s3cret path")
    assert "s3cret" not in str(ei.value)


def test_a_manual_rollback_that_succeeds_is_a_rolled_back_event_and_runs_on_rollback(tmp_path, receiver):  # noqa: F811
    _hooks(tmp_path)
    s = make_settings(webhook_urls=receiver.url)
    t = FakeStateTransport()
    t.dirs.add("/var/lib/veza-canary")
    ann = Announcer.from_settings(s, store=StateStore(t), command="rollback", repo_root=tmp_path)
    ann.started("rolling back backend-api-2, backend-api-1")
    rep = Report(command="rollback")
    rep.exit_code, rep.message = 0, "rolled back 2 node(s)"
    ann.conclude(rep)
    ann.post_deploy()
    ann.close()
    [started, body] = receiver.bodies
    assert body["event"] == "rolled-back" and body["command"] == "rollback" and body["data"]["manual"] is True
    assert [ln.split()[:2] for ln in (tmp_path / "ran.txt").read_text().splitlines()] == [
        ["on-rollback", "rolled-back"], ["post-deploy", "rolled-back"]]
    [entry] = History(StateStore(t)).read().entries
    assert entry["command"] == "rollback" and entry["outcome"] == "success"


def test_ctrl_c_during_an_informing_hook_kills_the_hook_and_does_not_escape(tmp_path):
    import os
    import signal
    import threading
    import time

    d = tmp_path / ".veza-canary" / "hooks"
    d.mkdir(parents=True)
    (d / POST_DEPLOY).write_text("#!/bin/sh\nsleep 30\n")
    (d / POST_DEPLOY).chmod(0o755)
    ann = Announcer.from_settings(make_settings(), store=None, repo_root=tmp_path)
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    assert ann.inform(POST_DEPLOY, "done") is None
    assert time.monotonic() - t0 < 3
