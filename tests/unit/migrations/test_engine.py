"""The run in one process: warm runs read only what is new; a changed history file is read again."""

from __future__ import annotations

from pathlib import Path

import pytest

from veza_canary.migrations import engine
from veza_canary.migrations.engine import LintOptions, run

from .helpers import codes, write_history


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = engine.read_sql

    def spy(path: Path, *, checked: bool = False) -> bytes:
        seen.append(path.name)
        return real(path, checked=checked)

    monkeypatch.setattr(engine, "read_sql", spy)
    return seen


def test_a_warm_run_reads_the_new_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "m"
    hist = write_history(d, [f"CREATE TABLE t{i} (id int, v text);" for i in range(5)])
    new = write_history(d, ["ALTER TABLE t1 DROP COLUMN v;"], start=6)
    opts = LintOptions(cache=True, cache_dir=tmp_path / "cache")
    first = run(new, hist, opts, root=tmp_path)
    seen = _reads(monkeypatch)
    second = run(new, hist, opts, root=tmp_path)
    assert seen == [new[0].name]
    assert second.to_dict() == first.to_dict() and codes(second) == ["VC101"]


def test_a_history_file_changed_on_disk_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "m"
    hist = write_history(d, ["CREATE TABLE u (id int);", "CREATE TABLE t (id int, v text);"])
    new = write_history(d, ["ALTER TABLE t ALTER COLUMN v TYPE varchar(20);"], start=3)
    opts = LintOptions(cache=True, cache_dir=tmp_path / "cache")
    assert codes(run(new, hist, opts, root=tmp_path)) == ["VC120"]  # text -> varchar(20) narrows
    hist[1].write_text("CREATE TABLE t (id int, v varchar(10));")
    seen = _reads(monkeypatch)
    assert codes(run(new, hist, opts, root=tmp_path)) == []  # varchar(10) -> varchar(20) widens
    assert hist[1].name in seen


def test_without_the_cache_every_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "m"
    hist = write_history(d, ["CREATE TABLE t (id int);"])
    new = write_history(d, ["ALTER TABLE t ADD COLUMN x int;"], start=2)
    seen = _reads(monkeypatch)
    run(new, hist, LintOptions(cache=False), root=tmp_path)
    assert sorted(seen) == sorted(p.name for p in [*hist, *new])
