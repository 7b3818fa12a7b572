"""The fleet lock and the blocked-release list, kept next to HAProxy.

Both live in a state directory reached through a transport (the HAProxy
container by default, so two on-call laptops see the same lock). Taking the
lock is one atomic ``ln`` of a holder file onto ``lock.json`` (link(2) fails if
the name exists). A lock whose holder is a dead process on this same host is
taken over (a SIGKILLed run must not block the re-run); any other lock blocks,
and one older than ``LOCK_STALE_AFTER`` is reported as stale with the exact
command to release it.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from veza_canary.clock import Clock
from veza_canary.errors import LockHeld, PreflightError, ReleaseBlocked, TransportError, VezaError
from veza_canary.log import get_logger, redact_text
from veza_canary.transport.base import Transport

log = get_logger(__name__)

DEFAULT_STATE_DIR = "/var/lib/veza-canary"


@dataclass(frozen=True, slots=True)
class LockInfo:
    holder: str
    host: str
    pid: int
    started_at: str  # ISO 8601 UTC
    artifact_sha256: str
    command: str
    token: str

    @classmethod
    def mine(cls, artifact_sha256: str, command: str, now: datetime | None = None) -> LockInfo:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return cls(holder=user, host=socket.gethostname(), pid=os.getpid(),
                   started_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
                   artifact_sha256=artifact_sha256, command=command, token=secrets.token_hex(8))

    def age_seconds(self, now: datetime) -> float:
        try:
            return (now - datetime.fromisoformat(self.started_at)).total_seconds()
        except ValueError:
            return float("inf")

    def describe(self) -> str:
        return f"{self.holder}@{self.host} pid {self.pid} since {self.started_at} (artifact {self.artifact_sha256[:12]})"


class StateStore:
    """Small JSON files in a directory reached through a transport."""

    def __init__(self, transport: Transport, directory: str = DEFAULT_STATE_DIR) -> None:
        self.transport = transport
        self.dir = directory.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.dir}/{name}"

    def read(self, name: str) -> dict[str, Any] | None:
        for _ in range(3):
            r = self.transport.run(("cat", "--", self._path(name)), timeout=30, check=False)
            # Our files are never empty: empty stdout with exit 0 is output lost on the way (incus exec on
            # Incus 6.0 drops it now and then); a lock misread as corrupt would not be released. Reads repeat.
            if r.exit_code != 0 or r.stdout:
                break
            log.warning("state.empty_read.retry", path=self._path(name))
        if r.exit_code != 0:
            if "No such file" in r.stderr:
                return None
            raise TransportError(r.describe())
        try:
            data = json.loads(r.stdout)
        except ValueError:
            return {"corrupt": r.stdout[:200]}
        return data if isinstance(data, dict) else {"corrupt": r.stdout[:200]}

    @staticmethod
    def staged_name() -> str:
        """A fresh private temp name in the state dir (pass it to ``write_staged``)."""
        return f".staged-{secrets.token_hex(8)}.json"

    def write_staged(self, data: dict[str, Any], name: str | None = None) -> str:
        """Write ``data`` to a fresh private temp name (or ``name``) in the state dir; return that path."""
        staged = self._path(name or self.staged_name())
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(data, f, indent=2, sort_keys=True)
            local = f.name
        try:
            # A fresh private name: no reader sees it before link_exclusive/write, so no rename of the transport's.
            self.transport.push(local, staged, mode=0o600, create_dirs=True, atomic=False)
        finally:
            os.unlink(local)
        return staged

    def write(self, name: str, data: dict[str, Any]) -> None:
        staged = self.write_staged(data)
        target = self._path(name)
        self.transport.run(("mkdir", "-p", "--", target.rsplit("/", 1)[0]), timeout=30)
        self.transport.run(("mv", "-f", "--", staged, target), timeout=30)

    def link_exclusive(self, staged: str, name: str) -> bool:
        """Atomically create ``name`` from ``staged``; False if ``name`` exists."""
        r = self.transport.run(("sh", "-c", LINK_SCRIPT, "veza-lock", staged, self._path(name)), timeout=30,
                               check=False)
        if r.exit_code == 0:
            return True
        if "File exists" in r.stderr:
            return False
        raise TransportError(r.describe())

    def remove_if_contains(self, name: str, text: str) -> bool:
        """Remove ``name`` only if it contains ``text``, in one round trip; True if it was removed."""
        r = self.transport.run(("sh", "-c", REMOVE_IF_SCRIPT, "veza-lock", self._path(name), text), timeout=30,
                               check=False)
        return r.exit_code == 0

    def remove(self, name: str) -> None:
        self.transport.run(("rm", "-f", "--", self._path(name)), timeout=30, check=False)

    def list(self, subdir: str) -> list[str]:
        r = self.transport.run(("ls", "-1", "--", self._path(subdir)), timeout=30, check=False)
        return [ln for ln in r.stdout.splitlines() if ln.strip()] if r.exit_code == 0 else []


#: ``sh -c LINK_SCRIPT veza-lock STAGED TARGET``: hard-link STAGED to TARGET (fails if TARGET exists), then
#: remove STAGED either way, in one round trip; exits with ln's status. Values only as positional parameters.
LINK_SCRIPT = 'ln -- "$1" "$2"; rc=$?; rm -f -- "$1"; exit $rc'
#: ``sh -c REMOVE_IF_SCRIPT veza-lock FILE TEXT``: remove FILE only if it contains TEXT (exit 0); else exit 1.
REMOVE_IF_SCRIPT = 'grep -qF -- "$2" "$1" || exit 1; rm -f -- "$1"'


class FleetLock:
    NAME = "lock.json"

    def __init__(self, store: StateStore, clock: Clock | None = None, *, stale_after: float = 7200.0) -> None:
        self.store = store
        self.clock = clock or Clock()
        self.stale_after = stale_after
        self.held: LockInfo | None = None
        #: The staged copy of our lock file while it may exist (an interrupt can leave it behind).
        self._staged: str | None = None

    def current(self) -> LockInfo | None:
        data = self.store.read(self.NAME)
        if data is None:
            return None
        try:
            return LockInfo(**{k: data[k] for k in LockInfo.__dataclass_fields__})
        except (KeyError, TypeError):
            return LockInfo(holder="?", host="?", pid=0, started_at="", artifact_sha256="?" * 12,
                            command="(unreadable lock file)", token="")

    def is_stale(self, info: LockInfo) -> bool:
        return info.age_seconds(self.clock.now()) > self.stale_after

    def acquire(self, mine: LockInfo, *, wait: float = 0.0, poll: float = 2.0) -> None:
        start = self.clock.monotonic()
        while True:
            # NOTE: ``held`` and ``_staged`` are set *before* the I/O: a SIGINT that lands after the link
            # (or after the staging push) but before we learn of it must still let release() clean up.
            # release() only removes a lock whose token is ours, so a lost race removes nothing.
            self.held, self._staged = mine, self.store.staged_name()
            staged = self.store.write_staged(asdict(mine), self._staged)
            if self.store.link_exclusive(staged, self.NAME):
                self._staged = None
                log.info("lock.acquired", holder=mine.describe())
                return
            self.held = self._staged = None
            other = self.current()
            if other is None:
                continue  # released between our attempt and our read
            if holder_is_gone(other):
                log.warning("lock.takeover", reason="holder process is gone", holder=other.describe())
                self.store.remove(self.NAME)
                continue
            if self.clock.monotonic() - start >= wait:
                stale = " (STALE: older than LOCK_STALE_AFTER)" if self.is_stale(other) else ""
                raise LockHeld(
                    f"another deploy holds the fleet lock: {other.describe()}{stale}",
                    hint="wait for it, or if it is dead: veza-canary unlock --force",
                )
            self.clock.sleep(poll)

    def release(self) -> None:
        if self._staged is not None:
            try:
                self.store.remove(self._staged)
            except VezaError as exc:
                log.error("lock.release_failed", error=str(exc))
            self._staged = None
        if self.held is None:
            return
        try:
            # Only a lock file that is ours (our token) is removed: a lost race or a takeover removes nothing.
            if self.store.remove_if_contains(self.NAME, f'"token": "{self.held.token}"'):
                log.info("lock.released")
        except VezaError as exc:
            log.error("lock.release_failed", error=str(exc))
        finally:
            self.held = None

    def why_releasable(self, info: LockInfo) -> str | None:
        """Why someone else's lock may be released without ``--force`` (None: it looks live)."""
        if holder_is_gone(info):
            return "its holder process is gone"
        if self.is_stale(info):
            return "it is STALE (older than LOCK_STALE_AFTER)"
        return None

    def break_lock(self, *, force: bool = False, confirm: Callable[[str], bool] | None = None,
                   say: Callable[[str], None] = lambda _line: None) -> str:
        """Release a lock someone else holds (``veza-canary unlock``); returns the line saying what happened.

        A lock whose holder is gone or that is stale is released; a live-looking one only with ``force``.
        ``say`` is told who holds it before anything is decided; ``confirm`` (None: no question) may refuse.
        The lock is removed only if it still carries the token that was shown: a lock that changed hands
        meanwhile is never removed.
        """
        cur = self.current()
        if cur is None:
            return "lock: free (nothing to release)"
        why = self.why_releasable(cur)
        say(f"lock: held by {cur.describe()}")
        say(f"  command: {redact_text(cur.command)}")
        if why is None and not force:
            raise LockHeld(f"the lock looks live ({cur.describe()}); not released",
                           hint="make sure that deploy is dead, then: veza-canary unlock --force")
        if confirm is not None and not confirm(f"Release the fleet lock held by {cur.holder}@{cur.host}?"):
            raise PreflightError("not confirmed; the lock is still held")
        again = self.current()
        if again is None:
            return "lock: released meanwhile by its holder"
        if again.token != cur.token:
            raise LockHeld(f"the lock changed hands meanwhile ({again.describe()}); not released")
        self.store.remove(self.NAME)
        log.warning("lock.broken", holder=cur.describe(), reason=why or "forced")
        return f"lock: released ({why or 'forced'})"


def holder_is_gone(info: LockInfo) -> bool:
    """True when the lock's holder is a process of this host that no longer exists."""
    if info.host != socket.gethostname() or info.pid <= 0 or info.pid == os.getpid():
        return False
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class BlockedReleases:
    """Artifacts (by sha256) that failed a canary; a later deploy of the same bytes refuses without --force."""

    SUBDIR = "blocked"

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def block(self, sha256: str, reason: str, when: datetime) -> None:
        self.store.write(f"{self.SUBDIR}/{sha256}.json",
                         {"sha256": sha256, "reason": reason, "at": when.isoformat(timespec="seconds")})

    def get(self, sha256: str) -> dict[str, Any] | None:
        return self.store.read(f"{self.SUBDIR}/{sha256}.json")

    def check(self, sha256: str, *, force: bool) -> None:
        entry = self.get(sha256)
        if entry is None:
            return
        if force:
            log.warning("release.blocked.overridden", sha256=sha256[:12], reason=entry.get("reason"))
            return
        raise ReleaseBlocked(
            f"artifact {sha256[:12]} was rolled back on {entry.get('at', '?')}: {entry.get('reason', '?')}",
            hint="ship a fixed build, or re-deploy these exact bytes with --force",
        )

    def all(self) -> list[dict[str, Any]]:
        out = []
        for name in self.store.list(self.SUBDIR):
            if name.endswith(".json"):
                entry = self.store.read(f"{self.SUBDIR}/{name}")
                if entry:
                    out.append(entry)
        return out

    def unblock(self, sha256: str) -> None:
        self.store.remove(f"{self.SUBDIR}/{sha256}.json")
