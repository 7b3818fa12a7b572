"""One backend node: its installed binary, atomic installs, restart, in-container health.

Every operation goes through a ``Transport`` (an ``IncusTransport`` to the
node's container in practice). Installs are atomic: the bytes land under a temp
name in ``INSTALL_DIR``, their sha256 is verified *on the node*, the mode is
set, and only then ``mv`` (a rename(2) in the same directory) puts them in
place. A half-written or corrupted binary is never at the path the service runs.
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
_SHA_RE = re.compile(r"^([0-9a-f]{64})\s")


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
        return f"HTTP {self.status} in {self.latency * 1000:.0f} ms"


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
        for attempt in range(1, 4):
            r = self.transport.run(("sha256sum", "--", path), timeout=60, check=False)
            # sha256sum that succeeds always prints a line: empty stdout with exit 0 is output lost on the way
            # (incus exec on Incus 6.0 drops it now and then). A read: safe to repeat.
            if r.exit_code != 0 or r.stdout.strip():
                break
            log.warning("node.sha256.empty_output", node=self.name, path=path, attempt=attempt)
        if r.exit_code != 0:
            if "No such file" in r.stderr:
                return None
            raise CommandFailed(r.describe(), result=r)
        m = _SHA_RE.match(r.stdout)
        if not m:
            raise CommandFailed(f"[{self.name}] unexpected sha256sum output: {r.stdout[:80]!r}")
        return m.group(1)

    # -- changing ------------------------------------------------------------------
    def install(self, local_path: Path, sha256: str) -> bool:
        """Install ``local_path`` (whose sha256 is known) atomically. False when already identical."""
        if self.sha256() == sha256:
            log.info("node.install.identical", node=self.name, sha256=sha256[:12])
            return False
        tmp = f"{self.install_dir}/{TMP_PREFIX}{secrets.token_hex(6)}"
        try:
            try:
                self.transport.push(local_path, tmp, mode=0o755, create_dirs=True)
            except TransportError as exc:
                raise PushError(f"[{self.name}] push of {local_path.name} failed: {exc}") from exc
            got = self.sha256(tmp)
            if got != sha256:
                raise PushError(f"[{self.name}] pushed binary is corrupted: sha256 {str(got)[:12]} != "
                                f"{sha256[:12]}; not installed")
            self._rename_into_place(tmp)
        except BaseException:
            self._remove_temps(tmp)
            raise
        log.info("node.install.done", node=self.name, sha256=sha256[:12])
        return True

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
