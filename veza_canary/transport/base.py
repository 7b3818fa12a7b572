"""The transport seam: run an argv somewhere, push or pull a file.

Modelled on invoke's ``Runner``: the base class owns what every transport
shares (argv logging with secrets redacted, timeouts, building the ``Result``,
raising ``CommandFailed``/``CommandTimedOut``); subclasses implement three
primitives (``_run``, ``_push``, ``_pull``). Commands are argv lists, never shell
strings built from input.

Every transport reports exit codes the way a shell does, so callers branch on
one convention: 127 command not found, 126 not executable, 128+N killed by
signal N (SIGKILL is 137). ``push`` is atomic on every transport: the new file
gets its mode under a temporary name in the target's directory and is renamed
over the target (``push(atomic=False)`` lets a caller that renames the file
itself skip that step).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from veza_canary.errors import CommandFailed, CommandTimedOut
from veza_canary.log import get_logger, redact_text

log = get_logger(__name__)

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Result:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    where: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        """One line: where, argv, exit code and the last stderr line."""
        err = (self.stderr.strip().splitlines() or [""])[-1][:300]
        cmd = redact_text(shlex.join(self.argv))
        where = f"[{self.where}] " if self.where else ""
        return f"{where}{cmd!s} exited {self.exit_code}" + (f": {err}" if err else "")


class Transport:
    """Base class of every transport. Subclasses implement ``_run``, ``_push``, ``_pull``."""

    #: Short description for logs, e.g. ``local`` or ``ssh://deploy@host:22``.
    name: str = "transport"
    #: True when paths given to ``push``/``pull``/``run`` are on this very machine
    #: (IncusTransport then needs no staging copy on the Incus host).
    is_local: bool = False

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> Result:
        """Run ``argv``; raise ``CommandFailed`` on non-zero exit when ``check``."""
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("empty argv")
        data = input.encode() if isinstance(input, str) else input
        start = time.monotonic()
        # NOTE: argv is redacted here as well as by the log processor: a library user
        # who never configured structlog must not get secrets printed either.
        log.debug("run", where=self.name, argv=_redacted(argv))
        code, out, err = self._run(argv, data, timeout)
        result = Result(
            argv=argv,
            exit_code=code,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            duration=time.monotonic() - start,
            where=self.name,
        )
        log.debug("ran", where=self.name, argv=_redacted(argv), exit_code=code, duration=round(result.duration, 4))
        self._check_transport_error(result)
        if check and not result.ok:
            raise CommandFailed(result.describe(), result=result)
        return result

    def push(self, local_path: str | Path, remote_path: str, *, mode: int = 0o644,
             create_dirs: bool = False, atomic: bool = True) -> None:
        """Copy a local file to ``remote_path`` with ``mode``.

        ``atomic=False`` is for a caller that pushes to a fresh name of its own and renames the file
        into place itself (``Node.install``): the transport may then write it in place, sparing the
        round trip of its own rename. A reader of ``remote_path`` may see a partial file meanwhile.
        """
        log.debug("push", where=self.name, src=str(local_path), dst=remote_path, mode=oct(mode), atomic=atomic)
        start = time.monotonic()
        if atomic:
            self._push(Path(local_path), remote_path, mode, create_dirs)
        else:
            self._push_in_place(Path(local_path), remote_path, mode, create_dirs)
        log.debug("pushed", where=self.name, dst=remote_path, duration=round(time.monotonic() - start, 4))

    def pull(self, remote_path: str, local_path: str | Path) -> None:
        """Copy ``remote_path`` to a local file."""
        log.debug("pull", where=self.name, src=remote_path, dst=str(local_path))
        self._pull(remote_path, Path(local_path))

    def close(self) -> None:
        """Release connections. Idempotent."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- primitives -------------------------------------------------------------
    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        raise NotImplementedError

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        raise NotImplementedError

    def _pull(self, remote_path: str, local_path: Path) -> None:
        raise NotImplementedError

    def _push_in_place(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        """``push(atomic=False)``; by default the atomic ``_push`` (correct everywhere, maybe slower)."""
        self._push(local_path, remote_path, mode, create_dirs)

    def _check_transport_error(self, result: Result) -> None:
        """Hook: raise a transport-level error (e.g. IncusError) hidden in ``result``."""

    @staticmethod
    def _timed_out(argv: Sequence[str], timeout: float | None, where: str) -> CommandTimedOut:
        limit = f"{timeout:g}s" if timeout is not None else "its deadline"
        return CommandTimedOut(f"[{where}] {redact_text(shlex.join(argv))} did not finish within {limit}")


def _redacted(argv: Sequence[str]) -> list[str]:
    return [redact_text(a) for a in argv]
