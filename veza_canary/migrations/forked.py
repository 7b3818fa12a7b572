"""Forked workers that analyse files beside this process, sharing one queue of work.

Why not ``concurrent.futures``: its pool feeds tasks and collects results with a
thread in *this* process, which gets the GIL only between this process's own work,
so workers sat idle (measured: a worker's share took 30% longer). And a pool where
this process only waits wastes a core on a two-core machine: it measured slower
than parsing everything here, once pickling and the second sqlglot import were paid.

So this process is one of the workers. ``Pool(n)`` forks ``n`` workers at once --
for a cold lint, before the command line is even parsed (``prefork``), so their
sqlglot import overlaps this process's start-up, reading, hashing and cache lookup --
and each waits for ``start(items, dialect)``: the files to analyse (paths, or
whatever ``load`` takes), cut into small chunks whose numbers go into one pipe
that every process reads from. A read of one 4-byte record from a pipe is atomic,
so each chunk is claimed by exactly one process, whoever is free: the balance
between a worker that started early and this process, which also judges, sorts
itself out. A worker loads its files itself (``load`` is inherited through the
fork; by default it reads a path), analyses them, and a writer thread in the *worker* pushes ``(position,
content key, pickled result)`` into its result pipe, blocking on a full pipe
without stalling the parsing. This process takes what it needs in order: its own
chunks' results directly, the workers' from ``poll``; it checks each key against
its own, so a file that changed between the two reads, or anything a worker could
not analyse, is analysed here instead. So is whatever a worker that died had
claimed: once no worker is left and the queue is empty, a missing result can only
come from here. Closing the pool early ends the workers by their PIDs, which only
we know, and reaps them.
"""

from __future__ import annotations

import gc
import os
import pickle  # noqa: S403 - between our own processes
import select
import signal
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_RESULT = struct.Struct("<IHI")  # position in the started list, key length, result length
_START = struct.Struct("<Q")  # length of the pickled (dialect, chunk size, items)
_CHUNK = struct.Struct("<I")  # a chunk number in the queue
#: At most this many chunks, so the whole queue is one atomic pipe write (PIPE_BUF is 4096 on Linux).
_MAX_CHUNKS = 1000
#: File descriptors of this process's open pools that a newly forked worker must close.
_PARENT_FDS: dict[int, Pool] = {}
#: Files parsed between two explicit cycle collections while automatic GC is off (``gc_tuned``).
_GC_EVERY = 4000
_gc_depth = 0
_gc_files = 0
#: Below this many files to parse, a pool costs more than it saves (the engine's and launcher's rule).
PARALLEL_THRESHOLD = 48
#: What ``keep`` holds until the process ends (None: ``keep_until_exit`` not called).
_KEPT: list[Any] | None = None
#: A pool forked ahead of need by ``prefork``, for the first ``take_prefork``.
_PREFORKED: Pool | None = None


@contextmanager
def gc_tuned() -> Iterator[None]:
    """Run a parse-heavy section without the automatic cyclic GC, restoring it afterwards.

    Parsing allocates millions of objects, nearly all freed by reference counting;
    the young-generation collections that walk them anyway cost ~10% of a cold lint's
    CPU (docs/benchmarks.md). So automatic collection is off, and ``parsed`` runs one
    full collection every ``_GC_EVERY`` files, which bounds what cycles (sqlglot's
    trees link child and parent) can pile up: +3 MB over 2,000 files measured.
    The objects that exist before are frozen, so that collection skips them.
    """
    global _gc_depth, _gc_files
    if _gc_depth:
        yield
        return
    was_enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    _gc_depth += 1
    _gc_files = 0
    try:
        yield
    finally:
        _gc_depth -= 1
        # Everything allocated meanwhile sits in the youngest generation: the first automatic
        # collection would walk it all (~12 ms after a cold lint). Freezing, then unfreezing,
        # moves it to the oldest generation in O(1), to be looked at by full collections only.
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def parsed(n: int = 1) -> None:
    """Count ``n`` files parsed inside ``gc_tuned``; collect cycles every ``_GC_EVERY`` files."""
    global _gc_files
    _gc_files += n
    if _gc_files >= _GC_EVERY and _gc_depth:
        _gc_files = 0
        gc.collect()


def default_jobs() -> int:
    """The CPUs this process may run on.

    Not "minus the load average": that is a one-minute mean which still counts the
    lint run before this one, and it made back-to-back runs parse on one core. On a
    busy machine the scheduler shares the cores anyway; an extra worker then costs
    only its pickling (~5%).
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def keep_until_exit() -> None:
    """From now on ``keep`` holds objects until the process ends (a console script that will ``os._exit``).

    Freeing a cold lint's analysis object by object costs ~10 ms just before an exit that
    would free it all at once. Never for a long-lived process: what ``keep`` holds stays.
    """
    global _KEPT
    if _KEPT is None:
        _KEPT = []


def keep(obj: Any) -> None:
    """Hold ``obj`` until the process ends, if ``keep_until_exit`` was called; else nothing."""
    if _KEPT is not None:
        _KEPT.append(obj)


def read_path(path: Any) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def prefork(workers: int) -> None:
    """Fork ``workers`` for the analysis this process is about to start (no-op if < 1 or no fork)."""
    global _PREFORKED
    if _PREFORKED is None and workers >= 1 and hasattr(os, "fork"):
        try:
            _PREFORKED = Pool(workers)
        except OSError:
            pass  # cannot fork now (EAGAIN, EMFILE): the run parses here, or forks later


def take_prefork() -> Pool | None:
    """The pool ``prefork`` made, now the caller's to start and close; None if there is none."""
    global _PREFORKED
    pool, _PREFORKED = _PREFORKED, None
    return pool


def discard_prefork() -> None:
    """Close a pool that was forked ahead but never taken (the command ended before it needed one)."""
    pool = take_prefork()
    if pool is not None:
        pool.close()


class Pool:
    """``workers`` forked analysers plus this process, sharing a queue of chunks."""

    def __init__(self, workers: int, load: Callable[[Any], bytes] = read_path) -> None:
        self.pids: list[int] = []
        self.items: Sequence[Any] = ()
        self.chunk = 0
        self._started = False
        self._queue_r, self._queue_w = os.pipe()
        self._starts: list[int] = []  # write ends of each worker's start pipe
        self._outs: dict[int, bytearray] = {}  # read end of each live worker's result pipe -> unparsed bytes
        self._by_fd: dict[int, int] = {}  # result fd -> pid
        self.failures: list[str] = []  # workers that ended abnormally before closing
        _PARENT_FDS[self._queue_w] = self
        _PARENT_FDS[self._queue_r] = self
        try:
            for _ in range(workers):
                self._fork_one(load)
        except BaseException:  # a fork or pipe that failed midway (EAGAIN, EMFILE): none left behind
            self.close()
            raise

    def _fork_one(self, load: Callable[[Any], bytes]) -> None:
        start_r, start_w = os.pipe()
        try:
            out_r, out_w = os.pipe()
        except BaseException:
            os.close(start_r)
            os.close(start_w)
            raise
        try:
            pid = os.fork()
        except BaseException:
            for fd in (start_r, start_w, out_r, out_w):
                os.close(fd)
            raise
        if pid == 0:  # the worker: never returns into the caller's code
            code = 1
            try:
                for fd, pool in list(_PARENT_FDS.items()):  # siblings' and other pools' ends
                    if not (pool is self and fd == self._queue_r):
                        os.close(fd)
                os.close(start_w)
                os.close(out_r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # the terminal's Ctrl-C ends it outright
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _work(start_r, self._queue_r, out_w, load)
                code = 0
            finally:
                os._exit(code)
        os.close(start_r)
        os.close(out_w)
        self.pids.append(pid)
        self._starts.append(start_w)
        self._outs[out_r] = bytearray()
        self._by_fd[out_r] = pid
        _PARENT_FDS[start_w] = _PARENT_FDS[out_r] = self

    @property
    def alive(self) -> bool:
        """Some worker may still send results."""
        return bool(self._outs)

    def start(self, items: Sequence[Any], dialect: str, chunk: int = 0) -> None:
        """Send every worker the files (``load``'s arguments) and open the queue (once); none lets them exit."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        n = len(items)
        self.items = items
        self.chunk = max(chunk, 1, -(-n // _MAX_CHUNKS))
        body = pickle.dumps((dialect, self.chunk, list(items)), protocol=pickle.HIGHEST_PROTOCOL) if n else b""
        msg = _START.pack(len(body)) + body
        for fd in self._starts:
            try:
                _fit_pipe(fd, len(msg))
                _write_all(fd, msg)
            except OSError:
                pass  # that worker is gone: poll() finds its pipe closed
            self._close_fd(fd)
        self._starts = []
        chunks = -(-n // self.chunk)
        if chunks:
            os.write(self._queue_w, struct.pack(f"<{chunks}I", *range(chunks)))  # one atomic write: < PIPE_BUF
        self._close_fd(self._queue_w)
        self._queue_w = -1

    def claim(self) -> range | None:
        """Positions (in the started list) of the next unclaimed chunk, for this process; None when none is left."""
        if not self._started:
            raise RuntimeError("claim() before start()")
        if self._queue_r < 0:
            return None
        rec = os.read(self._queue_r, _CHUNK.size)  # never blocks: every write end is closed
        if len(rec) < _CHUNK.size:
            self._close_fd(self._queue_r)
            self._queue_r = -1
            return None
        (c,) = _CHUNK.unpack(rec)
        return range(c * self.chunk, min((c + 1) * self.chunk, len(self.items)))

    def poll(self, timeout: float | None = None) -> list[tuple[int, str, bytes]]:
        """Results that arrived, as ``(position, content key, pickled AnalyzedFile)``.

        Waits up to ``timeout`` (None: until one arrives or every worker has ended). A
        key of ``""`` means the worker could not analyse that file.
        """
        got: list[tuple[int, str, bytes]] = []
        while self._outs:
            ready, _w, _x = select.select(list(self._outs), [], [], timeout)
            for fd in ready:
                chunk = os.read(fd, 1 << 17)
                if not chunk:
                    self._end_worker(fd)
                    continue
                buf = self._outs[fd]
                buf += chunk
                got.extend(_parse_results(buf))
            if got or timeout is not None:
                break
        return got

    def close(self) -> None:
        """Stop: end the workers that may still be running, and reap them (idempotent)."""
        for fd in [*self._starts, self._queue_w, self._queue_r, *self._outs]:
            if fd >= 0:
                self._close_fd(fd)
        self._starts, self._queue_w, self._queue_r = [], -1, -1
        self._outs.clear()
        self._by_fd.clear()
        pids, self.pids = self.pids, []
        for pid in pids:
            _end(pid)  # not a failure to report: this process stopped listening first

    def _end_worker(self, fd: int) -> None:
        del self._outs[fd]
        pid = self._by_fd.pop(fd)
        self._close_fd(fd)
        if pid in self.pids:
            self.pids.remove(pid)
            try:  # its result pipe closes only when it exits: this does not wait long
                status = os.waitpid(pid, 0)[1]
            except ChildProcessError:
                status = 0
            if status:
                self.failures.append(f"analysis worker {pid} ended with wait status {status}")

    def _close_fd(self, fd: int) -> None:
        _PARENT_FDS.pop(fd, None)
        try:
            os.close(fd)
        except OSError:
            pass

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _end(pid: int) -> int:
    """Reap ``pid``, ending it first if it still runs; its wait status (0: it exited cleanly by itself)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            return 0  # ended by us
        return status
    except ChildProcessError:
        return 0


def _parse_results(buf: bytearray) -> list[tuple[int, str, bytes]]:
    """Complete records at the start of ``buf``, removed from it."""
    out = []
    at = 0
    size = _RESULT.size
    while len(buf) - at >= size:
        pos, nk, nb = _RESULT.unpack_from(buf, at)
        end = at + size + nk + nb
        if len(buf) < end:
            break
        out.append((pos, bytes(buf[at + size:at + size + nk]).decode("ascii"), bytes(buf[at + size + nk:end])))
        at = end
    del buf[:at]
    return out


def _fit_pipe(fd: int, size: int) -> None:
    """Grow a pipe to hold ``size`` bytes if it can (Linux), so writing them does not wait for the reader.

    A worker may still be importing sqlglot when it is started: ~2,000 paths do not fit
    the default 64 KiB, and this process would sit idle until the worker read them.
    """
    if size <= 1 << 16:
        return
    import fcntl

    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(size, 1 << 20))  # 1 MiB: the unprivileged limit by default
    except (AttributeError, OSError):
        pass  # then the write waits for the reader, as it would anyway


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n and (chunk := os.read(fd, min(n - got, 1 << 16))):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_start(fd: int) -> tuple[str, int, list[Any]]:
    """The dialect, chunk size and items the parent sent; no items if it closed the pipe without sending."""
    head = _read_exactly(fd, _START.size)
    start: tuple[str, int, list[Any]] = ("", 0, [])
    if len(head) == _START.size:
        (n,) = _START.unpack(head)
        body = _read_exactly(fd, n)
        if n and len(body) == n:
            start = pickle.loads(body)  # noqa: S301 - from our own parent process
    os.close(fd)
    return start


def _claims(queue_fd: int, items: list[Any], chunk: int) -> Any:
    """The ``(position, item)`` pairs of each chunk this worker claims from the queue, a list per chunk."""
    n = len(items)
    while True:
        rec = _read_exactly(queue_fd, _CHUNK.size)  # blocks only until the parent fills the queue
        if len(rec) < _CHUNK.size:
            return
        (c,) = _CHUNK.unpack(rec)
        yield [(pos, items[pos]) for pos in range(c * chunk, min((c + 1) * chunk, n))]


def _work(start_fd: int, queue_fd: int, out_fd: int, load: Callable[[Any], bytes]) -> None:
    from veza_canary.migrations.analyze import analyze_text  # the warm-up, while the parent reads files
    from veza_canary.migrations.cache import cache_key, sqlglot_version
    from veza_canary.migrations.changes import ANALYZER_VERSION

    version = sqlglot_version()
    dialect, chunk, items = _read_start(start_fd)
    if not items:
        return
    # Each chunk's results go out in one write, from this thread: a writer thread cost more in
    # GIL hand-overs than it saved. A roomy pipe keeps the write from waiting while this
    # process's parent is busy parsing a chunk of its own (it reads between its chunks).
    _fit_pipe(out_fd, 1 << 20)
    with gc_tuned():
        for claimed in _claims(queue_fd, items, chunk):
            out = bytearray()
            for pos, item in claimed:
                key, blob = b"", b""
                try:
                    data = load(item)
                    key = cache_key(data, dialect, ANALYZER_VERSION, version).encode("ascii")
                    blob = pickle.dumps(analyze_text(data.decode("utf-8"), dialect),
                                        protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001, S110 - the parent analyses this file itself
                    key, blob = b"", b""
                parsed()
                out += _RESULT.pack(pos, len(key), len(blob))
                out += key
                out += blob
            _write_all(out_fd, out)  # BrokenPipeError when the parent went away: the worker ends
