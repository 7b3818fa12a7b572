"""One handle on webhooks, hooks and the history for a run (deploy or manual rollback).

The pipeline holds one ``Announcer`` and calls it at fixed points; everything
about *what* to send, which hook to run and what to record lives here, so the
deploy and the manual rollback cannot drift apart::

    ann = Announcer.from_settings(s, store=fleet.store, command="deploy", repo_root=root, report_path=path)
    ann.check()                                   # preflight: REQUIRED_HOOKS usable (PreflightError)
    ann.learn(artifact_path=..., sha256=...)      # once the artifact is hashed
    ann.gate(PRE_DEPLOY, "pre-deploy gate")       # HookRefused stops the run
    ann.started("deploying ... to canary ...")    # deploy-started
    ann.emit(CANARY_IN_ROTATION, "...", node=...)
    ann.emit(VERDICT, "...", step="sli-watch", verdict="pass", ...)
    ann.gate(CONFIRM_PROMOTION, "...")            # HookRefused fails the canary phase
    ann.inform(POST_CANARY, "...")
    ann.conclude(report)                          # terminal event, on-rollback hook, history entry
    ann.post_deploy()                             # post-deploy hook (after the report is written)
    report_extra = ann.close()                    # bounded wait for the webhooks; records for the report

Nothing here raises into the run except ``check`` and ``gate``, which are meant to.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veza_canary.hooks import ON_ROLLBACK, POST_DEPLOY, HookRefused, HookResult, Hooks
from veza_canary.log import get_logger, redact_text
from veza_canary.notify import (
    DEPLOY_STARTED,
    FAILED,
    INTERRUPTED,
    LOCK_TAKEN_OVER,
    PEERS_DONE,
    ROLLED_BACK,
    Event,
    Notifier,
    RunFacts,
)

if TYPE_CHECKING:
    from veza_canary.history import History
    from veza_canary.lock import StateStore
    from veza_canary.settings import Settings

log = get_logger(__name__)

#: SLI samples a ``rolled-back`` event carries as evidence (the report has them all).
EVIDENCE_SAMPLES = 5

_EXIT_OK, _EXIT_ROLLED_BACK, _EXIT_ROLLBACK_FAILED, _EXIT_INTERRUPTED = 0, 5, 7, 130


class Announcer:
    def __init__(self, facts: RunFacts, *, notifier: Notifier | None = None, hooks: Hooks | None = None,
                 history: History | None = None) -> None:
        self.facts = facts
        self.notifier = notifier or Notifier([])
        self.hooks = hooks
        self.history = history
        self.history_error: str | None = None
        self.history_appended = False
        self._started = False
        self._terminal: Event | None = None

    @classmethod
    def from_settings(cls, s: Settings, *, store: StateStore | None, command: str = "deploy",
                      repo_root: Path | None = None, report_path: str | Path | None = None,
                      **notifier_kw: Any) -> Announcer:
        from veza_canary.history import History

        root = repo_root or Path.cwd()
        facts = RunFacts(command=command, nodes=s.pool.nodes, canary=s.pool.canary,
                         artifact_path=str(s.artifact) if s.artifact else None,
                         report_path=str(report_path) if report_path else None)
        return cls(facts, notifier=Notifier.from_settings(s, **notifier_kw), hooks=Hooks.from_settings(s, root),
                   history=History(store) if store is not None else None)

    # -- during the run ---------------------------------------------------------------
    def learn(self, **facts: Any) -> None:
        """Fill in facts known later (``sha256`` after hashing, ``version``, ``report_path``)."""
        self.facts = self.facts.with_(**facts)

    def check(self) -> list[str]:
        """Preflight: every REQUIRED_HOOKS entry usable (raises PreflightError); returns the hooks present."""
        return self.hooks.validate() if self.hooks else []

    def event(self, name: str, summary: str, **data: Any) -> Event:
        return self.facts.event(name, summary, **data)

    def emit(self, name: str, summary: str, **data: Any) -> Event:
        """Send an event to the webhooks (queued; never blocks, never raises)."""
        ev = self.event(name, summary, **data)
        self.notifier.emit(ev)
        return ev

    def started(self, summary: str, **data: Any) -> Event:
        """The first change is about to be made: ``deploy-started``; from now on post-deploy will run."""
        self._started = True
        return self.emit(DEPLOY_STARTED, summary, **data)

    def lock_taken_over(self, holder: str) -> Event:
        return self.emit(LOCK_TAKEN_OVER, f"took over the fleet lock of {holder} (its process is gone)",
                         holder=holder)

    def gate(self, hook: str, summary: str, **data: Any) -> HookResult | None:
        """Run gate hook ``hook``; HookRefused (a PreflightError) when it says no."""
        if self.hooks is None:
            return None
        ev = self.event(hook, summary, **data)
        try:
            return self.hooks.run(hook, ev)
        except HookRefused as exc:
            log.warning("hook.refused", hook=hook, error=exc.message)
            raise

    def inform(self, hook: str, summary: str = "", *, event: Event | None = None, **data: Any) -> HookResult | None:
        """Run an informing hook; its failure is logged and recorded, never raised."""
        if self.hooks is None:
            return None
        try:
            return self.hooks.run(hook, event or self.event(hook, summary, **data))
        except KeyboardInterrupt:
            # Ctrl-C while an informing hook runs (after the run, outside the pipeline's interrupt guard):
            # the hook was killed; that stops the hook, not the deploy, whose outcome is already decided.
            # (During the run the guard turns signals into DeployInterrupt, which is not caught here.)
            log.warning("hook.interrupted", hook=hook)
            return None
        except Exception as exc:  # noqa: BLE001 - an informing hook never changes the outcome
            log.error("hook.failed", hook=hook, error=redact_text(str(exc) or type(exc).__name__))
            return None

    # -- the end ------------------------------------------------------------------------
    def conclude(self, report: Any) -> Event:
        """The run's outcome is known (exit code, final state): terminal event, on-rollback, history entry.

        ``report`` is the ``Report`` (or its dict). Call it while still holding the fleet lock.
        """
        from veza_canary.history import HistoryEntry, cause_of

        d: Mapping[str, Any] = report if isinstance(report, Mapping) else report.to_dict()
        code = d.get("exit_code")
        events = [e for e in d.get("events") or () if isinstance(e, Mapping)]
        rollback_started = any(e.get("kind") == "rollback_start" for e in events)
        cause = cause_of(d)
        common: dict[str, Any] = {"exit_code": code, "fleet_state": d.get("final_state") or {}}
        failed_step = next((s.get("name") for s in reversed(d.get("steps") or ())
                            if isinstance(s, Mapping) and s.get("outcome") in ("failed", "interrupted")), None)
        message = str(d.get("message") or d.get("outcome") or "")
        manual_rollback = self.facts.command == "rollback"
        if code == _EXIT_OK and manual_rollback:
            ev = self.event(ROLLED_BACK, message or "rolled back", **common, verdict="rolled-back", manual=True)
            rollback_started = True
        elif code == _EXIT_OK:
            ev = self.event(PEERS_DONE, message or "deployed", **common)
        elif code == _EXIT_ROLLED_BACK:
            ev = self.event(ROLLED_BACK, message, **common, step=failed_step, cause=cause, verdict="rolled-back",
                            evidence=list(d.get("sli_samples") or ())[-EVIDENCE_SAMPLES:],
                            release_blocked=any(e.get("kind") == "release_blocked" for e in events))
        elif code == _EXIT_INTERRUPTED:
            ev = self.event(INTERRUPTED, message, **common, step=failed_step, cause=cause)
        else:
            ev = self.event(FAILED, message, **common, step=failed_step, cause=cause, changed=self._started,
                            verdict="rollback-failed" if code == _EXIT_ROLLBACK_FAILED else None)
        self._terminal = ev
        self.notifier.emit(ev)
        if rollback_started:
            done = code == _EXIT_OK or any(e.get("kind") == "rollback_done" for e in events)
            verdict = "rolled-back" if done else "rollback-failed"
            on_rb = ev if ev.name == ROLLED_BACK else self.event(
                ev.name, ev.summary, **common, cause=cause, verdict=verdict)
            self.inform(ON_ROLLBACK, event=on_rb)
        if self.history is not None:
            entry = HistoryEntry.from_report(d, operator=self.facts.operator, run_id=self.facts.run_id,
                                             report_path=self.facts.report_path, version=self.facts.version)
            self.history_error = self.history.append(entry)
            self.history_appended = self.history_error is None
        return ev

    def post_deploy(self) -> HookResult | None:
        """The post-deploy hook, for a run that sent deploy-started (call it once the report is written)."""
        if not self._started or self._terminal is None:
            return None
        return self.inform(POST_DEPLOY, event=self._terminal)

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait (bounded) for the webhooks; return what the report records under ``notifications``."""
        deliveries = self.notifier.close(timeout)
        return {
            "run_id": self.facts.run_id,
            "webhooks": [d.to_dict() for d in deliveries],
            "hooks": [r.to_dict() for r in (self.hooks.results if self.hooks else [])],
            "history": {"path": self.history.where if self.history else None,
                        "appended": self.history_appended, "error": self.history_error},
        }
