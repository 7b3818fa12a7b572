"""Forked workers that analyse files and stream the results back over a pipe.

Why not ``concurrent.futures``: its pool feeds tasks and collects results with a
thread in *this* process, which gets the GIL only between this process's own work,
so workers sat idle waiting for tasks (measured: a worker's share took 30% longer).

Here each worker is forked early -- before the files are even read, so importing
sqlglot (~0.1 s) overlaps reading, hashing and the cache lookup -- and then waits
for its assignment: a list of file indexes. It loads each file itself (``load`` is
inherited through the fork), analyses it, and a writer thread in the *worker*
pushes ``(content key, pickled result)`` into the pipe, blocking on a full pipe
without stalling the parsing. This process reads results only when it needs them,
in order, and checks each key against its own: a file that changed between the two
reads, or anything the worker could not analyse, comes back empty and is analysed
here instead. So does the rest of a worker's list if it dies (``WorkerFailed``).
Closing a worker early ends it by its PID, which only we know, and reaps it.
"""

from __future__ import annotations

import os
import pickle  # noqa: S403 - between our own processes
import signal
import struct
from array import array
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("<HI")  # key length, result length
_COUNT = struct.Struct("<Q")  # number of indexes assigned
#: Workers of this process whose pipes are open (a later fork must close them in its child).
_OPEN: set[ForkedAnalysis] = set()


class WorkerFailed(RuntimeError):
    """The worker ended before sending every result."""


class ForkedAnalysis:
    """One forked worker: ``assign`` it file indexes, then read ``result(k)`` for the k-th."""

    def __init__(self, load: Callable[[int], bytes], dialect: str) -> None:
        self.count = 0
        self._results: list[tuple[str, bytes]] = []
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's code
            code = 1
            try:
                os.close(task_w)
                os.close(res_r)
                for other in list(_OPEN):  # siblings' pipe ends must not stay open in here
                    other._forget_in_child()
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # the terminal's Ctrl-C ends it outright
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _work(task_r, res_w, load, dialect)
                code = 0
            finally:
                os._exit(code)
        os.close(task_r)
        os.close(res_w)
        self.pid: int | None = pid
        self._task: int | None = task_w
        self._in = os.fdopen(res_r, "rb")
        _OPEN.add(self)

    def _forget_in_child(self) -> None:
        if self._task is not None:
            os.close(self._task)
        os.close(self._in.fileno())

    def assign(self, indexes: list[int]) -> None:
        """Send the worker its files (once); an empty list lets it exit."""
        if self._task is None:
            raise RuntimeError("already assigned")
        self.count = len(indexes)
        data = memoryview(_COUNT.pack(len(indexes)) + array("q", indexes).tobytes())
        try:
            while data:
                data = data[os.write(self._task, data):]
        except OSError:
            pass  # the worker is gone: result() will say so
        finally:
            os.close(self._task)
            self._task = None

    def result(self, k: int) -> tuple[str, bytes]:
        """``(content key, pickled AnalyzedFile)`` of the k-th assigned file; ``("", b"")`` if it failed there."""
        while len(self._results) <= k:
            head = self._in.read(_HEADER.size)
            if len(head) < _HEADER.size:
                got = len(self._results)
                self.close()
                raise WorkerFailed(f"analysis worker ended after {got} of {self.count} files")
            nk, nb = _HEADER.unpack(head)
            body = self._in.read(nk + nb)
            if len(body) < nk + nb:
                self.close()
                raise WorkerFailed("analysis worker's result was cut short")
            self._results.append((body[:nk].decode("ascii"), body[nk:]))
        return self._results[k]

    def close(self) -> None:
        """Stop; end the worker if it may still be running, and reap it."""
        _OPEN.discard(self)
        if self._task is not None:
            os.close(self._task)
            self._task = None
        if not self._in.closed:
            self._in.close()
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            if len(self._results) < self.count or self.count == 0:
                os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)

    def __enter__(self) -> ForkedAnalysis:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n and (chunk := os.read(fd, min(n - got, 1 << 16))):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_assignment(fd: int) -> array[int]:
    """The indexes the parent sent; empty if it closed the pipe without sending (nothing to do)."""
    indexes = array("q")
    head = _read_exactly(fd, _COUNT.size)
    if len(head) == _COUNT.size:
        (n,) = _COUNT.unpack(head)
        indexes.frombytes(_read_exactly(fd, n * indexes.itemsize))
    os.close(fd)
    return indexes


def _work(task_fd: int, out_fd: int, load: Callable[[int], bytes], dialect: str) -> None:
    import queue
    import threading

    from veza_canary.migrations.analyze import analyze_text  # the warm-up, while the parent reads files
    from veza_canary.migrations.cache import cache_key, sqlglot_version
    from veza_canary.migrations.changes import ANALYZER_VERSION
    from veza_canary.migrations.engine import gc_tuned

    version = sqlglot_version()
    indexes = _read_assignment(task_fd)
    if not indexes:
        return
    out = os.fdopen(out_fd, "wb")
    q: queue.SimpleQueue[tuple[bytes, bytes] | None] = queue.SimpleQueue()
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            while (item := q.get()) is not None:
                key, blob = item
                out.write(_HEADER.pack(len(key), len(blob)))
                out.write(key)
                out.write(blob)
                if q.empty():  # caught up: hand over what is buffered
                    out.flush()
            out.flush()
        except BaseException as exc:  # noqa: BLE001 - the reader went away: stop quietly
            failed.append(exc)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    with gc_tuned():
        for i in indexes:
            if failed:
                break
            key, blob = b"", b""
            try:
                data = load(i)
                key = cache_key(data, dialect, ANALYZER_VERSION, version).encode("ascii")
                blob = pickle.dumps(analyze_text(data.decode("utf-8"), dialect), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001, S110 - the parent analyses this file itself
                key, blob = b"", b""
            q.put((key, blob))
    q.put(None)
    t.join()
    if failed:
        raise failed[0]
