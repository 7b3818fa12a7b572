"""The deploy history: append (atomic, concurrent-safe), read newest first, corrupt/missing never fatal."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from veza_canary.errors import TransportError
from veza_canary.history import MAX_LINE, NAME, History, HistoryEntry, HistoryRead, outcome_word, table
from veza_canary.lock import StateStore
from veza_canary.report import Report
from veza_canary.transport.base import Transport
from veza_canary.transport.local import LocalTransport


class FakeStateTransport(Transport):
    """The HAProxy host's state dir in memory: understands the commands History and StateStore send."""

    name = "fake:state"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.calls: list[tuple[str, ...]] = []
        self.lose_output = 0  # answer this many reads with exit 0 and no output (the Incus 6.0 quirk)
        self.down = False

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        self.calls.append(argv)
        if self.down:
            return 255, b"", b"ssh: connect to host incus: Connection refused\n"
        cmd = argv[0]
        if cmd == "dd":
            path = next(a[3:] for a in argv if a.startswith("of="))
            assert "oflag=append" in argv and "conv=notrunc" in argv and "iflag=fullblock" in argv
            if path.rsplit("/", 1)[0] not in self.dirs:
                return 1, b"", f"dd: failed to open '{path}': No such file or directory\n".encode()
            self.files[path] = self.files.get(path, b"") + (input or b"")
            return 0, b"", b""
        if cmd == "mkdir":
            self.dirs.add(argv[-1])
            return 0, b"", b""
        if cmd in ("tail", "cat"):
            path = argv[-1]
            if path not in self.files:
                return 1, b"", f"{cmd}: {path}: No such file or directory\n".encode()
            if self.lose_output:
                self.lose_output -= 1
                return 0, b"", b""
            lines = self.files[path].splitlines(keepends=True)
            if cmd == "tail":
                lines = lines[-int(argv[2]):]
            return 0, b"".join(lines), b""
        return 127, b"", f"{cmd}: command not found\n".encode()


def _entry(i: int, **kw) -> HistoryEntry:
    base = dict(at=f"2026-12-0{1 + i % 9}T10:00:0{i % 10}+00:00", operator=f"user{i}@host", artifact="/b/veza-api",
                sha256=f"{i:02d}" * 32, outcome="success", exit_code=0, nodes=("backend-api-2", "backend-api-1"),
                canary="backend-api-2", run_id=f"r{i}")
    return HistoryEntry(**{**base, **kw})


@pytest.fixture
def fake() -> tuple[History, FakeStateTransport]:
    t = FakeStateTransport()
    return History(StateStore(t, "/var/lib/veza-canary")), t


def test_entries_read_back_newest_first(fake):
    h, _t = fake
    for i in range(3):
        assert h.append(_entry(i)) is None
    got = h.read()
    assert [e["run_id"] for e in got.entries] == ["r2", "r1", "r0"]
    assert got.problems == [] and not got.missing
    assert got.entries[0]["nodes"] == ["backend-api-2", "backend-api-1"]


def test_the_first_append_creates_the_state_directory(fake):
    h, t = fake
    assert h.append(_entry(0)) is None
    assert [c[0] for c in t.calls] == ["dd", "mkdir", "dd"]
    assert h.append(_entry(1)) is None
    assert [c[0] for c in t.calls][3:] == ["dd"], "later appends are one command"


def test_limit_reads_only_the_newest_lines(fake):
    h, t = fake
    for i in range(5):
        h.append(_entry(i))
    got = h.read(limit=2)
    assert [e["run_id"] for e in got.entries] == ["r4", "r3"]
    assert t.calls[-1][:3] == ("tail", "-n", "2")
    assert len(h.read(limit=0).entries) == 5


def test_a_missing_record_is_no_history_yet_not_an_error(fake):
    h, _t = fake
    got = h.read()
    assert got.missing and got.entries == [] and got.problems == []
    assert table(got) == ["no history yet ([fake:state] /var/lib/veza-canary/history.jsonl)"]


def test_a_corrupt_line_is_reported_and_the_others_still_read(fake):
    h, t = fake
    h.append(_entry(0))
    t.files[h.path] += b'{"at": "2026-12-01", "half a line\n[1, 2]\n\n'
    h.append(_entry(1))
    got = h.read()
    assert [e["run_id"] for e in got.entries] == ["r1", "r0"]
    assert len(got.problems) == 2
    assert "entry 3 from the end is not a JSON object" in got.problems[0]
    assert any(line.startswith("! entry") for line in table(got))


def test_a_lost_output_is_read_again(fake):
    h, t = fake
    h.append(_entry(0))
    t.lose_output = 2
    assert [e["run_id"] for e in h.read().entries] == ["r0"]


def test_an_unreachable_host_fails_the_append_softly_and_the_read_loudly(fake):
    h, t = fake
    t.down = True
    problem = h.append(_entry(0))
    assert problem is not None and "Connection refused" in problem
    with pytest.raises(TransportError):
        h.read()


def test_an_entry_from_a_rolled_back_report_names_the_cause():
    rep = Report(command="deploy")
    rep.artifact = {"path": "/b/veza-api", "sha256": "ef" * 32, "size": 10}
    rep.settings = {"canary_node": "backend-api-2"}
    rep.event("rollback_start", node="backend-api-2", cause="sli-watch: p95 0.91s > 0.5s (token=abc123xyz)")
    rep.final_state = {"nodes": {"backend-api-2": {}, "backend-api-1": {}}}
    rep.outcome, rep.exit_code, rep.message, rep.ended_at = "CanaryRolledBack", 5, "sli-watch failed", "2026-12-06T04:00:00"
    e = HistoryEntry.from_report(rep, operator="alice@laptop", run_id="r9", report_path="/r.json", version="1.2")
    assert (e.outcome, e.exit_code, e.sha256, e.canary) == ("rolled-back", 5, "ef" * 32, "backend-api-2")
    assert e.nodes == ("backend-api-2", "backend-api-1") and e.version == "1.2" and e.report == "/r.json"
    assert e.cause.startswith("sli-watch: p95 0.91s") and "abc123xyz" not in e.cause


def test_a_successful_run_has_no_cause_and_a_failed_one_without_rollback_uses_its_message():
    ok = HistoryEntry.from_report({"exit_code": 0, "message": "deployed", "ended_at": "t"}, operator="a@b")
    assert ok.outcome == "success" and ok.cause == ""
    refused = HistoryEntry.from_report({"exit_code": 3, "message": "SLI already red\nbefore any change"},
                                       operator="a@b")
    assert refused.outcome == "preflight" and refused.cause == "SLI already red before any change"


@pytest.mark.parametrize(("code", "word"), [(0, "success"), (5, "rolled-back"), (6, "peer-failed"),
                                            (7, "rollback-failed"), (130, "interrupted"), (8, "locked"),
                                            (None, "unknown"), (77, "exit-77")])
def test_outcome_words(code, word):
    assert outcome_word(code) == word


def test_a_huge_entry_is_shortened_to_one_line():
    line = _entry(0, cause="x" * 100_000, nodes=tuple(f"n{i}" for i in range(5000))).to_line()
    assert len(line) <= MAX_LINE + 1 and line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["run_id"] == "r0"


def test_table_lists_who_what_and_why(fake):
    h, _t = fake
    h.append(_entry(0))
    h.append(_entry(1, outcome="rolled-back", exit_code=5, cause="p95 0.9s > 0.5s"))
    lines = table(h.read())
    assert lines[0].split() == ["WHEN", "WHO", "COMMAND", "ARTIFACT", "SHA256", "OUTCOME", "EXIT", "CAUSE"]
    assert "user1@host" in lines[1] and "rolled-back" in lines[1] and lines[1].endswith("p95 0.9s > 0.5s")
    assert "0000000000" in lines[2]


def test_empty_read_result_renders():
    assert table(HistoryRead(path="p"))[-1] == "(no entries)"


# -- the real thing: dd on this host ------------------------------------------------------


def test_local_transport_appends_and_reads_a_real_file(tmp_path: Path):
    h = History(StateStore(LocalTransport(), str(tmp_path / "state")))
    assert h.append(_entry(0)) is None  # creates the directory
    assert h.append(_entry(1)) is None
    assert [e["run_id"] for e in h.read().entries] == ["r1", "r0"]
    assert (tmp_path / "state" / NAME).read_text().count("\n") == 2


def test_concurrent_appenders_never_interleave_lines(tmp_path: Path):
    """Lines far above PIPE_BUF (4 KiB), 8 writers at once: every line whole (one O_APPEND write each)."""
    (tmp_path / "state").mkdir()
    h = History(StateStore(LocalTransport(), str(tmp_path / "state")))
    big = tuple(f"backend-api-{i}" for i in range(600))  # ~10 KiB per line
    errors: list[str] = []

    def writer(w: int) -> None:
        for k in range(10):
            p = h.append(_entry(w * 100 + k, nodes=big))
            if p:
                errors.append(p)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    raw = (tmp_path / "state" / NAME).read_bytes()
    assert len(raw.splitlines()[0]) > 8192
    got = h.read(limit=0)
    assert got.problems == [] and len(got.entries) == 80
    assert len({e["run_id"] for e in got.entries}) == 80


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, fake):
    """``veza-canary history`` over the fake state store, through the CLI's one fleet seam (the factory)."""
    import httpx
    import typer
    from typer.testing import CliRunner

    from veza_canary.cli import _common, root
    from veza_canary.cli import history as cli_history
    from veza_canary.fleet import Fleet
    from veza_canary.haproxy import HAProxy, UnixSocket
    from veza_canary.prometheus import Prometheus

    h, t = fake

    def factory(settings):
        # A real Fleet whose only part the command touches is the state store (nothing here does I/O).
        return Fleet(settings=settings, haproxy=HAProxy(UnixSocket("/nonexistent/admin.sock"), "api_pool"),
                     nodes={}, prom=Prometheus(httpx.Client(), "http://127.0.0.1:9"), lb_client=httpx.Client(),
                     store=h.store)

    for var in ("VEZA_CANARY_CONFIG", "STATE_DIR", "INCUS_HOST", "HAPROXY_LOCAL_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no ./veza-canary.toml here
    app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                      context_settings={"obj": _common.CliState(fleet_factory=factory)})
    app.callback()(root)
    cli_history.register(app)
    return (lambda *args: CliRunner().invoke(app, ["history", *args])), h, t


def test_history_command_prints_a_table_newest_first(cli):
    run, h, _t = cli
    h.append(_entry(0))
    h.append(_entry(1, outcome="rolled-back", exit_code=5, cause="p95 0.9s > 0.5s"))
    r = run()
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("WHEN") and "rolled-back" in lines[1] and "success" in lines[2]


def test_history_command_json_with_limit_and_a_corrupt_line(cli):
    run, h, t = cli
    h.append(_entry(0))
    t.files[h.path] += b"garbage\n"
    h.append(_entry(1))
    r = run("--format", "json", "--limit", "2")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [e["run_id"] for e in data["entries"]] == ["r1"]
    assert len(data["problems"]) == 1 and "not a JSON object" in r.stderr


def test_history_command_without_a_record_says_so_and_exits_0(cli):
    run, _h, _t = cli
    r = run()
    assert r.exit_code == 0 and r.stdout.startswith("no history yet")


def test_history_command_exits_10_when_the_state_host_is_unreachable(cli):
    run, _h, t = cli
    t.down = True
    r = run()
    assert r.exit_code == 10 and "Connection refused" in r.stderr
