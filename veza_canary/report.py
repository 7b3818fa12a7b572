"""The deploy report: what was asked, what each step did, what the SLI said, where the fleet ended.

Written as JSON to ``--report PATH`` and always to a copy under the state
directory. It is the CI artifact and the post-mortem record; settings in it are
redacted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veza_canary.log import get_logger, redact_value

if TYPE_CHECKING:
    from veza_canary.settings import Settings

log = get_logger(__name__)


@dataclass
class StepRecord:
    name: str
    node: str | None = None
    started_at: str = ""
    ended_at: str = ""
    duration_s: float = 0.0
    outcome: str = "running"  # ok | skipped | failed | interrupted
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Report:
    command: str = "deploy"
    tool_version: str = ""
    started_at: str = field(default_factory=lambda: now_iso())
    ended_at: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    rollback_source: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    sli_samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    migration_gate: dict[str, Any] = field(default_factory=dict)
    final_state: dict[str, Any] = field(default_factory=dict)
    #: Webhook deliveries, hooks run, the history entry (notify/hooks/history).
    notifications: dict[str, Any] = field(default_factory=dict)
    outcome: str = "running"
    exit_code: int | None = None
    message: str = ""
    resume: str = ""

    @contextmanager
    def step(self, name: str, node: str | None = None) -> Iterator[StepRecord]:
        rec = StepRecord(name=name, node=node, started_at=now_iso())
        self.steps.append(rec)
        t0 = time.monotonic()
        try:
            yield rec
        except BaseException as exc:
            rec.outcome = "interrupted" if type(exc).__name__ == "DeployInterrupt" else "failed"
            rec.detail = rec.detail or str(exc)
            raise
        else:
            if rec.outcome == "running":
                rec.outcome = "ok"
        finally:
            rec.ended_at = now_iso()
            rec.duration_s = round(time.monotonic() - t0, 3)

    def event(self, kind: str, **data: Any) -> None:
        self.events.append({"at": now_iso(), "kind": kind, **redact_value(data)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "tool_version": self.tool_version,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
            "resume": self.resume,
            "settings": redact_value(self.settings),
            "artifact": self.artifact,
            "rollback_source": self.rollback_source,
            "migration_gate": self.migration_gate,
            "steps": [s.to_dict() for s in self.steps],
            "sli_samples": self.sli_samples,
            "events": self.events,
            "notifications": self.notifications,
            "final_state": self.final_state,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def report_paths(report: Report, settings: Settings, extra: Path | None) -> list[Path]:
    """Where a run's report goes: always under STATE_DIR/reports, and at ``extra`` when given."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    paths = [settings.resolved_state_dir / "reports" / f"{report.command}-{stamp}.json"]
    return [*paths, extra] if extra is not None else paths


def write_reports(report: Report, paths: list[Path]) -> list[Path]:
    """Write the report to each path; returns the paths written (a failure is logged, never raised)."""
    written = []
    for p in paths:
        try:
            report.write(p)
            written.append(p)
        except OSError as exc:
            log.error("report.write_failed", path=str(p), error=exc.strerror)
    return written
