"""The deploy history: one JSON line per run, appended beside the fleet lock.

The record is ``history.jsonl`` in the fleet's state directory (the same
``StateStore`` as the lock and the blocked releases: on the HAProxy host by
default), so every deployer and every CI job appends to, and reads, the same
history.

**Appending is atomic without the lock.** One entry is one line of at most
``MAX_LINE`` bytes, handed on stdin to ``dd of=history.jsonl oflag=append
conv=notrunc iflag=fullblock bs=1M``: ``iflag=fullblock`` makes dd read the whole
line before it writes, so the line goes out in *one* ``write(2)`` on a file opened
with ``O_APPEND``, which the kernel places at the end as a whole. Two runs
appending at once (a deploy and a manual rollback refused by the lock, say) give
two whole lines in some order, never interleaved bytes. Runs append while they
still hold the fleet lock, so entries of locked runs are in lock order anyway.

**Reading is never fatal.** A missing record is "no history yet"; a line that is
not a JSON object (a disk that filled up mid-write, a hand edit) is reported as a
problem next to the entries that did parse; only a state directory that cannot
be reached at all is an error (``TransportError``, exit 10).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from veza_canary import __version__
from veza_canary.errors import ExitCode, TransportError, VezaError
from veza_canary.lock import StateStore
from veza_canary.log import get_logger, redact_text, redact_value

log = get_logger(__name__)

NAME = "history.jsonl"
#: An entry longer than this is shortened (cause and message first): one line, one write.
MAX_LINE = 16 * 1024
_MAX_CAUSE = 500
_TIMEOUT = 15.0


def outcome_word(exit_code: int | None) -> str:
    """``success``, ``rolled-back``, ``peer-failed``, ``preflight``, ... from the exit code."""
    if exit_code is None:
        return "unknown"
    if exit_code == 0:
        return "success"
    try:
        return ExitCode(exit_code).name.lower().replace("_", "-")
    except ValueError:
        return f"exit-{exit_code}"


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryEntry:
    """One run, as the history keeps it. Unknown fields of a newer tool are kept when read back."""

    at: str  # when the run ended, ISO 8601 UTC
    started_at: str = ""
    command: str = "deploy"
    operator: str = ""
    artifact: str | None = None
    sha256: str | None = None
    version: str | None = None
    outcome: str = "unknown"
    exit_code: int | None = None
    cause: str = ""
    nodes: tuple[str, ...] = ()
    canary: str | None = None
    run_id: str = ""
    report: str | None = None
    tool_version: str = field(default=__version__)

    @classmethod
    def from_report(cls, report: Any, *, operator: str, run_id: str = "", report_path: str | None = None,
                    version: str | None = None) -> HistoryEntry:
        """The entry of a finished run, from its ``Report`` (or the report's dict)."""
        d: Mapping[str, Any] = report if isinstance(report, Mapping) else report.to_dict()
        art = d.get("artifact") or {}
        settings = d.get("settings") or {}
        code = d.get("exit_code")
        return cls(
            at=d.get("ended_at") or datetime.now(UTC).isoformat(timespec="seconds"),
            started_at=d.get("started_at") or "",
            command=d.get("command") or "deploy",
            operator=operator,
            artifact=art.get("path"),
            sha256=art.get("sha256"),
            version=version,
            outcome=outcome_word(code),
            exit_code=code,
            cause=cause_of(d),
            nodes=tuple((d.get("final_state") or {}).get("nodes", {}) or ()),
            canary=settings.get("canary_node"),
            run_id=run_id,
            report=report_path,
        )

    def to_line(self) -> bytes:
        """The entry as one JSON line (redacted, at most MAX_LINE bytes, newline-terminated)."""
        # NOTE: clipped before redaction: the redaction regexes are slow on very long strings.
        data = redact_value({k: (list(v) if isinstance(v, tuple) else _clip(v)) for k, v in asdict(self).items()})
        line = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        if len(line.encode()) > MAX_LINE:
            data["cause"] = str(data.get("cause", ""))[:200] + " [shortened]"
            data["nodes"] = data["nodes"][:50]
            line = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
            if len(line.encode()) > MAX_LINE:  # still: keep what identifies the run
                keep = ("at", "command", "operator", "sha256", "outcome", "exit_code", "run_id")
                line = json.dumps({k: data.get(k) for k in keep} | {"cause": "[entry too long, shortened]"},
                                  sort_keys=True, separators=(",", ":"), default=str)
        return (line + "\n").encode()


def cause_of(report: Mapping[str, Any]) -> str:
    """Why a run did not succeed, in one line: the rollback's cause, else the outcome message."""
    if report.get("exit_code") == 0:
        return ""
    for ev in report.get("events") or ():
        if isinstance(ev, Mapping) and ev.get("kind") == "rollback_start" and ev.get("cause"):
            return _one_line(str(ev["cause"]))
    return _one_line(str(report.get("message") or ""))


def _clip(v: Any, limit: int = 4 * _MAX_CAUSE) -> Any:
    return v[:limit] if isinstance(v, str) else v


def _one_line(s: str) -> str:
    s = " ".join(redact_text(_clip(s)).split())
    return s if len(s) <= _MAX_CAUSE else s[: _MAX_CAUSE - 1] + "…"


@dataclass
class HistoryRead:
    """What ``History.read`` found: entries newest first, and what could not be read."""

    path: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    missing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "missing": self.missing, "entries": self.entries, "problems": self.problems}


class History:
    """Append to and read the shared history through a ``StateStore``."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.path = f"{store.dir}/{NAME}"

    @property
    def where(self) -> str:
        return f"[{self.store.transport.name}] {self.path}"

    def append(self, entry: HistoryEntry) -> str | None:
        """Append one entry. Never raises: returns None when written, else the problem (also logged)."""
        try:
            line = entry.to_line()
            r = self._dd(line)
            if r.exit_code != 0 and "No such file or directory" in r.stderr:
                # First entry on a fresh host: the state directory itself may not exist yet.
                self.store.transport.run(("mkdir", "-p", "--", self.store.dir), timeout=_TIMEOUT)
                r = self._dd(line)
            if r.exit_code != 0:
                raise TransportError(r.describe())
        except (VezaError, OSError) as exc:
            why = redact_text(str(exc) or type(exc).__name__)
            log.error("history.append_failed", path=self.where, error=why)
            return why
        log.info("history.appended", path=self.where, outcome=entry.outcome, exit_code=entry.exit_code)
        return None

    def _dd(self, line: bytes):  # noqa: ANN202 - transport Result
        return self.store.transport.run(
            ("dd", f"of={self.path}", "oflag=append", "conv=notrunc", "iflag=fullblock", "bs=1M", "status=none"),
            input=line, timeout=_TIMEOUT, check=False)

    def read(self, limit: int = 20) -> HistoryRead:
        """The newest ``limit`` entries (0: all), newest first. Raises TransportError only if unreachable."""
        argv = ("tail", "-n", str(limit), "--", self.path) if limit > 0 else ("cat", "--", self.path)
        out = HistoryRead(path=self.where)
        for _ in range(3):
            r = self.store.transport.run(argv, timeout=30, check=False)
            # Same Incus 6.0 quirk as StateStore.read: exit 0 with the output lost on the way. A record we
            # wrote is never empty, so an empty answer is asked again (a truly empty file stays empty).
            if r.exit_code != 0 or r.stdout:
                break
        if r.exit_code != 0:
            if "No such file" in r.stderr:
                out.missing = True
                return out
            raise TransportError(r.describe())
        lines = r.stdout.splitlines()
        for back, raw in enumerate(reversed(lines), start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                out.problems.append(f"entry {back} from the end is not a JSON object: {_one_line(raw)[:120]!r}")
                continue
            out.entries.append(data)
        return out


def table(read: HistoryRead) -> list[str]:
    """The history for people: one line per run, newest first, then the problems."""
    if read.missing:
        return [f"no history yet ({read.path})"]
    rows = [("WHEN", "WHO", "COMMAND", "ARTIFACT", "SHA256", "OUTCOME", "EXIT", "CAUSE")]
    for e in read.entries:
        art = str(e.get("artifact") or "-")
        rows.append((
            str(e.get("at") or "?")[:19].replace("T", " "),
            str(e.get("operator") or "?"),
            str(e.get("command") or "?"),
            art if len(art) <= 32 else "…" + art[-31:],
            str(e.get("sha256") or "?")[:12],
            str(e.get("outcome") or "?"),
            str(e.get("exit_code") if e.get("exit_code") is not None else "?"),
            str(e.get("cause") or ""),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows]
    lines = [ln.rstrip() for ln in lines]
    if not read.entries:
        lines.append("(no entries)")
    lines.extend(f"! {p}" for p in read.problems)
    return lines
