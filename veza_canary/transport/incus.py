"""IncusTransport: a container, reached through ``incus`` on a host transport.

``run`` becomes ``incus exec CT -- argv`` on the host transport (local, or SSH
when ``INCUS_HOST`` is ``ssh://...``); ``push`` becomes ``incus -q file push`` to
a temporary name next to the target, then ``mv`` over it inside the container
(``incus file push`` truncates and rewrites the target in place: a reader could
see half a file, and over a running binary it fails with ``text file busy``).
A push to a stopped container therefore fails like ``run`` does (IncusError).

Incus's own failures (no such instance, instance stopped, daemon unreachable)
exit 1 with ``Error:`` on stderr, the same code as a command that exits 1; they
are told apart by stderr and raised as ``IncusError``.

When ``incus`` runs on this machine and its daemon's socket is usable, commands
without stdin and file pushes go through the REST API instead of a new ``incus``
client process each (``incus_api.py``: ~15 ms an exec instead of ~40 ms); same
argv, same exit codes, same errors. ``api=False`` keeps the CLI.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from pathlib import Path

from veza_canary.errors import IncusError
from veza_canary.log import get_logger
from veza_canary.transport.base import Result, Transport
from veza_canary.transport.incus_api import IncusAPI
from veza_canary.transport.local import LocalTransport

log = get_logger(__name__)

#: The one ``Error: ...`` line the incus client prints for its own failures (exit 1, no stdout).
#: Kept narrow on purpose: a command inside the container may print "Error: ..." and exit 1
#: too, and that must stay a plain CommandFailed. Messages as Incus 6.0 prints them, e.g.
#: ``Error: Failed to fetch instance "x" in project "default": Instance not found``.
_INCUS_ERROR_RE = re.compile(
    r"^Error: (?:"
    r"(?:Failed to fetch instance \"[^\"]*\"(?: in project \"[^\"]*\")?: )?"
    r"(?:Instance not found|Instance is not running|Instance is frozen|Project not found)"
    r"|Failed getting instance.*|Failed to retrieve PID of executing child process.*"
    r"|The remote \"[^\"]*\" doesn't exist"
    r"|Failed to connect to local daemon.*|The incus daemon doesn't appear to be started.*"
    r"|You don't have the needed permissions to talk to the incus daemon.*"
    r"|Get \"http://unix\.socket/.*|.*dial unix .*unix\.socket.*"
    r"|Forbidden.*|not authorized.*"
    r")$",
)


class IncusTransport(Transport):
    def __init__(self, container: str, host: Transport | None = None, *, incus: str = "incus",
                 api: IncusAPI | bool = True) -> None:
        """``api``: True = the local daemon's REST API when usable (see module doc), False = the CLI only."""
        self.container = container
        self.host = host or LocalTransport()
        self.incus = incus
        self.name = f"incus:{container}" if self.host.is_local else f"{self.host.name}/{container}"
        if isinstance(api, IncusAPI):
            self.api: IncusAPI | None = api
        elif api and type(self.host) is LocalTransport and incus == "incus" and ":" not in container:
            self.api = IncusAPI.local()
        else:
            self.api = None

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        if self.api is not None and input is None:
            code, out, err, timed_out = self.api.exec(self.container, argv, timeout)
            if timed_out:
                raise self._timed_out(argv, timeout, self.name)
            return code, out, err
        full = (self.incus, "exec", self.container, "--", *argv)
        r = self.host.run(full, input=input, timeout=timeout, check=False)
        return r.exit_code, r.stdout.encode(), r.stderr.encode()

    def _check_transport_error(self, result: Result) -> None:
        last = (result.stderr.strip().splitlines() or [""])[-1].strip()
        if result.exit_code == 127 and re.search(rf"(?:^|: ){re.escape(self.incus)}: (?:command )?not found$", last):
            # The host's shell (or LocalTransport) could not find incus itself; a command missing
            # inside the container is "Error: Command not found" instead.
            raise IncusError(f"[{self.container}] {self.incus} is not installed on {self.host.name}")
        if result.exit_code == 1 and not result.stdout and _INCUS_ERROR_RE.match(last):
            raise IncusError(f"[{self.container}] incus: {last.removeprefix('Error: ')}")

    def _incus_file(self, *args: str, timeout: float = 300.0) -> None:
        r = self.host.run((self.incus, "-q", "file", *args), timeout=timeout, check=False)
        if r.exit_code != 0:
            line = (r.stderr.strip().splitlines() or ["incus file failed"])[-1].strip()
            raise IncusError(f"[{self.container}] incus file {args[0]}: {line.removeprefix('Error: ')}")

    def _target(self, path: str) -> str:
        return f"{self.container}{path}" if path.startswith("/") else f"{self.container}/{path}"

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        directory, base = posixpath.split(remote_path)
        if not base:
            raise ValueError(f"push target {remote_path!r} names a directory, not a file")
        tmp = posixpath.join(directory, f".{base}.veza-tmp-{secrets.token_hex(6)}")
        self._push_in_place(local_path, tmp, mode, create_dirs)
        try:
            # Same directory, so mv is a rename(2): readers see the old file or the new one.
            self.run(("mv", "-f", "--", tmp, remote_path), timeout=60)
        except BaseException:
            # ``incus file delete`` works on a stopped container too (``file push`` does, exec does not).
            try:
                self._delete_file(tmp)
            except Exception:  # noqa: BLE001 - keep the original error
                log.warning("push cleanup failed", where=self.name, path=tmp)
            raise

    def _push_in_place(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        if not posixpath.basename(remote_path):
            raise ValueError(f"push target {remote_path!r} names a directory, not a file")
        if self.api is not None:
            self.api.push(self.container, local_path, remote_path, mode, create_dirs)
            return
        push = ("push", "--mode", f"{mode:04o}", "--uid", "0", "--gid", "0",
                *(("--create-dirs",) if create_dirs else ()))
        if self.host.is_local:
            self._incus_file(*push, str(local_path), self._target(remote_path))
            return
        # Over SSH: stage the file on the Incus host first, then push it into the container.
        staged = f"/tmp/veza-canary-{secrets.token_hex(8)}"
        self.host.push(local_path, staged, mode=0o600)
        try:
            self._incus_file(*push, staged, self._target(remote_path))
        finally:
            self._cleanup_host(staged)

    def _delete_file(self, path: str) -> None:
        if self.api is not None:
            try:
                self.api.delete_file(self.container, path)
            except IncusError as exc:
                log.warning("push cleanup failed", where=self.name, path=path, error=str(exc)[-200:])
            return
        r = self.host.run((self.incus, "-q", "file", "delete", self._target(path)), timeout=60, check=False)
        if not r.ok:
            log.warning("push cleanup failed", where=self.name, path=path, error=r.stderr.strip()[-200:])

    def _pull(self, remote_path: str, local_path: Path) -> None:
        source = self._target(remote_path)
        if self.host.is_local:
            self._incus_file("pull", source, str(local_path))
            return
        staged = f"/tmp/veza-canary-{secrets.token_hex(8)}"
        try:
            self._incus_file("pull", source, staged)
            self.host.pull(staged, local_path)
        finally:
            self._cleanup_host(staged)

    def _cleanup_host(self, staged: str) -> None:
        # Best effort: a failed cleanup must not hide the error that brought us here.
        try:
            self.host.run(("rm", "-f", "--", staged), check=False, timeout=30)
        except Exception:  # noqa: BLE001
            log.warning("staging cleanup failed", where=self.host.name, path=staged)

    def close(self) -> None:
        self.host.close()
