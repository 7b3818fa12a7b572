"""Transports without a network: LocalTransport for real, IncusTransport over a recording fake host."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from veza_canary.errors import CommandFailed, CommandTimedOut, ConfigError, IncusError, TransportError
from veza_canary.transport import IncusTransport, LocalTransport, Result, Transport

# -- LocalTransport ------------------------------------------------------------------


@pytest.fixture
def local() -> LocalTransport:
    return LocalTransport()


def test_local_run_returns_a_result(local: LocalTransport) -> None:
    r = local.run(["echo", "hello"])
    assert isinstance(r, Result)
    assert (r.argv, r.exit_code, r.stdout, r.stderr, r.where, r.ok) == (("echo", "hello"), 0, "hello\n", "", "local",
                                                                       True)
    assert r.duration >= 0


def test_local_argv_items_are_stringified(local: LocalTransport, tmp_path: Path) -> None:
    assert local.run(["echo", 3, tmp_path]).stdout == f"3 {tmp_path}\n"  # type: ignore[list-item]


def test_local_empty_argv_is_refused(local: LocalTransport) -> None:
    with pytest.raises(ValueError, match="empty argv"):
        local.run([])


@pytest.mark.parametrize(("argv", "code"), [
    (["true"], 0),
    (["sh", "-c", "exit 3"], 3),
    (["no-such-command-veza-canary"], 127),
    (["sh", "-c", "kill -9 $$"], 137),
])
def test_local_exit_codes_follow_the_shell_convention(local: LocalTransport, argv: list[str], code: int) -> None:
    """Same numbers as over SSH and ``incus exec``: 127 not found, 128+N killed by signal N."""
    assert local.run(argv, check=False).exit_code == code


def test_local_not_executable_is_126(local: LocalTransport, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)  # no x bit at all: refused even for root
    assert local.run([str(script)], check=False).exit_code == 126


def test_local_check_false_returns_failures(local: LocalTransport) -> None:
    r = local.run(["sh", "-c", "echo out; echo err >&2; exit 4"], check=False)
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (4, "out\n", "err\n", False)


def test_local_command_failed_message_and_result(local: LocalTransport) -> None:
    with pytest.raises(CommandFailed) as info:
        local.run(["sh", "-c", "echo first >&2; echo 'last line' >&2; exit 3"])
    assert str(info.value) == "[local] sh -c 'echo first >&2; echo '\"'\"'last line'\"'\"' >&2; exit 3' exited 3: last line"
    assert info.value.result.exit_code == 3


def test_local_missing_command_is_command_failed_when_checked(local: LocalTransport) -> None:
    with pytest.raises(CommandFailed, match="no-such-command-veza-canary exited 127: .*command not found"):
        local.run(["no-such-command-veza-canary"])


def test_command_failed_message_redacts_secrets(local: LocalTransport) -> None:
    with pytest.raises(CommandFailed) as info:
        local.run(["sh", "-c", "exit 1", "password=hunter2", "https://user:pw@example.com/x"])
    assert "hunter2" not in str(info.value) and ":pw@" not in str(info.value)


@pytest.mark.parametrize("data", ["text in\n", b"bytes\x00in"])
def test_local_stdin(local: LocalTransport, data: str | bytes) -> None:
    out = local.run(["cat"], input=data).stdout
    assert out == (data if isinstance(data, str) else data.decode())


def test_local_no_input_means_eof_not_a_hang(local: LocalTransport) -> None:
    assert local.run(["cat"], timeout=5).stdout == ""


def test_local_timeout_raises_command_timed_out(local: LocalTransport) -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimedOut, match=r"^\[local\] sleep 30 did not finish within 0.3s$"):
        local.run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - start < 3


def test_local_timeout_kills_grandchildren_holding_the_pipes(local: LocalTransport, tmp_path: Path) -> None:
    """``sh -c 'sleep 30; ...'``: killing only sh would leave sleep holding stdout for 30 s."""
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(CommandTimedOut):
        local.run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait; echo done"], timeout=0.5)
    assert time.monotonic() - start < 3
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)


@pytest.mark.parametrize("mode", [0o755, 0o644, 0o600])
def test_local_push_sets_mode(local: LocalTransport, tmp_path: Path, mode: int) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"\x7fELF...")
    dst = tmp_path / "dst"
    local.push(src, str(dst), mode=mode)
    assert dst.read_bytes() == b"\x7fELF..."
    assert dst.stat().st_mode & 0o7777 == mode


def test_local_push_is_atomic(local: LocalTransport, tmp_path: Path) -> None:
    """The target is replaced by rename: an open reader keeps the old bytes, no temp file stays."""
    d = tmp_path / "install"
    d.mkdir()
    dst = d / "veza-api"
    dst.write_bytes(b"old")
    inode = dst.stat().st_ino
    src = tmp_path / "src"
    src.write_bytes(b"new" * 10000)
    with open(dst, "rb") as reader:
        local.push(src, str(dst), mode=0o755)
        assert reader.read() == b"old"
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_ino != inode
    assert [p.name for p in d.iterdir()] == ["veza-api"]


def test_local_push_create_dirs(local: LocalTransport, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    local.push(src, str(tmp_path / "a" / "b" / "f"), create_dirs=True)
    assert (tmp_path / "a" / "b" / "f").read_text() == "x"


def test_local_push_into_a_missing_dir_is_a_transport_error(local: LocalTransport, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    with pytest.raises(TransportError, match=r"^\[local\] push .*: No such file or directory$"):
        local.push(src, str(tmp_path / "missing" / "f"))


def test_local_push_of_a_missing_source_leaves_no_temp(local: LocalTransport, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(TransportError):
        local.push(tmp_path / "nope", str(d / "f"))
    assert list(d.iterdir()) == []


def test_local_create_dirs_failure_is_a_transport_error(local: LocalTransport, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(TransportError, match="push"):
        local.push(src, str(tmp_path / "file" / "sub" / "f"), create_dirs=True)


def test_local_pull(local: LocalTransport, tmp_path: Path) -> None:
    (tmp_path / "remote").write_bytes(b"data")
    local.pull(str(tmp_path / "remote"), tmp_path / "local")
    assert (tmp_path / "local").read_bytes() == b"data"
    with pytest.raises(TransportError, match="pull"):
        local.pull(str(tmp_path / "missing"), tmp_path / "local2")


def test_close_is_idempotent_and_transports_are_context_managers() -> None:
    with LocalTransport() as t:
        t.close()
    t.close()


# -- IncusTransport over a fake host ---------------------------------------------------


Reply = tuple[int, str, str]


class FakeHost(Transport):
    """A host transport that records every argv and answers from a handler (invoke's _Dummy(Runner))."""

    def __init__(self, handler: Callable[[tuple[str, ...]], Reply] | None = None, *, local: bool = False) -> None:
        self.name = "fake-local" if local else "ssh://deploy@incus-host:22"
        self.is_local = local
        self.handler = handler or (lambda argv: (0, "", ""))
        self.calls: list[tuple[str, ...]] = []
        self.inputs: list[bytes | None] = []
        self.timeouts: list[float | None] = []
        self.pushes: list[tuple[Path, str, int, bool]] = []
        self.pulls: list[tuple[str, Path]] = []
        self.closed = 0

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        self.calls.append(argv)
        self.inputs.append(input)
        self.timeouts.append(timeout)
        code, out, err = self.handler(argv)
        return code, out.encode(), err.encode()

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        self.pushes.append((local_path, remote_path, mode, create_dirs))

    def _pull(self, remote_path: str, local_path: Path) -> None:
        self.pulls.append((remote_path, local_path))

    def close(self) -> None:
        self.closed += 1


def test_incus_run_wraps_argv_in_incus_exec() -> None:
    host = FakeHost(lambda argv: (0, "hi\n", ""))
    r = IncusTransport("backend-api-1", host).run(["echo", "a b; c"], input="in", timeout=7)
    assert host.calls == [("incus", "exec", "backend-api-1", "--", "echo", "a b; c")]
    assert host.inputs == [b"in"] and host.timeouts == [7]
    assert (r.argv, r.stdout, r.where) == (("echo", "a b; c"), "hi\n", "ssh://deploy@incus-host:22/backend-api-1")


def test_incus_name_on_a_local_host() -> None:
    assert IncusTransport("haproxy", FakeHost(local=True)).name == "incus:haproxy"
    assert IncusTransport("haproxy").name == "incus:haproxy"


@pytest.mark.parametrize("code", [0, 3, 127, 137])
def test_incus_exit_codes_pass_through(code: int) -> None:
    t = IncusTransport("ct", FakeHost(lambda argv: (code, "", "")))
    assert t.run(["x"], check=False).exit_code == code


@pytest.mark.parametrize("stderr", [
    'Error: Failed to fetch instance "backend-api-9" in project "default": Instance not found\n',
    "Error: Instance not found\n",
    "Error: Instance is not running\n",
    'Error: The remote "nope" doesn\'t exist\n',
    "Error: The incus daemon doesn't appear to be started (socket path: /var/lib/incus/unix.socket)\n",
    "Error: Failed to connect to local daemon: x\n",
    "Error: Forbidden\n",
    "Error: You don't have the needed permissions to talk to the incus daemon (socket path: /x)\n",
])
def test_incus_own_errors_are_incus_errors_even_unchecked(stderr: str) -> None:
    t = IncusTransport("backend-api-9", FakeHost(lambda argv: (1, "", stderr)))
    with pytest.raises(IncusError, match=r"^\[backend-api-9\] incus: "):
        t.run(["true"], check=False)
    with pytest.raises(IncusError):
        t.run(["true"])


@pytest.mark.parametrize(("code", "stdout", "stderr"), [
    (1, "", "grep: nothing matched\n"),
    (1, "", "Error: connection refused by the API\n"),      # the command's own "Error:" line
    (1, "partial output\n", "Error: Instance not found\n"),  # stdout: the command ran
    (2, "", "Error: Instance not found\n"),                 # incus itself exits 1, never 2
    (127, "", "Error: Command not found\n"),                # missing inside the container
    (1, "", "Error: file does not exist\n"),
])
def test_a_commands_own_failure_is_a_plain_command_failed(code: int, stdout: str, stderr: str) -> None:
    t = IncusTransport("ct", FakeHost(lambda argv: (code, stdout, stderr)))
    with pytest.raises(CommandFailed) as info:
        t.run(["thing"])
    assert not isinstance(info.value, IncusError)
    assert t.run(["thing"], check=False).exit_code == code


@pytest.mark.parametrize("stderr", ["incus: command not found\n", "bash: line 1: incus: command not found\n",
                                    "sh: 1: incus: not found\n"])
def test_incus_missing_on_the_host_is_an_incus_error(stderr: str) -> None:
    t = IncusTransport("ct", FakeHost(lambda argv: (127, "", stderr)))
    with pytest.raises(IncusError, match=r"^\[ct\] incus is not installed on ssh://deploy@incus-host:22$"):
        t.run(["true"], check=False)


def test_incus_timeout_is_passed_to_the_host_and_its_timeout_surfaces() -> None:
    class SlowHost(FakeHost):
        def _run(self, argv, input, timeout):  # type: ignore[override]
            raise self._timed_out(argv, timeout, self.name)

    with pytest.raises(CommandTimedOut, match="incus exec ct -- sleep 9 did not finish within 2s"):
        IncusTransport("ct", SlowHost()).run(["sleep", "9"], timeout=2)


def _tmp_of(argv: tuple[str, ...]) -> str:
    return argv[-1]


def test_incus_push_on_a_local_host_pushes_to_a_temp_name_then_renames(tmp_path: Path) -> None:
    host = FakeHost(local=True)
    src = tmp_path / "veza-api"
    src.write_bytes(b"bin")
    IncusTransport("backend-api-2", host).push(src, "/opt/veza/backend-api/veza-api", mode=0o755)
    push, mv = host.calls
    assert push[:-1] == ("incus", "-q", "file", "push", "--mode", "0755", "--uid", "0", "--gid", "0", str(src))
    m = re.fullmatch(r"backend-api-2(/opt/veza/backend-api/\.veza-api\.veza-tmp-[0-9a-f]{12})", push[-1])
    assert m, push[-1]
    assert mv == ("incus", "exec", "backend-api-2", "--", "mv", "-f", "--", m.group(1), "/opt/veza/backend-api/veza-api")
    assert host.pushes == []  # nothing staged on a local host


def test_incus_push_create_dirs_and_mode() -> None:
    host = FakeHost(local=True)
    IncusTransport("ct", host).push("/src", "/etc/app/conf", mode=0o600, create_dirs=True)
    assert host.calls[0][4:11] == ("--mode", "0600", "--uid", "0", "--gid", "0", "--create-dirs")


def test_incus_push_over_a_remote_host_stages_and_cleans_up() -> None:
    host = FakeHost()
    IncusTransport("ct", host).push("/local/bin", "/opt/x/bin", mode=0o755)
    [(local, staged, mode, dirs)] = host.pushes
    assert (str(local), mode, dirs) == ("/local/bin", 0o600, False)
    assert re.fullmatch(r"/tmp/veza-canary-[0-9a-f]{16}", staged)
    push, rm, mv = host.calls
    assert push[:4] == ("incus", "-q", "file", "push") and push[-2] == staged
    assert push[-1].startswith("ct/opt/x/.bin.veza-tmp-")
    assert rm == ("rm", "-f", "--", staged)
    assert mv[:6] == ("incus", "exec", "ct", "--", "mv", "-f")


def test_incus_push_failure_is_an_incus_error_and_the_staged_copy_is_removed() -> None:
    def handler(argv: tuple[str, ...]) -> Reply:
        return (1, "", "Error: Instance not found\n") if argv[:4] == ("incus", "-q", "file", "push") else (0, "", "")

    host = FakeHost(handler)
    with pytest.raises(IncusError, match=r"^\[gone\] incus file push: Instance not found$"):
        IncusTransport("gone", host).push("/local/bin", "/opt/x/bin")
    assert host.calls[-1][:3] == ("rm", "-f", "--")
    assert not any("mv" in c for c in host.calls)


def test_incus_push_rename_failure_removes_the_temp_in_the_container() -> None:
    def handler(argv: tuple[str, ...]) -> Reply:
        return (1, "", "mv: cannot move: Is a directory\n") if "mv" in argv else (0, "", "")

    host = FakeHost(handler, local=True)
    with pytest.raises(CommandFailed, match="mv"):
        IncusTransport("ct", host).push("/src", "/opt/x/bin")
    tmp_target = host.calls[0][-1]
    # incus file delete, not exec rm: it also works when the container is stopped.
    assert host.calls[-1] == ("incus", "-q", "file", "delete", tmp_target)


def test_incus_push_into_a_stopped_container_is_an_incus_error_and_leaves_no_temp() -> None:
    def handler(argv: tuple[str, ...]) -> Reply:
        return (1, "", "Error: Instance is not running\n") if argv[1] == "exec" else (0, "", "")

    host = FakeHost(handler, local=True)
    with pytest.raises(IncusError, match=r"^\[ct\] incus: Instance is not running$"):
        IncusTransport("ct", host).push("/src", "/opt/x/bin")
    assert host.calls[-1][:4] == ("incus", "-q", "file", "delete")


def test_incus_pull_local_and_remote(tmp_path: Path) -> None:
    host = FakeHost(local=True)
    IncusTransport("ct", host).pull("/etc/hosts", tmp_path / "h")
    assert host.calls == [("incus", "-q", "file", "pull", "ct/etc/hosts", str(tmp_path / "h"))]

    remote = FakeHost()
    IncusTransport("ct", remote).pull("/etc/hosts", tmp_path / "h")
    pull, rm = remote.calls
    staged = pull[-1]
    assert pull[:5] == ("incus", "-q", "file", "pull", "ct/etc/hosts") and staged.startswith("/tmp/veza-canary-")
    assert remote.pulls == [(staged, tmp_path / "h")]
    assert rm == ("rm", "-f", "--", staged)


def test_incus_pull_error_is_an_incus_error() -> None:
    host = FakeHost(lambda argv: (1, "", "Error: Instance is not running\n"), local=True)
    with pytest.raises(IncusError, match="Instance is not running"):
        IncusTransport("ct", host).pull("/x", Path("/tmp/never"))


def test_incus_close_closes_the_host() -> None:
    host = FakeHost()
    IncusTransport("ct", host).close()
    assert host.closed == 1


# -- ssh:// URL parsing (no network) ---------------------------------------------------


def test_parse_ssh_url() -> None:
    from veza_canary.transport.ssh import parse_ssh_url

    assert parse_ssh_url("ssh://deploy@10.0.0.5") == ("deploy", "10.0.0.5", 22)
    assert parse_ssh_url("ssh://deploy@incus.example:2222/") == ("deploy", "incus.example", 2222)
    assert parse_ssh_url("ssh://host") == (None, "host", 22)
    assert parse_ssh_url("ssh://d@[::1]:2200") == ("d", "::1", 2200)


@pytest.mark.parametrize("url", ["http://h", "ssh://u:secret@h", "ssh://u@h/path", "ssh://u@h:99999", "ssh://u@"])
def test_parse_ssh_url_refuses_bad_urls_without_echoing_passwords(url: str) -> None:
    from veza_canary.transport.ssh import parse_ssh_url

    with pytest.raises(ConfigError, match="^INCUS_HOST: ") as info:
        parse_ssh_url(url)
    assert "secret" not in str(info.value)


def test_ssh_transport_name_and_host_transport_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.settings_helper import make_settings
    from veza_canary.transport import host_transport
    from veza_canary.transport.ssh import SSHTransport

    assert isinstance(host_transport(make_settings()), LocalTransport)
    assert isinstance(host_transport(make_settings(incus_host="local")), LocalTransport)
    t = host_transport(make_settings(incus_host="ssh://deploy@10.0.0.5:2222"))
    assert isinstance(t, SSHTransport) and t.name == "ssh://deploy@10.0.0.5:2222" and not t.is_local
    t.close()
    t.close()  # idempotent, and never connected


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- the combined commands: verify+chmod+rename in one exec, the HAProxy command fed by the node's shell ------


def _node(tmp_path: Path, transport: Transport | None = None):  # noqa: ANN202
    from veza_canary.node import Node

    d = tmp_path / "install"
    d.mkdir(exist_ok=True)
    return Node("n1", transport or LocalTransport(), install_dir=str(d), restart_argv=("true",),
                health_url="http://127.0.0.1:1/")


def _artifact(tmp_path: Path, body: bytes) -> tuple[Path, str]:
    import hashlib

    p = tmp_path / f"art-{hashlib.sha256(body).hexdigest()[:8]}"
    p.write_bytes(body)
    return p, hashlib.sha256(body).hexdigest()


def test_install_script_verifies_chmods_and_renames_for_real(tmp_path: Path) -> None:
    """INSTALL_SCRIPT run by a real sh: the binary lands with mode 0755 and no temp is left."""
    node = _node(tmp_path)
    art, sha = _artifact(tmp_path, b"#!/bin/sh\necho v2\n")
    assert node.install(art, sha) is True
    target = Path(node.binary_path)
    assert target.read_bytes() == art.read_bytes() and target.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in target.parent.iterdir()) == ["veza-api"]
    assert node.install(art, sha) is False


def test_install_script_refuses_a_wrong_sha256_and_leaves_the_old_binary(tmp_path: Path) -> None:
    from veza_canary.errors import PushError

    node = _node(tmp_path)
    Path(node.binary_path).write_bytes(b"old")
    art, _sha = _artifact(tmp_path, b"new bytes")
    with pytest.raises(PushError, match=r"corrupted: veza-install: sha256 of .* is [0-9a-f]{64}, expected 0{64}"):
        node.install(art, "0" * 64)
    assert Path(node.binary_path).read_bytes() == b"old"
    assert sorted(p.name for p in Path(node.install_dir).iterdir()) == ["veza-api"]


def test_install_script_values_are_never_shell_code(tmp_path: Path) -> None:
    """The sha256 and the paths are positional parameters: quotes, $() and ; in them stay data."""
    from veza_canary.node import INSTALL_SCRIPT

    evil = tmp_path / "a b;$(touch pwned)'\"x"
    evil.write_bytes(b"data")
    target = tmp_path / "t$(touch pwned2)"
    import hashlib

    sha = hashlib.sha256(b"data").hexdigest()
    r = LocalTransport().run(("sh", "-c", INSTALL_SCRIPT, "veza-install", sha, str(evil), str(target)))
    assert r.ok and target.read_bytes() == b"data"
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists() and not Path("pwned2").exists()


class Recorder(Transport):
    """Records argv and pushes; runs every command as a success (the node's commands, not their effect)."""

    name = "rec"

    def __init__(self, sha_of_installed: str = "") -> None:
        self.calls: list[tuple[str, ...]] = []
        self.pushes: list[tuple[str, bool]] = []
        self.sha_of_installed = sha_of_installed

    def push(self, local_path, remote_path, *, mode=0o644, create_dirs=False, atomic=True):  # type: ignore[no-untyped-def,override]
        self.pushes.append((remote_path, atomic))
        super().push(local_path, remote_path, mode=mode, create_dirs=create_dirs, atomic=atomic)

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        self.calls.append(argv)
        if argv[0] == "sha256sum":
            return 0, f"{self.sha_of_installed or 'f' * 64}  {argv[-1]}\n".encode(), b""
        return 0, b"", b""

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        pass


def test_install_is_three_round_trips_and_the_push_is_not_renamed_twice(tmp_path: Path) -> None:
    from veza_canary.node import INSTALL_SCRIPT, TMP_PREFIX

    t = Recorder()
    node = _node(tmp_path, t)
    art, sha = _artifact(tmp_path, b"new")
    assert node.install(art, sha) is True
    [(tmp, atomic)] = t.pushes
    assert atomic is False and tmp.startswith(f"{node.install_dir}/{TMP_PREFIX}")
    assert t.calls == [("sha256sum", "--", node.binary_path),
                       ("sh", "-c", INSTALL_SCRIPT, "veza-install", sha, tmp, node.binary_path)]


def test_incus_push_not_atomic_skips_the_transports_own_rename(tmp_path: Path) -> None:
    host = FakeHost(local=True)
    IncusTransport("ct", host).push("/src", "/opt/x/.veza-api.new-abc", mode=0o755, atomic=False)
    assert host.calls == [("incus", "-q", "file", "push", "--mode", "0755", "--uid", "0", "--gid", "0", "/src",
                           "ct/opt/x/.veza-api.new-abc")]


def test_haproxy_command_is_fed_to_socat_by_a_constant_script(tmp_path: Path) -> None:
    """SOCAT_SCRIPT with a real sh and socat against a socket answering like HAProxy; the command is data."""
    import shutil
    import socket
    import threading

    from veza_canary.haproxy import SOCAT_SCRIPT, IncusSocat

    if not shutil.which("socat"):
        import os

        if os.environ.get("CI") == "true":  # bootstrap installs it: a missing socat is a broken CI, never a skip
            pytest.fail("socat not installed")
        pytest.skip("socat not installed")
    path = str(tmp_path / "admin.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                data += conn.recv(4096)
            got.append(data)
            conn.sendall(b"reply to " + data + b"\n")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    cmd = "show stat api_pool 4 2; show info $(touch pwned) '\"%s"
    sock = IncusSocat(LocalTransport(), path, timeout=10)
    assert sock.send(cmd) == f"reply to {cmd}\n\n"
    th.join(5)
    srv.close()
    assert got == [cmd.encode() + b"\n"] and not Path("pwned").exists()
    assert SOCAT_SCRIPT.count("$1") == 1 and SOCAT_SCRIPT.count("$2") == 1


# -- the Incus REST API path ----------------------------------------------------------------------


class FakeIncusd:
    """An httpx handler answering like incusd 6.0 for exec (record-output) and file pushes."""

    def __init__(self, *, instances: dict[str, str] | None = None) -> None:
        self.instances = instances or {"ct": "Running"}
        self.requests: list[tuple[str, str]] = []
        self.execs: list[list[str]] = []
        self.files: dict[str, bytes] = {}
        self.headers: list[dict[str, str]] = []
        self.dirs: set[str] = {"/", "/opt"}
        self.logs: dict[str, bytes] = {}
        self.result: tuple[int, bytes, bytes] | str = (0, b"out\n", b"")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.requests.append((method, path))
        m = re.fullmatch(r"/1.0/instances/([^/]+)(/.*)?", path)
        if m and m.group(1) not in self.instances:
            return _err(404, f'Failed to fetch instance "{m.group(1)}" in project "default": Instance not found')
        if method == "POST" and path.endswith("/exec"):
            if self.instances[m.group(1)] != "Running":  # type: ignore[union-attr]
                return _err(400, "Instance is not running")
            self.execs.append(json.loads(request.content)["command"])
            return httpx.Response(202, json={"type": "async", "operation": "/1.0/operations/op1", "error_code": 0})
        if path == "/1.0/operations/op1/wait":
            if isinstance(self.result, str):
                return httpx.Response(200, json={"error_code": 0, "metadata": {"status": "Failure", "err": self.result}})
            code, out, err = self.result
            base = "/1.0/instances/ct/logs/exec-output/exec_op1"
            self.logs[base + ".stdout"], self.logs[base + ".stderr"] = out, err
            return httpx.Response(200, json={"error_code": 0, "metadata": {"status": "Success", "err": "", "metadata": {
                "return": code, "output": {"1": base + ".stdout", "2": base + ".stderr"}}}})
        if "/logs/exec-output/" in path:
            if method == "GET":
                return httpx.Response(200, content=self.logs[path])
            self.logs.pop(path, None)
            return httpx.Response(200, json={"error_code": 0})
        if path.endswith("/files") and method == "POST":
            target = request.url.params["path"]
            self.headers.append(dict(request.headers))
            if request.headers.get("X-Incus-type") == "directory":
                self.dirs.add(target)
                return httpx.Response(200, json={"error_code": 0})
            if target.rsplit("/", 1)[0] not in self.dirs:
                return _err(404, "Not Found")
            self.files[target] = request.content
            return httpx.Response(200, json={"error_code": 0})
        if path.endswith("/files") and method == "DELETE":
            self.files.pop(request.url.params["path"], None)
            return httpx.Response(200, json={"error_code": 0})
        if method == "GET" and m:
            return httpx.Response(200, json={"error_code": 0, "metadata": {}})
        return _err(404, "Not Found")


def _err(code: int, msg: str) -> httpx.Response:
    return httpx.Response(code, json={"type": "error", "error_code": code, "error": msg})


def _api(d: FakeIncusd, clock=None):  # noqa: ANN001,ANN202
    from veza_canary.transport.incus_api import IncusAPI

    c = httpx.Client(transport=httpx.MockTransport(d), base_url="http://incus")
    return IncusAPI(c, clock=clock) if clock else IncusAPI(c)


def test_rest_exec_runs_under_timeout_and_reads_then_deletes_its_output() -> None:
    d = FakeIncusd()
    d.result = (3, b"hello\n", b"oops\n")
    api = _api(d)
    r = IncusTransport("ct", api=api).run(["printf", "a b"], timeout=7, check=False)
    api.flush()
    assert (r.exit_code, r.stdout, r.stderr, r.argv) == (3, "hello\n", "oops\n", ("printf", "a b"))
    assert d.execs == [["timeout", "-k", "5", "7", "printf", "a b"]]
    assert d.logs == {}  # both output logs deleted


def test_rest_exec_without_a_deadline_runs_the_argv_as_is() -> None:
    d = FakeIncusd()
    IncusTransport("ct", api=_api(d)).run(["true"], timeout=None)
    assert d.execs == [["true"]]


def test_rest_exec_with_stdin_uses_the_cli() -> None:
    d = FakeIncusd()
    host = FakeHost(lambda argv: (0, "ok", ""), local=True)
    IncusTransport("ct", host, api=_api(d)).run(["cat"], input="x")
    assert d.execs == [] and host.calls == [("incus", "exec", "ct", "--", "cat")]


def test_rest_errors_are_incus_errors_and_a_missing_command_is_127() -> None:
    d = FakeIncusd(instances={"ct": "Running", "off": "Stopped"})
    api = _api(d)
    with pytest.raises(IncusError, match=r"^\[gone\] incus: .*Instance not found$"):
        IncusTransport("gone", api=api).run(["true"], check=False)
    with pytest.raises(IncusError, match=r"^\[off\] incus: Instance is not running$"):
        IncusTransport("off", api=api).run(["true"], check=False)
    d.result = "Command not found"
    r = IncusTransport("ct", api=api).run(["nope"], timeout=None, check=False)
    assert (r.exit_code, r.stderr) == (127, "Error: Command not found\n")


def test_rest_exec_past_its_deadline_is_command_timed_out() -> None:
    d = FakeIncusd()
    d.result = (124, b"", b"")
    clock = iter([100.0, 102.5, 200.0, 200.1])
    api = _api(d, clock=lambda: next(clock))
    with pytest.raises(CommandTimedOut, match="sleep 9 did not finish within 2s"):
        IncusTransport("ct", api=api).run(["sleep", "9"], timeout=2)
    # The command's own exit 124 well before the deadline is just its exit status.
    assert IncusTransport("ct", api=api).run(["x"], timeout=2, check=False).exit_code == 124


def test_rest_push_sets_owner_and_mode_creates_dirs_and_renames(tmp_path: Path) -> None:
    d = FakeIncusd()
    src = tmp_path / "bin"
    src.write_bytes(b"\x7fELF")
    t = IncusTransport("ct", api=_api(d))
    t.push(src, "/opt/veza/backend-api/veza-api", mode=0o755, create_dirs=True)
    [tmp] = [e[-2] for e in d.execs]
    assert d.execs == [["timeout", "-k", "5", "60", "mv", "-f", "--", tmp, "/opt/veza/backend-api/veza-api"]]
    assert {"/opt/veza", "/opt/veza/backend-api"} <= d.dirs and d.files == {tmp: b"\x7fELF"}
    h = d.headers[-1]
    assert (h["x-incus-uid"], h["x-incus-gid"], h["x-incus-mode"], h["x-incus-type"]) == ("0", "0", "0755", "file")
    with pytest.raises(IncusError, match=r"^\[ct\] incus file push: Not Found$"):
        t.push(src, "/missing/dir/f", atomic=False)
    with pytest.raises(IncusError, match="Instance not found"):
        IncusTransport("gone", api=_api(d)).push(src, "/opt/f", create_dirs=True)


def test_rest_is_used_only_for_a_plain_local_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from veza_canary.transport import incus_api

    sentinel = _api(FakeIncusd())
    monkeypatch.setattr(incus_api.IncusAPI, "local", classmethod(lambda cls: sentinel))
    assert IncusTransport("ct").api is sentinel
    assert IncusTransport("ct", api=False).api is None
    assert IncusTransport("remote:ct").api is None
    assert IncusTransport("ct", FakeHost(local=True)).api is None  # a host of another kind: the CLI
    assert IncusTransport("ct", LocalTransport(), incus="/opt/incus/bin/incus").api is None


def test_rest_instance_pid_only_for_a_running_instance() -> None:
    from veza_canary.transport.incus_api import IncusAPI

    answers = {"up": {"status": "Running", "pid": 4242}, "off": {"status": "Stopped", "pid": 0},
               "vm-ish": {"status": "Running", "pid": -1}}

    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.split("/")[3]
        if name not in answers:
            return _err(404, "Instance not found")
        return httpx.Response(200, json={"error_code": 0, "metadata": answers[name]})

    api = IncusAPI(httpx.Client(transport=httpx.MockTransport(handler), base_url="http://incus"))
    assert [api.instance_pid(n) for n in ("up", "off", "vm-ish", "gone")] == [4242, None, None, None]
