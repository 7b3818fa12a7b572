"""IncusTransport: a container, reached through ``incus`` on a host transport.

``run`` becomes ``incus exec CT -- argv`` on the host transport (local, or SSH
when ``INCUS_HOST`` is ``ssh://...``); ``push`` becomes ``incus -q file push``.
Incus's own failures (no such instance, instance stopped, daemon unreachable)
exit 1 with ``Error:`` on stderr, the same code as a command that exits 1; they
are told apart by stderr and raised as ``IncusError``.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from veza_canary.errors import IncusError
from veza_canary.transport.base import Result, Transport
from veza_canary.transport.local import LocalTransport

#: stderr lines that only Incus itself prints (checked on exit code 1, last stderr line).
_INCUS_ERROR_RE = re.compile(
    r"^Error: (Instance not found|Instance is not running|Failed to connect to local daemon|"
    r"The remote \".*\" doesn't exist|not found|Failed getting instance|"
    r"Failed to retrieve PID of executing child process|.*unix\.socket.*|Forbidden|"
    r"Instance is frozen|.*No such file or directory.*incus.*)",
    re.IGNORECASE,
)


class IncusTransport(Transport):
    def __init__(self, container: str, host: Transport | None = None, *, incus: str = "incus") -> None:
        self.container = container
        self.host = host or LocalTransport()
        self.incus = incus
        self.name = f"incus:{container}" if isinstance(self.host, LocalTransport) else f"{self.host.name}/{container}"

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        full = (self.incus, "exec", self.container, "--", *argv)
        r = self.host.run(full, input=input, timeout=timeout, check=False)
        return r.exit_code, r.stdout.encode(), r.stderr.encode()

    def _check_transport_error(self, result: Result) -> None:
        if result.exit_code != 1 or result.stdout:
            return
        lines = result.stderr.strip().splitlines()
        if lines and _INCUS_ERROR_RE.match(lines[-1].strip()):
            raise IncusError(f"[{self.container}] incus: {lines[-1].strip()[len('Error: '):]}")

    def _incus_file(self, *args: str, timeout: float = 300.0) -> None:
        r = self.host.run((self.incus, "-q", "file", *args), timeout=timeout, check=False)
        if r.exit_code != 0:
            line = (r.stderr.strip().splitlines() or ["incus file failed"])[-1].strip()
            raise IncusError(f"[{self.container}] incus file {args[0]}: {line.removeprefix('Error: ')}")

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        dirs = ("--create-dirs",) if create_dirs else ()
        target = f"{self.container}{remote_path}" if remote_path.startswith("/") else f"{self.container}/{remote_path}"
        if isinstance(self.host, LocalTransport):
            self._incus_file("push", "--mode", f"{mode:04o}", "--uid", "0", "--gid", "0", *dirs,
                             str(local_path), target)
            return
        # Over SSH: stage the file on the Incus host first, then push it into the container.
        staged = f"/tmp/veza-canary-{secrets.token_hex(8)}"
        self.host.push(local_path, staged, mode=0o600)
        try:
            self._incus_file("push", "--mode", f"{mode:04o}", "--uid", "0", "--gid", "0", *dirs, staged, target)
        finally:
            self.host.run(("rm", "-f", "--", staged), check=False, timeout=30)

    def _pull(self, remote_path: str, local_path: Path) -> None:
        source = f"{self.container}{remote_path}"
        if isinstance(self.host, LocalTransport):
            self._incus_file("pull", source, str(local_path))
            return
        staged = f"/tmp/veza-canary-{secrets.token_hex(8)}"
        try:
            self._incus_file("pull", source, staged)
            self.host.pull(staged, local_path)
        finally:
            self.host.run(("rm", "-f", "--", staged), check=False, timeout=30)

    def close(self) -> None:
        self.host.close()
