"""One backend node: its installed binary, atomic installs, restart, in-container health.

Every operation goes through a ``Transport`` (an ``IncusTransport`` to the
node's container in practice). Installs are atomic: the bytes land under a temp
name in ``INSTALL_DIR``, their sha256 is verified *on the node*, the mode is
set, and only then ``mv`` (a rename(2) in the same directory) puts them in
place. A half-written or corrupted binary is never at the path the service runs.

An install is three round trips: the sha256 of the installed binary (identical:
nothing to do), the push to the temp name, and one command on the node that
verifies the temp file's sha256, sets its mode and renames it
(``INSTALL_SCRIPT``: a constant ``sh`` script; the checksum and the paths are
its positional parameters, never part of its text).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from veza_canary.errors import CommandFailed, PushError, TransportError
from veza_canary.log import get_logger
from veza_canary.transport.base import Transport

log = get_logger(__name__)

TMP_PREFIX = ".veza-api.new-"
#: One line of ``sha256sum`` output: the digest, a space, a space or ``*`` (binary mode), the path.
_SHA_LINE_RE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$", re.M)

#: ``sh -c INSTALL_SCRIPT veza-install SHA256 TMP TARGET``, run on the node: verify, chmod, fsync (a rename
#: is only as durable as the data behind it), rename, in one round trip. A constant: the values reach it
#: only as positional parameters ($1..$3), which the shell never parses as code. Exit ``EXIT_CORRUPT``
#: when the sha256 differs (TMP is left for cleanup).
INSTALL_SCRIPT = """set -eu
got=$(sha256sum -- "$2")
got=${got%% *}
if [ "$got" != "$1" ]; then
  echo "veza-install: sha256 of $2 is $got, expected $1" >&2
  exit 3
fi
chmod 0755 -- "$2"
sync -- "$2"
mv -f -- "$2" "$3"
"""
EXIT_CORRUPT = 3


@dataclass(frozen=True, slots=True)
class HealthResult:
    ok: bool
    status: int | None
    latency: float
    body: str = ""
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"no answer ({self.error}) after {self.latency * 1000:.0f} ms"
        said = f"answered HTTP {self.status} in {self.latency * 1000:.0f} ms"
        body = " ".join(self.body.split())[:120]
        return said + (f" (body: {body})" if body and not self.ok else "")


# --- what the service runs, and the kept last-good copy (the node procedure's reads) -------------------

#: The tool's own copy of the binary the canary ran before a deploy (its automatic rollback target). Kept
#: beside the binary, never ``veza-api.previous``: that file is the operator's (the runbook's rule).
LAST_GOOD_NAME = ".veza-api.last-good"


class Node:
    def __init__(self, name: str, transport: Transport, *, install_dir: str, restart_argv: tuple[str, ...],
                 health_url: str, service: str | None = None) -> None:
        self.name = name
        self.service = service
        self.transport = transport
        self.install_dir = install_dir.rstrip("/")
        self.restart_argv = restart_argv
        self.health_url = health_url

    @property
    def binary_path(self) -> str:
        return f"{self.install_dir}/veza-api"

    @property
    def previous_path(self) -> str:
        return f"{self.install_dir}/veza-api.previous"

    # -- reading -------------------------------------------------------------------
    def sha256(self, path: str | None = None) -> str | None:
        """sha256 of a file on the node, or None when it does not exist."""
        path = path or self.binary_path
        return self.sha256s(path)[path]

    def sha256s(self, *paths: str) -> dict[str, str | None]:
        """sha256 of each of ``paths`` (None: it does not exist), in one round trip."""
        for attempt in range(1, 4):
            r = self.transport.run(("sha256sum", "--", *paths), timeout=60, check=False)
            found = {m.group(2): m.group(1) for m in _SHA_LINE_RE.finditer(r.stdout)}
            missing = {p for p in paths if f"{p}: No such file" in r.stderr}
            # Consistent: every path has a line or a "No such file", and the exit status says the same.
            if all(p in found or p in missing for p in paths) and (r.exit_code != 0) == bool(missing):
                return {p: found.get(p) for p in paths}
            if r.exit_code != 0 and r.stderr.strip():  # a file it could not read (not a missing one)
                raise CommandFailed(r.describe(), result=r)
            # A file that exists always gets a line: none, and no error said, is output lost on the way (incus
            # exec on Incus 6.0 drops it now and then). A read: safe to repeat.
            log.warning("node.sha256.incomplete_output", node=self.name, paths=list(paths), attempt=attempt)
        raise CommandFailed(f"[{self.name}] unexpected sha256sum output: {r.stdout[:80]!r}", result=r)

    # -- changing ------------------------------------------------------------------
    def install(self, local_path: Path, sha256: str) -> bool:
        """Install ``local_path`` (whose sha256 is known) atomically. False when already identical."""
        if self.sha256() == sha256:
            log.info("node.install.identical", node=self.name, sha256=sha256[:12])
            return False
        tmp = f"{self.install_dir}/{TMP_PREFIX}{secrets.token_hex(6)}"
        try:
            try:
                # Not atomic by itself (the temp name is ours alone): the rename below is the atomic step.
                self.transport.push(local_path, tmp, mode=0o755, create_dirs=True, atomic=False)
            except TransportError as exc:
                raise PushError(f"[{self.name}] push of {local_path.name} failed: {exc}") from exc
            self._verify_and_rename(tmp, sha256)
        except BaseException:
            self._remove_temps(tmp)
            raise
        log.info("node.install.done", node=self.name, sha256=sha256[:12])
        return True

    def _verify_and_rename(self, tmp: str, sha256: str) -> None:
        """On the node, in one command: sha256 of ``tmp`` must be ``sha256``; then chmod and rename into place."""
        r = self.transport.run(("sh", "-c", INSTALL_SCRIPT, "veza-install", sha256, tmp, self.binary_path),
                               timeout=120, check=False)
        if r.ok:
            return
        err = (r.stderr.strip().splitlines() or [f"exit {r.exit_code}"])[-1][:300]
        if r.exit_code == EXIT_CORRUPT:
            raise PushError(f"[{self.name}] pushed binary is corrupted: {err}; not installed")
        raise CommandFailed(f"[{self.name}] install of {tmp} into {self.binary_path} failed "
                            f"(exit {r.exit_code}): {err}", result=r)

    def restore_previous(self) -> str:
        """Copy ``veza-api.previous`` into place atomically (keeping .previous). Returns its sha256."""
        want = self.sha256(self.previous_path)
        if want is None:
            raise PushError(f"[{self.name}] {self.previous_path} does not exist")
        if self.sha256() == want:
            return want
        tmp = f"{self.install_dir}/{TMP_PREFIX}{secrets.token_hex(6)}"
        try:
            self.transport.run(("cp", "--", self.previous_path, tmp), timeout=120)
            self.transport.run(("chmod", "0755", "--", tmp), timeout=30)
            got = self.sha256(tmp)
            if got != want:
                raise PushError(f"[{self.name}] copy of veza-api.previous is corrupted; not installed")
            self._rename_into_place(tmp)
        except BaseException:
            self._remove_temps(tmp)
            raise
        return want

    def _rename_into_place(self, tmp: str) -> None:
        # mv within one directory is rename(2): the service sees the old or the new file, never a mix.
        self.transport.run(("mv", "-f", "--", tmp, self.binary_path), timeout=60)

    def _remove_temps(self, tmp: str) -> None:
        """Remove ``tmp`` and whatever the transport staged for it (``incus file push`` that fails half-way,
        e.g. on a full disk, leaves its partial file under its own name ``.<tmp>.veza-tmp-XXXX``)."""
        name = tmp.rsplit("/", 1)[-1]
        try:
            self.transport.run(("find", self.install_dir, "-maxdepth", "1", "-name", f"*{name}*", "-type", "f",
                                "-delete"), timeout=30, check=False)
        except Exception as exc:  # noqa: BLE001 - best-effort cleanup must not hide the real error
            log.warning("node.cleanup_failed", node=self.name, path=tmp, error=str(exc))

    def remove_stale_temps(self) -> None:
        """Delete temp files an earlier run left in INSTALL_DIR (ours and the transport's staging names).

        Only while holding the fleet lock: another deploy's push in flight uses the same names.
        """
        self.transport.run(("find", self.install_dir, "-maxdepth", "1", "-name", f"*{TMP_PREFIX}*",
                            "-type", "f", "-delete"), timeout=60, check=False)

    def restart(self) -> None:
        log.info("node.restart", node=self.name, argv=list(self.restart_argv))
        r = self.transport.run(self.restart_argv, timeout=120, check=False)
        if r.ok:
            return
        # A binary that never starts crash-loops the unit into systemd's start limit (StartLimitBurst), and
        # systemd then refuses every start -- including the one that puts the last-known-good binary back.
        # This restart is an explicit operator action: clear the limit and try once more.
        if self.service and tuple(self.restart_argv) == ("systemctl", "restart", self.service):
            log.warning("node.restart.reset_failed", node=self.name, error=r.describe())
            self.transport.run(("systemctl", "reset-failed", "--", self.service), timeout=30, check=False)
            r = self.transport.run(self.restart_argv, timeout=120, check=False)
            if r.ok:
                return
        raise CommandFailed(r.describe(), result=r)

    def service_restarts(self) -> int | None:
        """systemd's automatic-restart counter of the service (NRestarts), or None when unknown.

        It rises when the service crashes and systemd restarts it, which a health
        check between two crashes never sees.
        """
        if not self.service:
            return None
        try:
            r = self.transport.run(("systemctl", "show", "-p", "NRestarts", "--value", self.service),
                                   timeout=30, check=False)
        except TransportError:
            return None
        value = r.stdout.strip()
        return int(value) if r.exit_code == 0 and value.isdigit() else None

    # -- health --------------------------------------------------------------------
    def health(self, *, timeout: float = 3.0) -> HealthResult:
        """One health request from inside the node (curl), with status and latency."""
        start = time.monotonic()
        try:
            r = self.transport.run(
                ("curl", "-sS", "--max-time", f"{timeout:g}", "-o", "-", "-w", "\n%{http_code}", self.health_url),
                timeout=timeout + 10, check=False,
            )
        except TransportError as exc:
            return HealthResult(False, None, time.monotonic() - start, error=str(exc))
        latency = time.monotonic() - start
        body, _, code = r.stdout.rpartition("\n")
        status = int(code) if code.strip().isdigit() and code.strip() != "000" else None
        if status is None:
            err = (r.stderr.strip().splitlines() or [f"curl exit {r.exit_code}"])[-1]
            return HealthResult(False, None, latency, error=err[:200])
        return HealthResult(status == 200, status, latency, body=body[:2000])

    def service_state(self) -> ServiceState | None:
        """systemd's view of the service in one round trip (``systemctl show``), or None when unknown.

        Cheap enough to ask every few seconds: the SLI watch and the node-health wait use it to end at
        once on a dead canary (failed, restarting, or restarted since) instead of at their deadline.
        """
        if not self.service:
            return None
        try:
            r = self.transport.run(("systemctl", "show", "-p", "ActiveState", "-p", "SubState", "-p", "NRestarts",
                                    "-p", "MainPID", "--", self.service), timeout=30, check=False)
        except TransportError:
            return None
        if r.exit_code != 0:
            return None
        return ServiceState.parse(r.stdout)

    # -- what the service runs, and copies on the node (the node procedure's reads) -----------------
    @property
    def last_good_path(self) -> str:
        return f"{self.install_dir}/{LAST_GOOD_NAME}"

    def runs_installed(self) -> bool:
        """Whether the service runs the installed binary: active, and its main process started after the
        binary file last changed. A run killed between the rename and the restart leaves False here."""
        state = self.service_state()
        if state is None or not state.running:
            return False
        r = self.transport.run(("stat", "-c", "%.9Z", "--", self.binary_path, f"/proc/{state.pid}"),
                               timeout=30, check=False)
        times = r.stdout.split()
        if r.exit_code != 0 or len(times) != 2:
            return False
        try:
            changed, started = float(times[0]), float(times[1])
        except ValueError:
            return False
        return started >= changed

    def copy_verified(self, src: str, dst: str, sha256: str) -> None:
        """Copy ``src`` to ``dst`` on the node through a temp name: sha256 verified, mode 0755, renamed."""
        tmp = f"{self.install_dir}/{TMP_PREFIX}{secrets.token_hex(6)}"
        try:
            self.transport.run(("cp", "--", src, tmp), timeout=120)
            r = self.transport.run(("sh", "-c", INSTALL_SCRIPT, "veza-install", sha256, tmp, dst),
                                   timeout=120, check=False)
            if not r.ok:
                err = (r.stderr.strip().splitlines() or [f"exit {r.exit_code}"])[-1][:300]
                raise PushError(f"[{self.name}] copy of {src} to {dst} failed: {err}")
        except BaseException:
            self.transport.run(("rm", "-f", "--", tmp), timeout=30, check=False)
            raise


@dataclass(frozen=True, slots=True)
class ServiceState:
    """ActiveState, SubState, NRestarts and MainPID of a systemd unit."""

    active: str
    sub: str
    restarts: int | None = None
    pid: int | None = None

    @classmethod
    def parse(cls, text: str) -> ServiceState | None:
        """From ``systemctl show -p ...`` output (``Key=value`` lines, in any order)."""
        kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if "ActiveState" not in kv:
            return None

        def num(k: str) -> int | None:
            v = kv.get(k, "").strip()
            return int(v) if v.isdigit() else None

        return cls(kv["ActiveState"].strip(), kv.get("SubState", "").strip(), num("NRestarts"), num("MainPID"))

    @property
    def running(self) -> bool:
        """Active and running with a main process (the only state in which it serves its binary)."""
        return self.active == "active" and self.sub == "running" and bool(self.pid)

    def dead(self, before: ServiceState | None = None) -> str | None:
        """Why the service is dead or dying now (``before``: the state right after its restart), or None."""
        if self.active == "failed":
            return f"systemd reports the unit failed ({self.sub or 'failed'})"
        if self.sub == "auto-restart":
            return "systemd is restarting the unit after a crash (auto-restart)"
        if self.active in ("inactive", "deactivating"):
            return f"the unit is {self.active} ({self.sub or '-'})"
        if before is not None and before.restarts is not None and self.restarts is not None \
                and self.restarts > before.restarts:
            return f"systemd restarted the unit {self.restarts - before.restarts} time(s) (NRestarts " \
                   f"{before.restarts} -> {self.restarts})"
        return None
