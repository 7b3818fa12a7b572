"""The Incus REST API on the local unix socket: ``exec`` and file pushes without a client process each.

Measured on the lab (Incus 6.0, 2 vCPUs): ``incus exec CT -- true`` costs ~40 ms, ~11 ms of it
starting the ``incus`` client; the same exec through the API costs ~15 ms, and a file push
~8 ms against ~29 ms (docs/benchmarks.md). ``IncusTransport`` uses this when ``incus`` runs on
this very machine and the daemon's socket is usable, and the ``incus`` CLI otherwise (over
SSH, a remote, another project, stdin to feed).

An exec is ``record-output`` (no websocket): the daemon writes stdout and stderr to log
files that are read, then deleted by a worker thread while the next command runs (two
DELETEs cost ~7 ms, a third of an exec; the worker is joined when the process exits). Such an exec cannot be cancelled through the API, so a
command with a deadline runs under coreutils ``timeout -k 5 T`` on the instance, which kills
it there; exit 124/137 past the deadline is reported as the transport's timeout.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx

from veza_canary.errors import IncusError
from veza_canary.log import get_logger

log = get_logger(__name__)

DEFAULT_SOCKET = "/var/lib/incus/unix.socket"
#: Seconds ``timeout`` waits after its TERM before it sends KILL.
KILL_AFTER = 5
EXIT_TIMED_OUT = 124  # coreutils timeout, TERM sufficed
EXIT_KILLED = 137  # ... KILL needed


def socket_path() -> str:
    """The socket the ``incus`` CLI would use for the local daemon."""
    if os.environ.get("INCUS_SOCKET"):
        return os.environ["INCUS_SOCKET"]
    return str(Path(os.environ.get("INCUS_DIR") or "/var/lib/incus") / "unix.socket")


def _cli_uses_another_project() -> bool:
    """True when the CLI's config names a project other than "default" (the API would default to it)."""
    conf = Path(os.environ.get("INCUS_CONF") or Path.home() / ".config" / "incus") / "config.yml"
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError:
        return False
    return bool(re.search(r"^\s*project:\s*(?!default\s*$)\S", text, re.M))


class IncusAPI:
    """Exec and file operations on instances through the daemon's REST API (one ``httpx.Client``)."""

    def __init__(self, client: httpx.Client, cleanup_client: httpx.Client | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        #: The worker's own client: a connection is never shared between two threads.
        self._cleanup_client = cleanup_client or client
        self._cleanup: ThreadPoolExecutor | None = None

    @classmethod
    def local(cls) -> IncusAPI | None:
        """The API of the local daemon, or None when the CLI is the safer way (no usable socket, a project)."""
        if os.environ.get("VEZA_CANARY_INCUS_CLI") == "1":  # the CLI only (benchmarks compare the two)
            return None
        path = socket_path()
        if not os.access(path, os.R_OK | os.W_OK) or _cli_uses_another_project():
            return None
        api = _LOCAL.get(path)
        if api is None:
            # One client per socket for the process: the connection is reused by every container's transport.
            def client() -> httpx.Client:
                return httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://incus",
                                    timeout=httpx.Timeout(30.0))

            api = _LOCAL[path] = cls(client(), client())
        return api

    # -- exec --------------------------------------------------------------------------
    def exec(self, container: str, argv: tuple[str, ...], timeout: float | None) -> tuple[int, bytes, bytes, bool]:
        """Run ``argv`` in ``container``: (exit code, stdout, stderr, timed out)."""
        command = list(argv) if timeout is None else ["timeout", "-k", str(KILL_AFTER), f"{timeout:g}", *argv]
        op = self._request(container, "POST", f"/1.0/instances/{_q(container)}/exec", json={
            "command": command, "wait-for-websocket": False, "interactive": False, "record-output": True,
        })
        start = self.clock()
        wait = None if timeout is None else timeout + KILL_AFTER + 10
        meta = self._wait(container, op.get("operation") or "", wait)
        outputs = meta.get("output") or {}
        try:
            out = self._log(container, outputs.get("1"))
            err = meta.get("stderr") or self._log(container, outputs.get("2"))
        finally:
            self._delete_later(list(outputs.values()))
        code = int(meta.get("return", -1))
        timed_out = (timeout is not None and code in (EXIT_TIMED_OUT, EXIT_KILLED)
                     and self.clock() - start >= timeout)
        return code, out, err, timed_out

    def _wait(self, container: str, operation: str, timeout: float | None) -> dict:
        if not operation.startswith("/1.0/operations/"):
            raise IncusError(f"[{container}] incus: unexpected exec answer (operation {operation!r})")
        params = {"timeout": str(int(timeout) if timeout is not None else -1)}
        try:
            r = self.client.get(f"{operation}/wait", params=params,
                                timeout=httpx.Timeout(None if timeout is None else timeout + 5, connect=10))
        except httpx.TimeoutException:
            raise IncusError(f"[{container}] incus: no answer from the daemon for the exec") from None
        except httpx.HTTPError as exc:
            raise IncusError(f"[{container}] incus: daemon unreachable: {exc}") from exc
        body = _json(r)
        md = body.get("metadata") or {}
        if body.get("error_code") or r.status_code >= 400 or (isinstance(md, dict) and md.get("err")):
            msg = body.get("error") or (md.get("err") if isinstance(md, dict) else "") or f"HTTP {r.status_code}"
            if msg == "Command not found":
                # As ``incus exec`` reports it: exit 127, the command is missing inside the container.
                return {"return": 127, "output": {}, "stderr": b"Error: Command not found\n"}
            raise IncusError(f"[{container}] incus: {msg}")
        inner = md.get("metadata") if isinstance(md, dict) else None
        if not isinstance(inner, dict) or "return" not in inner:
            raise IncusError(f"[{container}] incus: exec ended without an exit status ({md.get('status', '?')})")
        return inner

    def _log(self, container: str, url: str | None) -> bytes:
        if not url:
            return b""
        try:
            r = self.client.get(url)
        except httpx.HTTPError as exc:
            raise IncusError(f"[{container}] incus: reading the exec output failed: {exc}") from exc
        if r.status_code >= 400:
            raise IncusError(f"[{container}] incus: reading the exec output: HTTP {r.status_code}")
        return r.content

    def instance_pid(self, container: str) -> int | None:
        """The host PID of the running instance's init, or None (stopped, frozen, a VM, unknown)."""
        try:
            r = self.client.get(f"/1.0/instances/{_q(container)}/state")
        except httpx.HTTPError:
            return None
        md = _json(r).get("metadata") if r.status_code < 400 else None
        if not isinstance(md, dict) or md.get("status") != "Running":
            return None
        pid = md.get("pid")
        return pid if isinstance(pid, int) and pid > 1 else None

    # -- files -------------------------------------------------------------------------
    def push(self, container: str, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        """Write ``local_path`` to ``remote_path`` (in place; root-owned, ``mode``)."""
        for attempt in (1, 2):
            with open(local_path, "rb") as f:
                r = self._send_file(container, remote_path, f.read(), {
                    "X-Incus-uid": "0", "X-Incus-gid": "0", "X-Incus-mode": f"{mode:04o}",
                    "X-Incus-type": "file", "X-Incus-write": "overwrite"})
            if r.status_code < 400:
                return
            if r.status_code == 404 and create_dirs and attempt == 1 and self._instance_exists(container):
                self._mkdirs(container, remote_path.rsplit("/", 1)[0])
                continue
            raise IncusError(f"[{container}] incus file push: {_error(r)}")

    def delete_file(self, container: str, path: str) -> None:
        r = self._call(container, "DELETE", f"/1.0/instances/{_q(container)}/files", params={"path": path})
        if r.status_code >= 400:
            raise IncusError(f"[{container}] incus file delete: {_error(r)}")

    def _mkdirs(self, container: str, directory: str) -> None:
        parts = [p for p in directory.split("/") if p]
        for i in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:i])
            # An existing directory answers an error: ignored; a real failure shows in the push that follows.
            self._send_file(container, path, b"", {"X-Incus-uid": "0", "X-Incus-gid": "0", "X-Incus-mode": "0755",
                                                   "X-Incus-type": "directory"})

    def _instance_exists(self, container: str) -> bool:
        return self._call(container, "GET", f"/1.0/instances/{_q(container)}").status_code < 400

    def _send_file(self, container: str, path: str, data: bytes, headers: dict[str, str]) -> httpx.Response:
        return self._call(container, "POST", f"/1.0/instances/{_q(container)}/files", params={"path": path},
                          content=data, headers={"Content-Type": "application/octet-stream", **headers},
                          timeout=300.0)

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, container: str, method: str, url: str, **kw: object) -> httpx.Response:
        try:
            return self.client.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise IncusError(f"[{container}] incus: daemon unreachable: {exc}") from exc

    def _request(self, container: str, method: str, url: str, **kw: object) -> dict:
        r = self._call(container, method, url, **kw)
        if r.status_code >= 400:
            raise IncusError(f"[{container}] incus: {_error(r)}")
        return _json(r)

    def _delete_later(self, urls: list[str]) -> None:
        if not urls:
            return
        if self._cleanup is None:
            self._cleanup = ThreadPoolExecutor(1, thread_name_prefix="incus-exec-output")
        self._cleanup.submit(self._delete_quietly, urls)

    def _delete_quietly(self, urls: list[str]) -> None:
        for url in urls:
            try:
                self._cleanup_client.delete(url)
            except httpx.HTTPError:
                log.warning("incus.exec_output_not_deleted", url=url)

    def flush(self) -> None:
        """Wait until every exec output log is deleted."""
        if self._cleanup is not None:
            self._cleanup.shutdown(wait=True)
            self._cleanup = None


_LOCAL: dict[str, IncusAPI] = {}


def _q(name: str) -> str:
    return quote(name, safe="")


def _json(r: httpx.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {"error": f"HTTP {r.status_code}: {r.text[:200]}", "error_code": r.status_code}
    return body if isinstance(body, dict) else {}


def _error(r: httpx.Response) -> str:
    return str(_json(r).get("error") or f"HTTP {r.status_code}")
