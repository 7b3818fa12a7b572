"""A forked worker that analyses a list of files and streams the results back over a pipe.

Why not ``concurrent.futures``: its pool feeds tasks and collects results with a
thread in *this* process, which gets the GIL only between this process's own parsing
slices, so the worker sat idle waiting for work and results queued up (measured:
the worker's share took 30% longer). Here the worker is forked once, after sqlglot
is imported (it starts warm and inherits the file contents instead of receiving them
pickled), analyses its files in order, and a writer thread in the *worker* pushes
each pickled result into the pipe -- blocking on a full pipe without stalling the
parsing. This process reads results only when it needs them, in order.

If the worker dies or sends garbage, ``WorkerFailed`` is raised and the caller
analyses the rest itself; closing a ``ForkedAnalysis`` early ends the worker (by
its PID, which only we know) and reaps it.
"""

from __future__ import annotations

import os
import pickle  # noqa: S403 - between our own processes
import signal
import struct
from collections.abc import Sequence
from typing import Any

_HEADER = struct.Struct("<I")


class WorkerFailed(RuntimeError):
    """The worker ended before sending every result."""


class ForkedAnalysis:
    """Analyse ``datas[i]`` for each of ``indexes`` in a forked process; ``blob(k)`` is the k-th result, pickled."""

    def __init__(self, datas: Sequence[bytes], indexes: Sequence[int], dialect: str) -> None:
        self.count = len(indexes)
        self._blobs: list[bytes] = []
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's code
            code = 1
            try:
                os.close(r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # the terminal's Ctrl-C ends it outright
                _work(w, datas, indexes, dialect)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        self.pid: int | None = pid
        self._in = os.fdopen(r, "rb")

    def blob(self, k: int) -> bytes:
        """The pickled result for ``indexes[k]`` (reading the pipe up to it)."""
        while len(self._blobs) <= k:
            head = self._in.read(_HEADER.size)
            if len(head) < _HEADER.size:
                self.close()
                raise WorkerFailed(f"analysis worker ended after {len(self._blobs)} of {self.count} files")
            (n,) = _HEADER.unpack(head)
            body = self._in.read(n)
            if len(body) < n:
                self.close()
                raise WorkerFailed("analysis worker's result was cut short")
            self._blobs.append(body)
        return self._blobs[k]

    def close(self) -> None:
        """Stop reading; end the worker if it is still running, and reap it."""
        if not self._in.closed:
            self._in.close()
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            if len(self._blobs) < self.count:
                os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)

    def __enter__(self) -> ForkedAnalysis:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _work(fd: int, datas: Sequence[bytes], indexes: Sequence[int], dialect: str) -> None:
    import queue
    import threading

    from veza_canary.migrations.analyze import analyze_text
    from veza_canary.migrations.engine import gc_tuned

    out = os.fdopen(fd, "wb")
    q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            while (blob := q.get()) is not None:
                out.write(_HEADER.pack(len(blob)))
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
            q.put(pickle.dumps(analyze_text(datas[i].decode("utf-8"), dialect), protocol=pickle.HIGHEST_PROTOCOL))
    q.put(None)
    t.join()
    if failed:
        raise failed[0]
