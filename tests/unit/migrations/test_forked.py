"""Forked analysis workers (``forked.ForkedAnalysis``) and the engine's use of them.

A worker must give exactly what in-process analysis gives, must be ended and reaped
when closed early, and a worker that dies -- or a file it cannot analyse, or a file
that changed between its read and ours -- must cost nothing but time: the engine
analyses those files in-process instead.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from veza_canary.migrations import analyze, engine, forked
from veza_canary.migrations.analyze import analyze_text
from veza_canary.migrations.cache import Cache
from veza_canary.migrations.changes import AnalyzedFile
from veza_canary.migrations.engine import LintOptions, analyze_all, content_keys, fork_workers, iter_analysed
from veza_canary.migrations.forked import ForkedAnalysis, WorkerFailed

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

_REAL_WORK = forked._work
PG = "postgres"


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


def _key(data: bytes, dialect: str = PG) -> str:
    return content_keys([data], dialect)[0]


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return _corpus(max(60, engine.PARALLEL_THRESHOLD + 12))


@pytest.fixture(scope="module")
def expected(corpus: list[bytes]) -> list[AnalyzedFile]:
    return [analyze_text(d.decode("utf-8"), PG) for d in corpus]


@pytest.fixture
def local_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Texts this process analysed itself (a worker forked later counts in its own copy, not here)."""
    calls: list[str] = []
    real = analyze.analyze_text

    def counting(raw: str, dialect: str) -> AnalyzedFile:
        calls.append(raw)
        return real(raw, dialect)

    monkeypatch.setattr(analyze, "analyze_text", counting)
    return calls


# --- ForkedAnalysis ----------------------------------------------------------------------------


def test_worker_results_equal_in_process_analysis(corpus: list[bytes], expected: list[AnalyzedFile]) -> None:
    indexes = [9, 0, 17, 3, 40, 5]
    with _deadline(), ForkedAnalysis(corpus.__getitem__, PG) as fa:
        pid = fa.pid
        fa.assign(indexes)
        assert fa.count == len(indexes)
        got = [fa.result(k) for k in range(len(indexes))]
        assert fa.result(1) == got[1]  # re-reading a result is allowed
    assert [key for key, _blob in got] == [_key(corpus[i]) for i in indexes]
    assert [pickle.loads(blob) for _key_, blob in got] == [expected[i] for i in indexes]
    assert pickle.loads(got[2][1]).error is not None  # the broken file crossed over as an error
    assert fa.pid is None
    _assert_reaped(pid)


def test_worker_honours_the_dialect() -> None:
    datas = [b"CREATE TABLE `t` (`id` int NOT NULL AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB;"]
    with _deadline(), ForkedAnalysis(datas.__getitem__, "mysql") as fa:
        fa.assign([0])
        key, blob = fa.result(0)
    assert key == _key(datas[0], "mysql") != _key(datas[0], PG)
    got = pickle.loads(blob)
    assert got == analyze_text(datas[0].decode(), "mysql")
    assert got.statements[0].changes[0].name == ("", "t")


def test_a_file_the_worker_cannot_analyse_comes_back_empty(corpus: list[bytes],
                                                          expected: list[AnalyzedFile]) -> None:
    def load(i: int) -> bytes:
        if i == 1:
            return b"CREATE TABLE t (a int);\n-- \xff\xfe not UTF-8\n"  # the worker's decode raises
        if i == 2:
            raise FileNotFoundError("gone")
        return corpus[i]

    with _deadline(), ForkedAnalysis(load, PG) as fa:
        pid = fa.pid
        fa.assign([0, 1, 2, 3])
        got = [fa.result(k) for k in range(4)]
    assert got[1] == got[2] == ("", b"")
    assert [pickle.loads(got[k][1]) for k in (0, 3)] == [expected[0], expected[3]]  # the worker went on
    _assert_reaped(pid)


def test_assign_only_once() -> None:
    with _deadline(), ForkedAnalysis([b"SELECT 1;"].__getitem__, PG) as fa:
        fa.assign([0])
        with pytest.raises(RuntimeError):
            fa.assign([0])
        assert fa.result(0)[0] == _key(b"SELECT 1;")


@pytest.mark.parametrize("assigned", [None, []], ids=["never-assigned", "assigned-nothing"])
def test_an_idle_worker_is_ended_and_reaped(assigned: list[int] | None) -> None:
    with _deadline():
        fa = ForkedAnalysis([b"SELECT 1;"].__getitem__, PG)
        pid = fa.pid
        if assigned is not None:
            fa.assign(assigned)
        fa.close()
    assert fa.pid is None
    _assert_reaped(pid)


def test_closing_after_one_result_ends_and_reaps_the_worker(corpus: list[bytes],
                                                            expected: list[AnalyzedFile]) -> None:
    many = corpus * 6
    with _deadline():
        fa = ForkedAnalysis(many.__getitem__, PG)
        pid = fa.pid
        fa.assign(list(range(len(many))))
        assert pickle.loads(fa.result(0)[1]) == expected[0]
        fa.close()
        fa.close()  # idempotent
    assert fa.pid is None
    _assert_reaped(pid)


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
        fa = ForkedAnalysis(load, PG)
        pid = fa.pid
        fa.assign([0, 1, 2])
        assert pickle.loads(fa.result(0)[1]) == expected[0]  # sent before it got stuck
        fa.close()
    assert kills == [(pid, signal.SIGTERM)]
    _assert_reaped(pid)


def test_worker_that_dies_midway_raises_worker_failed(corpus: list[bytes], expected: list[AnalyzedFile]) -> None:
    def load(i: int) -> bytes:
        if i == 3:
            os._exit(1)  # in the worker: it dies on its fourth file
        return corpus[i]

    got: list[AnalyzedFile] = []
    with _deadline():
        fa = ForkedAnalysis(load, PG)
        pid = fa.pid
        fa.assign(list(range(10)))
        # It may die while its writer thread is mid-record: a cut-short result is the same failure.
        with pytest.raises(WorkerFailed, match=r"ended after \d of 10|cut short"):
            for k in range(10):
                got.append(pickle.loads(fa.result(k)[1]))
    assert len(got) <= 3 and got == expected[: len(got)]  # what did arrive is right
    assert fa.pid is None  # result() closed and reaped it
    _assert_reaped(pid)
    fa.close()


def test_a_worker_that_exits_without_results_raises_worker_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forked, "_work", lambda *a: os._exit(1))  # the child runs the patched module
    with _deadline():
        fa = ForkedAnalysis([b"SELECT 1;"].__getitem__, PG)
        pid = fa.pid
        fa.assign([0])
        with pytest.raises(WorkerFailed, match="after 0 of 1"):
            fa.result(0)
    _assert_reaped(pid)


def test_a_truncated_result_raises_worker_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def cut_short(task_fd: int, out_fd: int, load: Callable[[int], bytes], dialect: str) -> None:
        os.write(out_fd, forked._HEADER.pack(3, 1000) + b"abc" + b"x" * 10)

    monkeypatch.setattr(forked, "_work", cut_short)
    with _deadline():
        fa = ForkedAnalysis([b"SELECT 1;"].__getitem__, PG)
        pid = fa.pid
        fa.assign([0])
        with pytest.raises(WorkerFailed, match="cut short"):
            fa.result(0)
    _assert_reaped(pid)


# --- the engine ----------------------------------------------------------------------------------


class _Spy:
    """Records the workers the engine forks, what they are assigned, and the WorkerFailed they raise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.workers: list[ForkedAnalysis] = []
        self.pids: list[int | None] = []
        self.shares: list[list[int]] = []
        self.failures: list[WorkerFailed] = []
        spy = self

        class Recording(ForkedAnalysis):
            def __init__(self, load: Callable[[int], bytes], dialect: str) -> None:
                super().__init__(load, dialect)
                spy.workers.append(self)
                spy.pids.append(self.pid)

            def assign(self, indexes: list[int]) -> None:
                spy.shares.append(list(indexes))
                super().assign(indexes)

            def result(self, k: int) -> tuple[str, bytes]:
                try:
                    return super().result(k)
                except WorkerFailed as exc:
                    spy.failures.append(exc)
                    raise

        monkeypatch.setattr(engine, "ForkedAnalysis", Recording)

    def assert_all_reaped(self) -> None:
        assert all(w.pid is None for w in self.workers)
        for pid in self.pids:
            _assert_reaped(pid)


def _first_indexes(datas: Sequence[bytes]) -> list[int]:
    return sorted({datas.index(d) for d in datas})


def test_corpus_is_big_enough_for_workers(corpus: list[bytes]) -> None:
    assert len(set(corpus)) >= engine.PARALLEL_THRESHOLD
    assert len(set(corpus)) < len(corpus)


def test_analyze_all_with_workers_equals_in_process(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                    expected: list[AnalyzedFile], local_parses: list[str]) -> None:
    spy = _Spy(monkeypatch)
    with _deadline():
        parallel = analyze_all(corpus, LintOptions(jobs=2, cache=False))
    assert len(spy.workers) == 2
    assert sorted(i for share in spy.shares for i in share) == _first_indexes(corpus)  # each content once
    assert spy.failures == []
    assert local_parses == []  # everything came from the workers
    spy.assert_all_reaped()
    with _deadline():
        serial = analyze_all(corpus, LintOptions(jobs=1, cache=False))
    assert len(spy.workers) == 2  # jobs=1: no new worker
    assert len(local_parses) == len(_first_indexes(corpus))
    assert parallel == serial == expected


def test_below_the_threshold_no_worker_is_forked(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                 expected: list[AnalyzedFile]) -> None:
    spy = _Spy(monkeypatch)
    few = corpus[: engine.PARALLEL_THRESHOLD - 1]
    assert analyze_all(few, LintOptions(jobs=4, cache=False)) == expected[: len(few)]
    assert spy.workers == []


def test_a_failing_worker_falls_back_to_in_process_analysis(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                            expected: list[AnalyzedFile],
                                                            local_parses: list[str]) -> None:
    def dies_on_file_6(task_fd: int, out_fd: int, load: Callable[[int], bytes], dialect: str) -> None:
        def guarded(i: int) -> bytes:
            if i == 6:  # in the first worker's share (the first run of files)
                os._exit(3)
            return load(i)

        _REAL_WORK(task_fd, out_fd, guarded, dialect)

    monkeypatch.setattr(forked, "_work", dies_on_file_6)  # the children run the patched module
    spy = _Spy(monkeypatch)
    with _deadline():
        got = analyze_all(corpus, LintOptions(jobs=2, cache=False))
    assert len(spy.workers) == 2
    assert 6 in spy.shares[0]
    assert len(spy.failures) == 1
    assert got == expected
    # The dead worker's unsent files were parsed here; the other worker's were not.
    assert 0 < len(local_parses) <= len(spy.shares[0])
    assert corpus[6].decode() in local_parses
    spy.assert_all_reaped()


def test_every_worker_failing_still_gives_every_result(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                       expected: list[AnalyzedFile]) -> None:
    monkeypatch.setattr(forked, "_work", lambda *a: os._exit(1))
    spy = _Spy(monkeypatch)
    with _deadline():
        got = analyze_all(corpus, LintOptions(jobs=2, cache=False))
    assert len(spy.workers) == 2 and len(spy.failures) == 2
    assert got == expected
    spy.assert_all_reaped()


def test_a_file_changed_since_the_worker_read_it_is_analysed_here(corpus: list[bytes],
                                                                  expected: list[AnalyzedFile],
                                                                  local_parses: list[str]) -> None:
    changed = {10: b"ALTER TABLE t1 DROP COLUMN name;\n"}  # what the worker reads for file 10
    with _deadline():
        workers = fork_workers(lambda i: changed.get(i, corpus[i]), 2, PG)
        got = list(iter_analysed(corpus, LintOptions(jobs=2, cache=False), workers=workers))
    assert got == expected
    assert local_parses == [corpus[10].decode()]  # the key did not match: only file 10 was redone
    for w in workers:
        assert w.pid is None


def test_early_workers_see_the_files_at_an_offset(corpus: list[bytes], expected: list[AnalyzedFile],
                                                  local_parses: list[str]) -> None:
    history = [b"CREATE TABLE h1 (a int);\n", b"CREATE TABLE h2 (b int);\n", b"SELECT 1;\n"]
    everything = history + corpus
    with _deadline():
        workers = fork_workers(everything.__getitem__, 2, PG)
        got = list(iter_analysed(corpus, LintOptions(jobs=2, cache=False), workers=workers, offset=len(history)))
    assert got == expected
    assert local_parses == []  # every key matched: the workers read the right files


def test_early_workers_are_ended_when_there_is_little_to_parse(corpus: list[bytes],
                                                               expected: list[AnalyzedFile]) -> None:
    few = corpus[:3]
    with _deadline():
        workers = fork_workers(few.__getitem__, 2, PG)
        pids = [w.pid for w in workers]
        assert len(workers) == 2
        assert list(iter_analysed(few, LintOptions(jobs=2, cache=False), workers=workers)) == expected[:3]
    for pid in pids:
        _assert_reaped(pid)


def test_closing_the_iterator_early_reaps_the_workers(monkeypatch: pytest.MonkeyPatch, corpus: list[bytes],
                                                      expected: list[AnalyzedFile]) -> None:
    spy = _Spy(monkeypatch)
    with _deadline():
        with closing(iter_analysed(corpus * 3, LintOptions(jobs=2, cache=False))) as it:
            assert next(it) == expected[0]
        assert len(spy.workers) == 2
    spy.assert_all_reaped()


def test_second_run_reads_everything_from_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    corpus: list[bytes], expected: list[AnalyzedFile],
                                                    local_parses: list[str]) -> None:
    spy = _Spy(monkeypatch)
    opts = LintOptions(jobs=2, cache=True, cache_dir=tmp_path / "cache")
    first_cache = Cache(opts.cache_dir)
    with _deadline():
        first = analyze_all(corpus, opts, cache=first_cache)
    first_cache.close()
    assert first_cache.hits == 0
    assert len(spy.workers) == 2  # the cache was filled with the workers' pickles
    assert first == expected

    second_cache = Cache(opts.cache_dir)
    second = analyze_all(corpus, opts, cache=second_cache)
    second_cache.close()
    assert second_cache.hits == len(corpus) and second_cache.misses == 0
    assert len(spy.workers) == 2  # nothing left to parse: no worker
    assert local_parses == []
    assert second == expected


def test_lint_run_with_workers_equals_a_serial_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   corpus: list[bytes], local_parses: list[str]) -> None:
    """With the history's schema cached, ``run`` gives workers only the new files."""
    from .helpers import write_history

    valid = [d for d in corpus if b"broken" not in d]
    history = write_history(tmp_path / "m", [d.decode() for d in valid[:6]])
    new = write_history(tmp_path / "m", [d.decode() for d in valid[6:]], start=7)
    assert len(new) >= engine.PARALLEL_THRESHOLD

    serial = engine.run(new, history, LintOptions(jobs=1, cache=False), root=tmp_path)
    spy = _Spy(monkeypatch)
    opts = LintOptions(jobs=2, cache=True, cache_dir=tmp_path / "cache")
    engine.run([], history, opts, root=tmp_path)  # caches the history's schema only
    local_parses.clear()
    with _deadline():
        parallel = engine.run(new, history, opts, root=tmp_path)
    assert len(spy.workers) == 2 and spy.failures == []
    assigned = sorted(i for share in spy.shares for i in share)  # indexes into the new files
    assert len(assigned) >= engine.PARALLEL_THRESHOLD
    assert set(assigned) <= set(range(len(new)))  # contents the history run cached are not parsed again
    assert local_parses == []  # every key matched: the workers read the right files
    spy.assert_all_reaped()
    assert parallel.to_dict() == serial.to_dict()
    assert serial.findings  # the comparison is not between two empty results
