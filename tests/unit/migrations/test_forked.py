"""Forked analysis workers (``forked.Pool``) and the engine's use of them.

A worker must give exactly what in-process analysis gives; every chunk of the queue
must reach exactly one process; workers must be ended and reaped when the pool is
closed, early or not; and a worker that dies -- or a file it cannot analyse, or a
file that changed between its read and ours -- must cost nothing but time: the
engine analyses those files in-process instead.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from veza_canary import launch
from veza_canary.migrations import analyze, engine, forked
from veza_canary.migrations.analyze import analyze_text
from veza_canary.migrations.cache import Cache
from veza_canary.migrations.changes import AnalyzedFile
from veza_canary.migrations.engine import LintOptions, analyze_all, content_keys, iter_analysed
from veza_canary.migrations.forked import Pool

# Without os.fork the lint parses in one process; these tests then skip -- except under CI=true,
# where they run (and fail): CI must not pass with the parallel path untested.
pytestmark = pytest.mark.skipif(not hasattr(os, "fork") and os.environ.get("CI", "").lower() != "true",
                                reason="needs os.fork")

_REAL_WORK = forked._work
PG = "postgres"
Result = tuple[int, str, bytes]


def _corpus(n: int, seed: int = 7) -> list[bytes]:
    """``n`` migration files of varied SQL; a few duplicates, one unparseable, some directives."""
    rng = random.Random(seed)
    pieces = [
        "CREATE TABLE t{i} (id bigserial PRIMARY KEY, name text NOT NULL DEFAULT 'x, y', "
        "meta jsonb NOT NULL DEFAULT '{{}}'::jsonb, created_at timestamptz NOT NULL DEFAULT now());",
        "CREATE TABLE IF NOT EXISTS app.u{i} (\n  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), -- a, comment\n"
        "  \"Kind\" text CHECK (\"Kind\" <> ''),\n  owner bigint REFERENCES t{j}(id) ON DELETE CASCADE\n);",
        "ALTER TABLE t{j} ADD COLUMN c{i} int NOT NULL DEFAULT 0;",
        "ALTER TABLE t{j} ADD COLUMN d{i} text;",
        "ALTER TABLE t{j} DROP COLUMN name;",
        "-- veza-canary: allow VC101 because the column was never read\nALTER TABLE t{j} DROP COLUMN meta;",
        "CREATE INDEX CONCURRENTLY ix{i} ON t{j} (created_at);",
        "CREATE UNIQUE INDEX ux{i} ON t{j} (lower(name));",
        "INSERT INTO t{j} (name) VALUES ('a; DROP TABLE x'), ('b');",
        "DO $$ BEGIN ALTER TABLE t{j} ADD COLUMN e{i} int; END $$;",
        "CREATE VIEW v{i} AS SELECT * FROM t{j};",
        "ALTER TABLE t{j} ALTER COLUMN name TYPE varchar(20);",
        "ALTER TABLE t{j} RENAME COLUMN name TO full_name;",
        "CREATE TYPE mood{i} AS ENUM ('sad', 'ok');",
        "SELECT my_function{i}();",
        "DROP TABLE IF EXISTS old{i};",
    ]
    out = []
    for i in range(n):
        k = rng.randint(1, 4)
        sql = "\n".join(rng.choice(pieces).format(i=i, j=rng.randrange(max(i, 1))) for _ in range(k))
        out.append(f"-- file {i}\n{sql}\n".encode())
    out[5] = out[3]  # same content twice: analysed once
    out[17] = b"CREATE TABLE broken (a int, b numeric(12,2;\n"  # an analysis error, not an exception
    out[23] = out[3]
    return out


@contextmanager
def _deadline(seconds: int = 30) -> Iterator[None]:
    """Turn a hang into a failure (no effect on a passing test)."""
    def expired(_sig: int, _frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _assert_reaped(pid: int | None) -> None:
    assert pid is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _assert_closed(pool: Pool, pids: Sequence[int]) -> None:
    assert pids, "the pool forked no worker"
    assert pool.pids == [] and not pool.alive
    for pid in pids:
        _assert_reaped(pid)


def _key(data: bytes, dialect: str = PG) -> str:
    return content_keys([data], dialect)[0]


def _drain(pool: Pool) -> list[Result]:
    """Every result the workers still send, until they have all ended (this process claims nothing)."""
    got: list[Result] = []
    while pool.alive:
        got.extend(pool.poll(None))
    return got


def _claim_all(pool: Pool) -> list[int]:
    """Every position left in the queue, claimed by this process."""
    mine: list[int] = []
    while (claimed := pool.claim()) is not None:
        mine.extend(claimed)
    return mine


def _wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (under a ``_deadline``, which turns a wait that never ends into a failure)."""
    while not condition():
        time.sleep(0.001)


def _exited(pid: int) -> bool:
    """The child has ended (WNOWAIT: its pool still reaps it and gets its wait status)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # its pool has reaped it already
        return True


class _Gate:
    """Makes a worker and this process each claim at least one chunk, whatever the scheduler does.

    The first file a worker loads waits until this process has claimed a chunk; this
    process's first claim waits until a worker holds a file (so the queue cannot be
    drained by either side before the other has its share).
    """

    def __init__(self, where: Path) -> None:
        where.mkdir(exist_ok=True)
        self.held, self.go = where / "held", where / "go"

    def load(self, load: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
        def gated(item: Any) -> bytes:  # in the worker
            if not self.go.exists():
                self.held.touch()
                _wait_for(self.go.exists)
            return load(item)

        return gated

    def before_claim(self) -> None:
        _wait_for(self.held.exists)

    def after_claim(self) -> None:
        self.go.touch()


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return _corpus(max(60, engine.PARALLEL_THRESHOLD + 12))


@pytest.fixture(scope="module")
def expected(corpus: list[bytes]) -> list[AnalyzedFile]:
    return [analyze_text(d.decode("utf-8"), PG) for d in corpus]


@pytest.fixture
def local_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Texts this process analysed itself (a worker forked later counts in its own copy, not here).

    ``engine._Parsing`` imports ``analyze_text`` from its module when it first needs it,
    so patching the module attribute catches every parse done here.
    """
    calls: list[str] = []
    real = analyze.analyze_text

    def counting(raw: str, dialect: str) -> AnalyzedFile:
        calls.append(raw)
        return real(raw, dialect)

    monkeypatch.setattr(analyze, "analyze_text", counting)
    return calls


@pytest.fixture(autouse=True)
def _no_prefork() -> Iterator[None]:
    """No test leaves (or finds) a pool forked ahead."""
    forked.discard_prefork()
    yield
    forked.discard_prefork()


# --- Pool ------------------------------------------------------------------------------------------


def test_worker_results_equal_in_process_analysis(corpus: list[bytes], expected: list[AnalyzedFile]) -> None:
    items = [9, 0, 17, 3, 40, 5]
    with _deadline(), Pool(2, load=corpus.__getitem__) as pool:
        pids = list(pool.pids)
        assert len(pids) == 2
        pool.start(items, PG)
        got = _drain(pool)  # this process claims nothing: the workers do it all
        assert pool.failures == []
        assert pool.claim() is None  # the workers emptied the queue before they ended
    assert sorted(pos for pos, _k, _b in got) == list(range(len(items)))
    by_pos = {pos: (key, blob) for pos, key, blob in got}
    for pos, i in enumerate(items):
        key, blob = by_pos[pos]
        assert key == _key(corpus[i])
        assert pickle.loads(blob) == expected[i]
    assert pickle.loads(by_pos[2][1]).error is not None  # the broken file crossed over as an error
    _assert_closed(pool, pids)


def test_positions_are_shared_between_this_process_and_the_workers(tmp_path: Path, corpus: list[bytes],
                                                                   expected: list[AnalyzedFile]) -> None:
    gate = _Gate(tmp_path / "gate")
    items = list(range(len(corpus)))
    with _deadline(), Pool(2, load=gate.load(corpus.__getitem__)) as pool:
        pids = list(pool.pids)
        pool.start(items, PG)
        gate.before_claim()
        mine: list[int] = []
        for _ in range(3):
            claimed = pool.claim()
            assert claimed is not None
            mine.extend(claimed)
            for pos in claimed:
                assert analyze_text(corpus[items[pos]].decode(), PG) == expected[items[pos]]
        gate.after_claim()
        got = _drain(pool)
        assert pool.claim() is None
        assert pool.failures == []
    theirs = [pos for pos, _k, _b in got]
    assert len(mine) == 3 and theirs
    assert sorted(mine + theirs) == list(range(len(items)))  # every position exactly once
    for pos, key, blob in got:
        assert key == _key(corpus[items[pos]])
        assert pickle.loads(blob) == expected[items[pos]]
    _assert_closed(pool, pids)


def test_worker_honours_the_dialect() -> None:
    datas = [b"CREATE TABLE `t` (`id` int NOT NULL AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB;"]
    with _deadline(), Pool(1, load=datas.__getitem__) as pool:
        pids = list(pool.pids)
        pool.start([0], "mysql")
        [(pos, key, blob)] = _drain(pool)
    assert pos == 0
    assert key == _key(datas[0], "mysql") != _key(datas[0], PG)
    got = pickle.loads(blob)
    assert got == analyze_text(datas[0].decode(), "mysql")
    assert got.statements[0].changes[0].name == ("", "t")
    _assert_closed(pool, pids)


def test_a_file_the_worker_cannot_analyse_comes_back_empty(corpus: list[bytes],
                                                          expected: list[AnalyzedFile]) -> None:
    def load(i: int) -> bytes:
        if i == 1:
            return b"CREATE TABLE t (a int);\n-- \xff\xfe not UTF-8\n"  # the worker's decode raises
        if i == 2:
            raise FileNotFoundError("gone")
        return corpus[i]

    with _deadline(), Pool(1, load=load) as pool:
        pids = list(pool.pids)
        pool.start([0, 1, 2, 3], PG)
        got = {pos: (key, blob) for pos, key, blob in _drain(pool)}
        assert pool.failures == []  # not a failure of the worker: it went on
    assert sorted(got) == [0, 1, 2, 3]
    assert got[1] == got[2] == ("", b"")
    assert [pickle.loads(got[k][1]) for k in (0, 3)] == [expected[0], expected[3]]
    assert got[3][0] == _key(corpus[3])
    _assert_closed(pool, pids)


def test_results_bigger_than_a_pipe_arrive_whole() -> None:
    """Records cut across reads (a pickle of ~200 KiB; small ones around it) are put back together."""
    big = "\n".join(f"ALTER TABLE t{i} ADD COLUMN c{i} int NOT NULL DEFAULT 0;" for i in range(1500)).encode()
    datas = [b"SELECT 1;", big, b"CREATE TABLE a (id int);", big + b"\n-- again", b"DROP TABLE a;"]
    with _deadline(), Pool(1, load=datas.__getitem__) as pool:
        pids = list(pool.pids)
        pool.start(range(len(datas)), PG)
        got = {pos: (key, blob) for pos, key, blob in _drain(pool)}
    assert len(got[1][1]) > 1 << 17  # more than one read of the result pipe
    for pos, data in enumerate(datas):
        assert got[pos][0] == _key(data)
        assert pickle.loads(got[pos][1]) == analyze_text(data.decode(), PG)
    _assert_closed(pool, pids)


def test_start_does_not_wait_for_a_worker_still_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files' list may be bigger than a pipe holds by default: this process must not sit idle meanwhile."""
    def slow_import(*args: Any) -> None:  # in the worker
        time.sleep(1.0)
        _REAL_WORK(*args)

    monkeypatch.setattr(forked, "_work", slow_import)
    items = [f"/some/where/migrations/{i:06d}_a_rather_long_migration_name.up.sql" for i in range(3000)]
    assert len(pickle.dumps(items)) > 1 << 16
    with _deadline():
        pool = Pool(2)
        pids = list(pool.pids)
        t0 = time.monotonic()
        pool.start(items, PG)
        took = time.monotonic() - t0
        assert pool.claim() == range(0, 3)  # this process can start on the queue at once
        pool.close()
    assert took < 0.5
    _assert_closed(pool, pids)


def test_start_only_once_and_claim_only_after_start() -> None:
    with _deadline(), Pool(1, load=[b"SELECT 1;"].__getitem__) as pool:
        pids = list(pool.pids)
        with pytest.raises(RuntimeError):
            pool.claim()
        pool.start([0], PG)
        with pytest.raises(RuntimeError):
            pool.start([0], PG)
        results = _drain(pool)
    assert [(pos, key) for pos, key, _b in results] == [(0, _key(b"SELECT 1;"))]
    _assert_closed(pool, pids)


@pytest.mark.parametrize("started", [None, []], ids=["never-started", "started-with-nothing"])
def test_an_idle_pool_is_closed_and_reaped(started: list[int] | None) -> None:
    with _deadline():
        pool = Pool(2, load=[b"SELECT 1;"].__getitem__)
        pids = list(pool.pids)
        if started is not None:
            pool.start(started, PG)
            assert pool.claim() is None  # nothing queued
            assert _drain(pool) == []  # the workers exit by themselves, cleanly
            assert pool.failures == []
        pool.close()
        pool.close()  # idempotent
    _assert_closed(pool, pids)


def test_a_pool_without_workers_leaves_every_chunk_to_this_process() -> None:
    with _deadline():
        pool = Pool(0, load=[b"SELECT 1;"].__getitem__)
        assert pool.pids == [] and not pool.alive
        pool.start(list(range(5)), PG, chunk=2)
        assert pool.poll(None) == []  # returns at once: nobody can send anything
        assert [list(r) for r in iter(pool.claim, None)] == [[0, 1], [2, 3], [4]]
        pool.close()


def test_closing_after_one_result_ends_and_reaps_busy_workers(corpus: list[bytes],
                                                              expected: list[AnalyzedFile]) -> None:
    many = corpus * 6
    with _deadline():
        pool = Pool(2, load=many.__getitem__)
        pids = list(pool.pids)
        pool.start(list(range(len(many))), PG)
        first = pool.poll(None)
        assert first
        pos, _key_, blob = first[0]
        assert pickle.loads(blob) == expected[pos % len(corpus)]
        pool.close()
        pool.close()  # idempotent
    _assert_closed(pool, pids)


def test_close_kills_a_worker_that_is_still_working(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                     expected: list[AnalyzedFile]) -> None:
    def load(i: int) -> bytes:
        if i == 1:
            while True:  # a worker stuck in a long file: only a signal ends it
                signal.pause()
        return corpus[i]

    kills: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        kills.append((pid, sig))
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    with _deadline():
        pool = Pool(1, load=load)
        [pid] = pool.pids
        pool.start([0, 1, 2], PG)
        [(pos, _key_, blob)] = pool.poll(None)  # sent before it got stuck
        assert pos == 0 and pickle.loads(blob) == expected[0]
        assert pool.poll(0) == []  # does not wait
        assert pool.poll(0.05) == [] and pool.alive  # still stuck
        pool.close()
    assert kills == [(pid, signal.SIGTERM)]
    assert pool.failures == []  # ended by us, not a failure of its own
    _assert_closed(pool, [pid])


def test_a_worker_that_dies_midway(corpus: list[bytes], expected: list[AnalyzedFile]) -> None:
    def load(i: int) -> bytes:
        if i == 3:
            os._exit(3)  # in the worker: it dies on its fourth file
        return corpus[i]

    with _deadline():
        pool = Pool(1, load=load)
        [pid] = pool.pids
        pool.start(list(range(10)), PG)
        got = _drain(pool)  # returns: a dead worker's pipe ends
        assert not pool.alive
        assert len(pool.failures) == 1 and str(pid) in pool.failures[0]
        rest = _claim_all(pool)  # what it never claimed is still queued
        pool.close()
    # It may die while its writer thread still holds results: a cut-short record is dropped.
    arrived = sorted(pos for pos, _k, _b in got)
    assert arrived == list(range(len(arrived))) and len(arrived) <= 3
    for pos, key, blob in got:  # what did arrive is right
        assert key == _key(corpus[pos]) and pickle.loads(blob) == expected[pos]
    assert rest == list(range(4, 10))  # position 3 went down with the worker
    _assert_closed(pool, [pid])


def test_a_worker_that_exits_at_once_leaves_the_queue_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forked, "_work", lambda *a: os._exit(1))  # the children run the patched module
    with _deadline():
        pool = Pool(2, load=[b"SELECT 1;"].__getitem__)
        pids = list(pool.pids)
        pool.start([0, 0, 0], PG)  # writing to a worker that is gone must not raise
        assert _drain(pool) == []
        assert len(pool.failures) == 2
        assert _claim_all(pool) == [0, 1, 2]
        pool.close()
    _assert_closed(pool, pids)


def test_read_path_is_the_default_load(tmp_path: Path, corpus: list[bytes], expected: list[AnalyzedFile]) -> None:
    paths = []
    for i in (0, 9, 17):
        p = tmp_path / f"{i:04d}.up.sql"
        p.write_bytes(corpus[i])
        paths.append(p)
    items = [str(paths[0]), paths[1], str(paths[2])]  # str or Path: whatever open() takes
    with _deadline(), Pool(1) as pool:
        pids = list(pool.pids)
        pool.start(items, PG)
        got = {pos: (key, blob) for pos, key, blob in _drain(pool)}
    assert {pos: pickle.loads(blob) for pos, (_k, blob) in got.items()} == {
        0: expected[0], 1: expected[9], 2: expected[17]}
    assert [got[pos][0] for pos in range(3)] == [_key(corpus[i]) for i in (0, 9, 17)]
    _assert_closed(pool, pids)


def test_two_pools_open_at_once_do_not_hold_each_others_pipes(corpus: list[bytes],
                                                              expected: list[AnalyzedFile]) -> None:
    """A worker of the second pool must not keep the first pool's queue open (its workers would never end)."""
    with _deadline():
        first = Pool(1, load=corpus.__getitem__)
        second = Pool(1, load=corpus.__getitem__)
        pids = [*first.pids, *second.pids]
        first.start([0, 1], PG)
        second.start([2, 3], PG)
        got_first, got_second = _drain(first), _drain(second)
        first.close()
        second.close()
    assert {pos: pickle.loads(b) for pos, _k, b in got_first} == {0: expected[0], 1: expected[1]}
    assert {pos: pickle.loads(b) for pos, _k, b in got_second} == {0: expected[2], 1: expected[3]}
    for pid in pids:
        _assert_reaped(pid)


def test_a_fork_that_fails_midway_leaves_no_worker_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    real_fork = os.fork
    forks: list[int] = []

    def fork() -> int:
        if forks:
            raise BlockingIOError(11, "Resource temporarily unavailable")  # EAGAIN: too many processes
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    fds_before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", fork)
    try:
        with _deadline():
            try:
                pool = Pool(2, load=[b"SELECT 1;"].__getitem__)
            except OSError:
                pass  # refusing is fine, once what was forked is ended
            else:
                pool.close()  # so is a pool with fewer workers
            assert len(forks) == 1
            assert _exited(forks[0]), "the first worker was left running"
            _assert_reaped(forks[0])
            assert forked._PARENT_FDS == {}
            assert set(os.listdir("/proc/self/fd")) <= fds_before
    finally:  # should it ever regress, it must not outlive this test
        for fd in list(forked._PARENT_FDS):
            forked._PARENT_FDS.pop(fd)
            os.close(fd)
        for pid in forks:
            forked._end(pid)


def test_prefork_take_and_discard() -> None:
    with _deadline():
        forked.prefork(0)
        assert forked.take_prefork() is None  # no worker asked for: no pool
        forked.prefork(2)
        pool = forked._PREFORKED
        assert isinstance(pool, Pool)
        forked.prefork(1)  # one is enough: no second pool
        assert forked._PREFORKED is pool
        pids = list(pool.pids)
        assert len(pids) == 2
        assert forked.take_prefork() is pool
        assert forked.take_prefork() is None  # given once
        pool.close()
        _assert_closed(pool, pids)

        forked.prefork(1)
        pool = forked._PREFORKED
        assert pool is not None
        pids = list(pool.pids)
        forked.discard_prefork()
        assert forked.take_prefork() is None
        forked.discard_prefork()  # nothing left: a no-op
    _assert_closed(pool, pids)


@pytest.mark.parametrize(("n", "chunk", "size"), [(3000, 0, 3), (100, 7, 7)],
                         ids=["bounded-queue", "explicit-chunk"])
def test_every_position_is_claimed_by_exactly_one_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          n: int, chunk: int, size: int) -> None:
    """Three workers and this process race for the chunks: none is delivered twice, none is lost."""
    real_claims = forked._claims
    logs, go = tmp_path / "claims", tmp_path / "go"
    logs.mkdir()

    def recording(queue_fd: int, items: list[Any], chunk: int) -> Iterator[list[tuple[int, Any]]]:
        with open(logs / str(os.getpid()), "a") as f:  # in the worker
            for claimed in real_claims(queue_fd, items, chunk):
                f.write("".join(f"{pos}\n" for pos, _item in claimed))
                f.flush()
                yield claimed

    def load(item: str) -> bytes:  # in the worker: holds its first chunk until this process has claimed one
        while not go.exists():
            time.sleep(0.001)
        return item.encode()

    monkeypatch.setattr(forked, "_claims", recording)
    monkeypatch.setattr(analyze, "analyze_text", lambda raw, dialect: f"{dialect}:{raw}")  # cheap, picklable
    items = [f"item {i}" for i in range(n)]
    with _deadline():
        pool = Pool(3, load=load)
        pids = list(pool.pids)
        pool.start(items, PG, chunk=chunk)
        assert pool.chunk == size
        while not any(f.stat().st_size for f in logs.iterdir()):  # a worker has claimed a chunk
            time.sleep(0.001)
        mine: list[int] = []
        got: list[Result] = []
        while (claimed := pool.claim()) is not None:
            assert len(claimed) <= size
            mine.extend(claimed)
            go.touch()
            time.sleep(0.0005)  # "parsing" here, while the workers take chunks too
            got.extend(pool.poll(0))
        got.extend(_drain(pool))
        assert pool.failures == []
        pool.close()
    claims = {int(f.name): [int(x) for x in f.read_text().split()] for f in logs.iterdir()}
    assert set(claims) <= set(pids)
    theirs = [pos for worker in claims.values() for pos in worker]
    assert mine and theirs  # both sides took part
    assert sorted(mine + theirs) == list(range(n))  # claimed once each, by one process
    delivered = [pos for pos, _k, _b in got]
    assert sorted(delivered) == sorted(theirs)  # every worker claim came back, once
    for pos, key, blob in got:
        assert key == _key(items[pos].encode())
        assert pickle.loads(blob) == f"{PG}:{items[pos]}"
    _assert_closed(pool, pids)


# --- the engine ------------------------------------------------------------------------------------


class _Spy:
    """Records the pools the engine forks, what they are started with, this process's claims and the workers' results.

    ``gate``: each pool's workers and this process surely share the work (``_Gate``).
    ``before_first_claim``: called once, before this process first claims a chunk.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gate: _Gate | None = None,
                 before_first_claim: Callable[[], None] | None = None) -> None:
        self.pools: list[Pool] = []
        self.pids: list[int] = []
        self.started: list[list[Any]] = []
        self.claimed: list[int] = []  # positions this process claimed
        self.delivered: list[int] = []  # positions the workers sent
        spy = self

        class Recording(Pool):
            def __init__(self, workers: int, load: Callable[[Any], bytes] = forked.read_path) -> None:
                super().__init__(workers, gate.load(load) if gate is not None else load)
                self.first_claim = True
                spy.pools.append(self)
                spy.pids.extend(self.pids)

            def start(self, items: Sequence[Any], dialect: str, chunk: int = 0) -> None:
                spy.started.append(list(items))
                super().start(items, dialect, chunk)

            def claim(self) -> range | None:
                first, self.first_claim = self.first_claim, False
                if first and before_first_claim is not None:
                    before_first_claim()
                if first and gate is not None:
                    gate.before_claim()
                claimed = super().claim()
                if first and gate is not None:
                    gate.after_claim()
                if claimed is not None:
                    spy.claimed.extend(claimed)
                return claimed

            def poll(self, timeout: float | None = None) -> list[Result]:
                got = super().poll(timeout)
                spy.delivered.extend(pos for pos, _k, _b in got)
                return got

        self.Pool = Recording
        monkeypatch.setattr(engine, "Pool", Recording)

    @property
    def failures(self) -> list[str]:
        return [f for pool in self.pools for f in pool.failures]

    def assert_shared_once(self) -> None:
        """This process and the workers analysed every started position, exactly once between them."""
        [started] = self.started
        assert sorted(self.claimed + self.delivered) == list(range(len(started)))

    def assert_all_reaped(self) -> None:
        assert self.pids
        assert all(pool.pids == [] and not pool.alive for pool in self.pools)
        for pid in self.pids:
            _assert_reaped(pid)


def _first_indexes(datas: Sequence[bytes]) -> list[int]:
    return sorted({datas.index(d) for d in datas})


def test_corpus_is_big_enough_for_workers(corpus: list[bytes]) -> None:
    assert len(set(corpus)) >= engine.PARALLEL_THRESHOLD
    assert len(set(corpus)) < len(corpus)


def test_fork_pool() -> None:
    assert engine.fork_pool(1) is None
    assert engine.fork_pool(0) is None
    with _deadline():
        pool = engine.fork_pool(3)
        assert isinstance(pool, Pool)
        pids = list(pool.pids)
        assert len(pids) == 2  # this process is the third
        pool.close()
    _assert_closed(pool, pids)


def test_analyze_all_with_workers_equals_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    corpus: list[bytes], expected: list[AnalyzedFile],
                                                    local_parses: list[str]) -> None:
    spy = _Spy(monkeypatch, gate=_Gate(tmp_path / "gate"))
    with _deadline():
        parallel = analyze_all(corpus, LintOptions(jobs=2, cache=False))
    assert len(spy.pools) == 1 and len(spy.pids) == 1
    assert spy.started == [_first_indexes(corpus)]  # each content once
    assert spy.claimed and spy.delivered
    spy.assert_shared_once()
    assert spy.failures == []
    # This process parsed exactly the chunks it claimed; every worker result was used.
    [started] = spy.started
    assert sorted(local_parses) == sorted(corpus[started[p]].decode() for p in spy.claimed)
    spy.assert_all_reaped()
    local_parses.clear()
    with _deadline():
        serial = analyze_all(corpus, LintOptions(jobs=1, cache=False))
    assert len(spy.pools) == 1  # jobs=1: no new pool
    assert len(local_parses) == len(_first_indexes(corpus))
    assert parallel == serial == expected


def test_below_the_threshold_no_pool_is_forked(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                expected: list[AnalyzedFile]) -> None:
    spy = _Spy(monkeypatch)
    forks: list[int] = []
    real_fork_pool = engine.fork_pool
    monkeypatch.setattr(engine, "fork_pool", lambda jobs, *a: forks.append(jobs) or real_fork_pool(jobs, *a))
    few = corpus[: engine.PARALLEL_THRESHOLD - 1]
    with _deadline():
        assert analyze_all(few, LintOptions(jobs=4, cache=False)) == expected[: len(few)]
    assert spy.pools == [] and forks == []


def test_a_worker_that_dies_on_one_file_costs_one_local_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              corpus: list[bytes], expected: list[AnalyzedFile],
                                                              local_parses: list[str]) -> None:
    token = tmp_path / "died-on"

    def dies_once(start_fd: int, queue_fd: int, out_fd: int, load: Callable[[Any], bytes]) -> None:
        def guarded(item: Any) -> bytes:
            try:  # the first worker to load a file dies on it; the other goes on
                fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return load(item)
            os.write(fd, str(item).encode())
            os.close(fd)
            os._exit(3)

        _REAL_WORK(start_fd, queue_fd, out_fd, guarded)

    monkeypatch.setattr(forked, "_work", dies_once)  # the children run the patched module
    spy = _Spy(monkeypatch, before_first_claim=lambda: _wait_for(token.exists))  # so a worker surely dies
    with _deadline():
        got = analyze_all(corpus, LintOptions(jobs=3, cache=False))
    assert got == expected
    assert len(spy.pids) == 2
    assert len(spy.failures) == 1
    died_on = int(token.read_text())
    [started] = spy.started
    lost = started.index(died_on)
    assert lost not in spy.claimed and lost not in spy.delivered
    assert sorted(spy.claimed + spy.delivered + [lost]) == list(range(len(started)))
    # Parsed here: the chunks this process claimed, and the one file the dead worker took with it.
    assert sorted(local_parses) == sorted(corpus[started[p]].decode() for p in [*spy.claimed, lost])
    spy.assert_all_reaped()


def test_every_worker_failing_still_gives_every_result(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                       expected: list[AnalyzedFile],
                                                       local_parses: list[str]) -> None:
    monkeypatch.setattr(forked, "_work", lambda *a: os._exit(1))
    spy = _Spy(monkeypatch, before_first_claim=lambda: _wait_for(lambda: all(map(_exited, spy.pids))))
    with _deadline():
        got = analyze_all(corpus, LintOptions(jobs=3, cache=False))
    assert got == expected
    assert len(spy.pids) == 2 and len(spy.failures) == 2
    assert spy.delivered == []
    assert len(local_parses) == len(_first_indexes(corpus))
    spy.assert_all_reaped()


def test_a_worker_result_that_does_not_match_is_analysed_here(monkeypatch: pytest.MonkeyPatch,
                                                              corpus: list[bytes], expected: list[AnalyzedFile],
                                                              local_parses: list[str]) -> None:
    """File 10 changed since the worker read it; file 12 it could not read: only those two are redone here."""
    changed = {10: b"ALTER TABLE t1 DROP COLUMN name;\n"}  # what the worker reads for file 10

    def load(i: int) -> bytes:
        if i == 12:
            raise PermissionError("gone")
        return changed.get(i, corpus[i])

    class WorkersOnly(Pool):
        """This process finds the queue empty, so the worker surely gets files 10 and 12."""

        def claim(self) -> range | None:
            return None

    spy = _Spy(monkeypatch)
    with _deadline():
        pool = WorkersOnly(1, load=load)
        pids = list(pool.pids)
        pool.start(range(len(corpus)), PG)
        got = list(iter_analysed(corpus, LintOptions(jobs=2, cache=False), pool=pool))
    assert spy.pools == []  # the given pool was used
    assert got == expected
    assert sorted(local_parses) == sorted([corpus[10].decode(), corpus[12].decode()])
    _assert_closed(pool, pids)


def test_a_changed_file_is_redone_here_whoever_claimed_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          corpus: list[bytes], expected: list[AnalyzedFile],
                                                          local_parses: list[str]) -> None:
    """Same, with this process claiming chunks too: parsed here are its chunks, plus file 10 if a worker had it."""
    changed = {10: b"ALTER TABLE t1 DROP COLUMN name;\n"}
    spy = _Spy(monkeypatch, gate=_Gate(tmp_path / "gate"))
    with _deadline():
        pool = spy.Pool(1, load=lambda i: changed.get(i, corpus[i]))
        pool.start(range(len(corpus)), PG)
        got = list(iter_analysed(corpus, LintOptions(jobs=2, cache=False), pool=pool))
    assert got == expected
    spy.assert_shared_once()
    [started] = spy.started
    here = [corpus[started[p]].decode() for p in spy.claimed]
    if 10 not in [started[p] for p in spy.claimed]:
        here.append(corpus[10].decode())
    assert sorted(local_parses) == sorted(here)
    spy.assert_all_reaped()


def test_a_given_pool_reads_its_items_not_the_positions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        corpus: list[bytes], expected: list[AnalyzedFile],
                                                        local_parses: list[str]) -> None:
    """A given pool was started on what its ``load`` reads ``datas[i]`` from (``run`` starts it on paths)."""
    history = [b"CREATE TABLE h1 (a int);\n", b"CREATE TABLE h2 (b int);\n", b"SELECT 1;\n"]
    everything = history + corpus
    spy = _Spy(monkeypatch, gate=_Gate(tmp_path / "gate"))
    with _deadline():
        pool = spy.Pool(1, load=everything.__getitem__)
        pool.start(range(len(history), len(everything)), PG)
        got = list(iter_analysed(corpus, LintOptions(jobs=2, cache=False), pool=pool))
    assert got == expected
    assert spy.started == [[len(history) + i for i in range(len(corpus))]]  # every file, duplicates too
    assert spy.delivered
    spy.assert_shared_once()
    [started] = spy.started
    # Every key matched: this process parsed only what it claimed.
    assert sorted(local_parses) == sorted(everything[started[p]].decode() for p in spy.claimed)
    spy.assert_all_reaped()


def test_a_given_pool_with_little_to_parse_is_used_then_closed(monkeypatch: pytest.MonkeyPatch,
                                                               corpus: list[bytes],
                                                               expected: list[AnalyzedFile]) -> None:
    """Whether few files are worth workers is ``_early_pool``'s decision: a started pool is used as given."""
    few = corpus[:3]
    spy = _Spy(monkeypatch)
    with _deadline():
        pool = spy.Pool(2, load=few.__getitem__)
        pids = list(pool.pids)
        pool.start(range(3), PG)
        assert list(iter_analysed(few, LintOptions(jobs=3, cache=False), pool=pool)) == expected[:3]
    assert spy.pools == [pool]  # no other pool forked
    _assert_closed(pool, pids)


def test_closing_the_iterator_early_reaps_the_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      corpus: list[bytes], expected: list[AnalyzedFile]) -> None:
    spy = _Spy(monkeypatch, gate=_Gate(tmp_path / "gate"))
    with _deadline():
        with closing(iter_analysed(corpus * 3, LintOptions(jobs=3, cache=False))) as it:
            assert next(it) == expected[0]
            assert len(spy.pids) == 2 and all(pool.pids for pool in spy.pools)  # not closed yet
    spy.assert_all_reaped()


def test_second_run_reads_everything_from_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    corpus: list[bytes], expected: list[AnalyzedFile],
                                                    local_parses: list[str]) -> None:
    spy = _Spy(monkeypatch, gate=_Gate(tmp_path / "gate"))
    opts = LintOptions(jobs=2, cache=True, cache_dir=tmp_path / "cache")
    first_cache = Cache(opts.cache_dir)
    with _deadline():
        first = analyze_all(corpus, opts, cache=first_cache)
    first_cache.close()
    assert first_cache.hits == 0
    assert len(spy.pools) == 1
    assert spy.claimed and spy.delivered  # the cache got this process's pickles and the worker's
    assert first == expected
    spy.assert_all_reaped()

    local_parses.clear()
    second_cache = Cache(opts.cache_dir)
    with _deadline():
        second = analyze_all(corpus, opts, cache=second_cache)
    second_cache.close()
    assert second_cache.hits == len(corpus) and second_cache.misses == 0
    assert len(spy.pools) == 1  # nothing left to parse: no pool
    assert local_parses == []
    assert second == expected


def _history_and_new(tmp_path: Path, corpus: list[bytes]) -> tuple[list[Path], list[Path]]:
    from .helpers import write_history

    valid = [d for d in corpus if b"broken" not in d]
    history = write_history(tmp_path / "m", [d.decode() for d in valid[:6]])
    new = write_history(tmp_path / "m", [d.decode() for d in valid[6:]], start=7)
    assert len(new) >= engine.PARALLEL_THRESHOLD
    return history, new


def test_cold_lint_run_with_early_workers_equals_a_serial_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              corpus: list[bytes], local_parses: list[str]) -> None:
    """Without a cache the pool is forked before the files are read; its workers read the paths themselves."""
    history, new = _history_and_new(tmp_path, corpus)
    serial = engine.run(new, history, LintOptions(jobs=1, cache=False), root=tmp_path)
    local_parses.clear()
    spy = _Spy(monkeypatch, gate=_Gate(tmp_path / "gate"))
    with _deadline():
        parallel = engine.run(new, history, LintOptions(jobs=2, cache=False), root=tmp_path)
    assert len(spy.pools) == 1 and spy.failures == []
    [started] = spy.started
    assert all(isinstance(item, str) for item in started)  # paths, read by the workers
    assert set(started) <= {os.fspath(p) for p in [*history, *new]}
    assert spy.claimed and spy.delivered
    spy.assert_shared_once()
    assert sorted(local_parses) == sorted(Path(started[p]).read_text() for p in spy.claimed)  # every key matched
    spy.assert_all_reaped()
    assert parallel.to_dict() == serial.to_dict()
    assert serial.findings  # the comparison is not between two empty results


def test_lint_run_with_workers_equals_a_serial_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   corpus: list[bytes], local_parses: list[str]) -> None:
    """With the history's schema cached, ``run`` gives the pool only the new files."""
    history, new = _history_and_new(tmp_path, corpus)
    serial = engine.run(new, history, LintOptions(jobs=1, cache=False), root=tmp_path)
    spy = _Spy(monkeypatch, gate=_Gate(tmp_path / "gate"))
    opts = LintOptions(jobs=2, cache=True, cache_dir=tmp_path / "cache")
    engine.run([], history, opts, root=tmp_path)  # caches the history's schema only
    assert spy.pools == []
    local_parses.clear()
    with _deadline():
        parallel = engine.run(new, history, opts, root=tmp_path)
    assert len(spy.pools) == 1 and spy.failures == []  # forked late: the cache file existed
    [started] = spy.started
    assert len(started) >= engine.PARALLEL_THRESHOLD
    assert set(started) <= set(range(len(new)))  # indexes into the new files only
    assert spy.claimed and spy.delivered
    spy.assert_shared_once()
    assert sorted(local_parses) == sorted(new[started[p]].read_text() for p in spy.claimed)
    spy.assert_all_reaped()
    assert parallel.to_dict() == serial.to_dict()
    assert serial.findings


@pytest.mark.parametrize("bad", ["unparseable", "not-utf8"])
def test_a_lint_run_that_fails_midway_reaps_its_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        corpus: list[bytes], bad: str) -> None:
    """A new file that cannot be parsed (judging stops there) or read (the pool had been started already)."""
    from veza_canary.errors import LintInputError

    history, new = _history_and_new(tmp_path, corpus)
    if bad == "unparseable":
        new[3].write_bytes(b"CREATE TABLE broken (a int, b numeric(12,2;\n")
    else:
        new[3].write_bytes(b"CREATE TABLE t (a int); -- \xff\n")
    spy = _Spy(monkeypatch)
    with _deadline(), pytest.raises(LintInputError, match=new[3].name):
        engine.run(new, history, LintOptions(jobs=3, cache=False), root=tmp_path)
    assert len(spy.pools) == 1 and len(spy.pids) == 2  # forked before the files were read
    # Started with every path before any file was read (a cold run parses them all).
    assert len(spy.started) == 1 and len(spy.started[0]) == len(history) + len(new)
    spy.assert_all_reaped()


# --- forking ahead ---------------------------------------------------------------------------------


def _paths(n: int) -> list[Path]:
    return [Path(f"{i:06d}_m.up.sql") for i in range(n)]


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "no-cache-file-yet"])
def test_early_pool_takes_the_preforked_pool_when_cold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       cache: bool) -> None:
    spy = _Spy(monkeypatch)
    opts = LintOptions(jobs=2, cache=cache, cache_dir=tmp_path / "cache")
    with _deadline():
        forked.prefork(1)
        preforked = forked._PREFORKED
        assert preforked is not None
        pids = list(preforked.pids)
        pool = engine._early_pool(_paths(engine.PARALLEL_THRESHOLD), opts, Cache(opts.cache_dir, enabled=cache))
        assert pool is preforked
        assert forked.take_prefork() is None
        assert spy.pools == []  # nothing new forked
        pool.close()
    _assert_closed(pool, pids)


def test_early_pool_forks_when_cold_and_nothing_was_preforked(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(monkeypatch)
    opts = LintOptions(jobs=3, cache=False)
    with _deadline():
        pool = engine._early_pool(_paths(engine.PARALLEL_THRESHOLD), opts, Cache(enabled=False))
        assert pool is not None and spy.pools == [pool]
        assert len(spy.pids) == 2
        pool.close()
    spy.assert_all_reaped()


@pytest.mark.parametrize("why", ["cache-file-exists", "too-few-files", "one-job"])
def test_early_pool_closes_a_preforked_pool_it_does_not_want(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             why: str) -> None:
    spy = _Spy(monkeypatch)
    cache_dir = tmp_path / "cache"
    n, jobs = engine.PARALLEL_THRESHOLD, 2
    if why == "cache-file-exists":
        cache_dir.mkdir()
        (cache_dir / "cache.sqlite3").touch()
    elif why == "too-few-files":
        n -= 1
    else:
        jobs = 1
    opts = LintOptions(jobs=jobs, cache=True, cache_dir=cache_dir)
    with _deadline():
        forked.prefork(1)
        preforked = forked._PREFORKED
        assert preforked is not None
        pids = list(preforked.pids)
        assert engine._early_pool(_paths(n), opts, Cache(cache_dir)) is None
    assert forked.take_prefork() is None
    assert spy.pools == []
    _assert_closed(preforked, pids)


@pytest.fixture
def cold_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache home (no cache file yet), two CPUs by default, and cwd a repository whose
    ``migrations`` directory is just big enough to be worth a worker."""
    repo = tmp_path / "repo"
    (repo / "migrations").mkdir(parents=True)
    for i in range(engine.PARALLEL_THRESHOLD):
        (repo / "migrations" / f"{i + 1:06d}_m.up.sql").write_text("SELECT 1;\n")
        (repo / "migrations" / f"{i + 1:06d}_m.down.sql").write_text("SELECT 1;\n")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MIGRATIONS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(engine, "default_jobs", lambda: 2)
    monkeypatch.setattr(forked, "default_jobs", lambda: 2)
    return tmp_path / "xdg" / "veza-canary" / "lint"


def _preforked_workers() -> int:
    """Workers of the pool forked ahead (0: none), which is then closed and checked reaped."""
    pool = forked.take_prefork()
    if pool is None:
        return 0
    pids = list(pool.pids)
    pool.close()
    _assert_closed(pool, pids)
    return len(pids)


@pytest.mark.parametrize(("argv", "workers"), [
    (["lint-migrations", "--all", "--no-cache", "-j", "2"], 1),
    (["lint-migrations", "--all", "-j", "2"], 1),  # no cache file yet
    (["lint-migrations", "--all"], 1),  # default jobs: the CPUs
    (["--log-format", "json", "-v", "lint-migrations", "-j3"], 2),
    (["lint-migrations", "--jobs=3", "--no-cache"], 2),
    (["lint-migrations", "--jobs", "2", "migrations/000001_a.up.sql"], 1),
    (["lint-migrations", "--help", "-j", "2"], 0),
    (["lint-migrations", "--explain", "VC101", "-j", "2"], 0),
    (["lint-migrations", "--explain=VC101", "-j", "2"], 0),
    (["lint-migrations", "--list-rules", "-j", "2"], 0),
    (["lint-migrations", "--all", "--no-cache", "-j", "1"], 0),
    (["lint-migrations", "--all", "--no-cache", "-j", "many"], 0),  # the command reports the bad value
    (["deploy", "-j", "2", "--no-cache"], 0),
    (["status"], 0),
    (["--log-format", "lint-migrations"], 0),  # the option's value, not the command
    (["--version"], 0),
    ([], 0),
])
def test_prefork_if_cold(cold_home: Path, argv: list[str], workers: int) -> None:
    with _deadline():
        launch.prefork_if_cold(argv)
        assert _preforked_workers() == workers


@pytest.mark.parametrize(("argv", "workers"), [
    (["lint-migrations", "--all", "-j", "2"], 0),  # likely warm: the command reads the cache
    (["lint-migrations", "--all", "--no-cache", "-j", "2"], 1),
])
def test_prefork_if_cold_with_a_cache_file(cold_home: Path, argv: list[str], workers: int) -> None:
    cold_home.mkdir(parents=True)
    (cold_home / "cache.sqlite3").touch()
    with _deadline():
        launch.prefork_if_cold(argv)
        assert _preforked_workers() == workers


def test_launcher_knows_where_the_cache_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from veza_canary.migrations.cache import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert launch.cache_file() == str(default_cache_dir() / "cache.sqlite3")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert launch.cache_file() == str(default_cache_dir() / "cache.sqlite3")


def test_main_discards_workers_the_command_never_took(monkeypatch: pytest.MonkeyPatch, cold_home: Path) -> None:
    from veza_canary.cli import _common

    made: list[list[int]] = []
    real_prefork = forked.prefork

    def recording(workers: int) -> None:
        real_prefork(workers)
        assert forked._PREFORKED is not None
        made.append(list(forked._PREFORKED.pids))

    monkeypatch.setattr(forked, "prefork", recording)
    monkeypatch.setattr(_common, "fast_exit_requested", lambda: False)  # never os._exit the test run
    # A bad --format fails before the lint starts: the forked workers are never taken.
    monkeypatch.setattr("sys.argv", ["veza-canary", "lint-migrations", "--no-cache", "-j", "2", "--format", "nope"])
    with _deadline(), pytest.raises(SystemExit) as exc:
        launch.main()
    assert exc.value.code not in (0, None)
    assert len(made) == 1 and len(made[0]) == 1
    assert forked.take_prefork() is None
    for pid in made[0]:
        _assert_reaped(pid)


# --- the GC while parsing -------------------------------------------------------------------------


def test_gc_tuned_turns_automatic_collection_off_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    assert gc.isenabled()
    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    monkeypatch.setattr(forked, "_GC_EVERY", 3)
    with forked.gc_tuned():
        assert not gc.isenabled()
        with forked.gc_tuned():  # nested: no change, and leaving it does not re-enable
            pass
        assert not gc.isenabled()
        for _ in range(7):
            forked.parsed()
        assert len(collections) == 2  # after the 3rd and the 6th file: cycles cannot pile up
    assert gc.isenabled()
    forked.parsed(10)  # outside: only counts
    assert len(collections) == 2


def test_gc_tuned_leaves_a_disabled_gc_disabled() -> None:
    import gc

    gc.disable()
    try:
        with forked.gc_tuned():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.fixture(autouse=True)
def _nothing_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """``launch.prefork_if_cold`` turns ``keep`` on for the whole process: never beyond one test here."""
    monkeypatch.setattr(forked, "_KEPT", None)


def test_keep_holds_objects_only_after_keep_until_exit() -> None:
    import weakref

    class Thing:
        pass

    a, b = Thing(), Thing()
    ra, rb = weakref.ref(a), weakref.ref(b)
    forked.keep(a)  # not asked to: nothing held
    del a
    assert ra() is None
    forked.keep_until_exit()
    forked.keep(b)
    del b
    assert rb() is not None  # held until the process ends


def test_a_lint_command_line_turns_keep_on(cold_home: Path) -> None:
    launch.prefork_if_cold(["status"])
    assert forked._KEPT is None
    launch.prefork_if_cold(["lint-migrations", "--help"])
    assert forked._KEPT == []


@pytest.mark.parametrize("args", [["--help"], ["--bogus"], ["--format", "nope", "--all"], ["-j", "0", "--all"]])
def test_the_lint_only_app_behaves_like_the_whole_cli(args: list[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``launch`` runs a lint with an app holding only that command: same output, same exit code."""
    from typer.testing import CliRunner

    from veza_canary import cli

    monkeypatch.chdir(tmp_path)
    whole = CliRunner().invoke(cli.build_app(), ["lint-migrations", *args])
    alone = CliRunner().invoke(cli.build_app(("lint",)), ["lint-migrations", *args])
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)
    assert whole.exit_code != 0 or "Usage" in whole.output


def test_a_small_or_missing_migrations_directory_is_not_worth_a_worker(cold_home: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small"
    small.mkdir()
    for i in range(engine.PARALLEL_THRESHOLD - 1):
        (small / f"{i:06d}_m.up.sql").write_text("SELECT 1;\n")
    with _deadline():
        for argv in (["lint-migrations", "--all", "--no-cache", "-j2", "--dir", str(small)],
                     ["lint-migrations", "--all", "--no-cache", "-j2", f"--migrations-dir={small}"],
                     ["lint-migrations", "--all", "--no-cache", "-j2", "--dir", "/nonexistent"]):
            launch.prefork_if_cold(argv)
            assert _preforked_workers() == 0, argv
        monkeypatch.setenv("MIGRATIONS_DIR", str(small))
        launch.prefork_if_cold(["lint-migrations", "--all", "--no-cache", "-j2"])
        assert _preforked_workers() == 0
        monkeypatch.setenv("MIGRATIONS_DIR", "migrations")  # the repository's: big enough
        launch.prefork_if_cold(["lint-migrations", "--all", "--no-cache", "-j2"])
        assert _preforked_workers() == 1


@pytest.mark.parametrize(("argv", "word"), [
    (["lint-migrations", "--all"], "lint-migrations"),
    (["--log-format", "json", "-v", "status"], "status"),
    (["--log-format", "lint-migrations", "deploy"], "deploy"),
    (["--version"], None),
    ([], None),
])
def test_launch_finds_the_command_word(argv: list[str], word: str | None) -> None:
    assert launch.command(argv) == word
