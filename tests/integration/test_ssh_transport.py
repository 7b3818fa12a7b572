"""SSHTransport against a real OpenSSH server on 127.0.0.1 (see sshd_fixture.py)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import paramiko
import pytest
import structlog

from tests.integration import sshd_fixture
from tests.integration.sshd_fixture import Sshd, generate_key
from tests.settings_helper import make_settings
from veza_canary.errors import CommandFailed, CommandTimedOut, SSHError, TransportError
from veza_canary.transport.ssh import SSHTransport

pytestmark = pytest.mark.integration

# The sshd fixtures live in sshd_fixture.py (tests/integration/conftest.py belongs to the lab).
sshd = sshd_fixture.sshd
fresh_sshd = sshd_fixture.fresh_sshd


@pytest.fixture
def ssh(sshd: Sshd):
    t = sshd.transport()
    yield t
    t.close()


def connection_of(t: SSHTransport) -> str:
    """The client side of the TCP connection a command ran over (``$SSH_CONNECTION``)."""
    return t.run(["sh", "-c", 'echo "$SSH_CONNECTION"']).stdout.split()[1]


def other_public_key(tmp_path: Path) -> str:
    return generate_key(tmp_path / "other_host_key")


# -- the fixture itself -------------------------------------------------------------


def test_missing_sshd_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sshd_fixture, "SSHD", tmp_path / "no-sshd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        sshd_fixture.require_sshd()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        sshd_fixture.require_sshd()


# -- commands ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["true"], 0),
        (["sh", "-c", "exit 3"], 3),
        (["no-such-command-veza-canary"], 127),
        (["sh", "-c", "kill -9 $$"], 137),  # exit-signal KILL -> 128 + 9, like a shell
    ],
)
def test_exit_status_passes_through(ssh: SSHTransport, argv: list[str], code: int) -> None:
    assert ssh.run(argv, check=False).exit_code == code


def test_nonzero_exit_raises_command_failed_carrying_the_result(ssh: SSHTransport) -> None:
    with pytest.raises(CommandFailed) as info:
        ssh.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert info.value.result.exit_code == 3
    assert "exited 3: boom" in str(info.value)
    assert str(info.value).startswith(f"[{ssh.name}]")


def test_stdout_and_stderr_are_kept_apart(ssh: SSHTransport) -> None:
    r = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 2"], check=False)
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 2)


def test_stdin_reaches_the_command(ssh: SSHTransport) -> None:
    assert ssh.run(["cat"], input="hello\nworld\n").stdout == "hello\nworld\n"


def test_no_stdin_is_end_of_file(ssh: SSHTransport) -> None:
    """A command reading stdin gets EOF at once instead of hanging."""
    assert ssh.run(["cat"], timeout=10).stdout == ""


def test_large_stdin_and_stdout_stream_both_ways(ssh: SSHTransport) -> None:
    """More than paramiko's 2 MiB window in both directions: no deadlock, no loss."""
    data = b"0123456789abcdef" * (5 * 1024 * 1024 // 16)
    r = ssh.run(["cat"], input=data, timeout=60)
    assert r.stdout.encode() == data


def test_argv_arrives_intact(ssh: SSHTransport) -> None:
    args = ["with space", "it's", 'dq"', "$HOME", "`id`", "$(id)", "*", "a\\b", "new\nline", "", "-n", "semi;colon"]
    r = ssh.run(["printf", "%s\\0", *args])
    assert r.stdout.split("\0")[:-1] == args


def test_shell_metacharacters_are_not_interpreted(ssh: SSHTransport, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    r = ssh.run(["echo", f"a; touch {marker}"])
    assert r.stdout == f"a; touch {marker}\n"
    ssh.run(["echo", f"$(touch {marker})", f"`touch {marker}`", f"| touch {marker}", f"&& touch {marker}"])
    assert not marker.exists()


def test_timeout_raises_command_timed_out_and_keeps_the_connection(ssh: SSHTransport, sshd: Sshd) -> None:
    before = connection_of(ssh)
    start = time.monotonic()
    with pytest.raises(CommandTimedOut, match=r"sleep 30 did not finish within 0.5s"):
        ssh.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - start < 3
    assert connection_of(ssh) == before
    # The channel was closed after asking sshd to kill the command (RFC 4254 "signal");
    # sshd honours it for ordinary users and logs why it refuses for root.
    if sshd.user == "root":
        deadline = time.monotonic() + 3
        while "session_signal_req" not in sshd.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "session_signal_req" in sshd.log()


def test_commands_of_one_run_share_one_connection(ssh: SSHTransport, sshd: Sshd) -> None:
    logins = sshd.accepted_logins()
    seen = {connection_of(ssh) for _ in range(5)}
    ssh.run(["true"])
    assert len(seen) == 1
    assert sshd.accepted_logins() == logins + 1


def test_connection_killed_mid_command_is_an_ssh_error_and_not_retried(
    ssh: SSHTransport, sshd: Sshd, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    ssh.run(["true"])  # connected
    killer = threading.Thread(target=lambda: (_wait_for(ran.exists), sshd.kill_connections()))
    killer.start()
    start = time.monotonic()
    with pytest.raises(SSHError, match="connection lost while running sh.*not retried"):
        ssh.run(["sh", "-c", f"echo x >> {ran}; sleep 30"], timeout=20)
    killer.join()
    assert time.monotonic() - start < 10
    time.sleep(0.3)
    assert ran.read_text() == "x\n"  # it ran exactly once


def test_connection_dead_between_commands_is_reopened(ssh: SSHTransport, sshd: Sshd) -> None:
    first = connection_of(ssh)
    sshd.kill_connections()
    time.sleep(0.2)
    assert connection_of(ssh) != first


def test_close_is_idempotent_and_a_later_command_reconnects(ssh: SSHTransport) -> None:
    first = connection_of(ssh)
    ssh.close()
    ssh.close()
    assert connection_of(ssh) != first


def test_server_down_is_an_ssh_error(fresh_sshd: Sshd) -> None:
    t = fresh_sshd.transport()
    fresh_sshd.stop()
    with pytest.raises(SSHError, match=r"^ssh://.*: cannot connect: connection refused"):
        t.run(["true"])


def test_wrong_client_key_is_an_authentication_error(sshd: Sshd, tmp_path: Path) -> None:
    generate_key(tmp_path / "stranger")
    with pytest.raises(SSHError, match=f"authentication failed for user {sshd.user}"), \
            sshd.transport(key_file=tmp_path / "stranger") as t:
        t.run(["true"])


def test_missing_key_file_is_named(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(SSHError, match="key file .*nope does not exist"), \
            sshd.transport(key_file=tmp_path / "nope") as t:
        t.run(["true"])


@pytest.fixture
def debug_logging():
    """Let debug events through (tests/conftest.py configures INFO) for the duration of a test."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(wrapper_class=saved["wrapper_class"])


def test_logs_hold_no_key_material(sshd: Sshd, debug_logging: None) -> None:
    secret = sshd.client_key.read_text().splitlines()[1]
    with structlog.testing.capture_logs() as logs, sshd.transport() as t:
        t.run(["true"])
        t.push(sshd.client_key, str(sshd.workdir / "copy-of-key"), mode=0o600)
    assert logs
    assert secret not in repr(logs)


# -- host keys --------------------------------------------------------------------


def test_unknown_host_key_is_refused_naming_known_hosts(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(SSHError) as info, sshd.transport(known_hosts=[empty]) as t:
        t.run(["true"])
    assert str(info.value) == (
        f"{sshd.url}: host key not in known_hosts (use SSH_ACCEPT_NEW_HOST_KEY=1 to trust it)"
    )
    assert "SHA256:" in (info.value.hint or "")
    assert isinstance(info.value.__cause__, paramiko.SSHException)
    assert not (sshd.workdir / "user_known_hosts").exists()


@pytest.mark.parametrize("key_kind", ["same-type", "other-type"])
def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path, key_kind: str) -> None:
    if key_kind == "same-type":
        wrong = other_public_key(tmp_path)
    else:
        ecdsa = paramiko.ECDSAKey.generate()
        wrong = f"{ecdsa.get_name()} {ecdsa.get_base64()}"
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line(wrong))
    with pytest.raises(SSHError, match="host key CHANGED.*refusing to connect") as info, \
            sshd.transport(known_hosts=[known]) as t:
        t.run(["true"])
    assert isinstance(info.value.__cause__, paramiko.BadHostKeyException)
    assert "ssh-keygen -R" in (info.value.hint or "")


def test_accept_new_trusts_an_unknown_host_and_saves_its_key(sshd: Sshd, tmp_path: Path) -> None:
    user_file = tmp_path / "dot-ssh" / "known_hosts"
    with sshd.transport(known_hosts=[], user_known_hosts=user_file, accept_new_host_key=True) as t:
        assert t.run(["echo", "ok"]).stdout == "ok\n"
    assert user_file.read_text() == sshd.known_hosts_line()
    assert oct(user_file.stat().st_mode & 0o777) == oct(0o600)
    # From now on the saved key is what strict mode checks against.
    with sshd.transport(known_hosts=[], user_known_hosts=user_file) as t:
        assert t.run(["true"]).ok


def test_accept_new_appends_without_clobbering_other_hosts(sshd: Sshd, tmp_path: Path) -> None:
    user_file = tmp_path / "known_hosts"
    other = "[10.1.2.3]:2200 " + other_public_key(tmp_path)
    user_file.write_text("# comment\n" + other)  # no trailing newline
    with sshd.transport(known_hosts=[], user_known_hosts=user_file, accept_new_host_key=True) as t:
        t.run(["true"])
    assert user_file.read_text() == "# comment\n" + other + "\n" + sshd.known_hosts_line()


def test_accept_new_never_accepts_a_changed_key(sshd: Sshd, tmp_path: Path) -> None:
    user_file = tmp_path / "known_hosts"
    user_file.write_text(sshd.known_hosts_line(other_public_key(tmp_path)))
    before = user_file.read_text()
    with pytest.raises(SSHError, match="host key CHANGED"), \
            sshd.transport(known_hosts=[], user_known_hosts=user_file, accept_new_host_key=True) as t:
        t.run(["true"])
    assert user_file.read_text() == before


def test_from_settings_verifies_against_the_user_known_hosts(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INCUS_HOST + SSH_* knobs; accept-new writes ~/.ssh/known_hosts (HOME points at a temp dir)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    settings = make_settings(incus_host=sshd.url, ssh_key_file=sshd.client_key, ssh_connect_timeout=5.0)
    with pytest.raises(SSHError, match="host key not in known_hosts"), SSHTransport.from_settings(settings) as t:
        t.run(["true"])
    accept = make_settings(incus_host=sshd.url, ssh_key_file=sshd.client_key, ssh_accept_new_host_key=True)
    with SSHTransport.from_settings(accept) as t:
        assert t.name == sshd.url
        t.run(["true"])
    assert (tmp_path / ".ssh" / "known_hosts").read_text() == sshd.known_hosts_line()
    with SSHTransport.from_settings(settings) as t:  # strict again, now known
        t.run(["true"])
    extra = make_settings(incus_host=sshd.url, ssh_key_file=sshd.client_key, ssh_known_hosts=sshd.known_hosts)
    (tmp_path / ".ssh" / "known_hosts").unlink()
    with SSHTransport.from_settings(extra) as t:  # SSH_KNOWN_HOSTS alone is enough
        t.run(["true"])


# -- files ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o755, 0o640, 0o600])
def test_push_sets_the_mode(ssh: SSHTransport, tmp_path: Path, mode: int) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"\x7fELF binary\x00\xff")
    dst = tmp_path / "remote" / "veza-api"
    dst.parent.mkdir()
    ssh.push(src, str(dst), mode=mode)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_mode & 0o7777 == mode


def test_push_creates_parent_directories_when_asked(ssh: SSHTransport, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    dst = tmp_path / "a" / "b" / "c" / "file"
    ssh.push(src, str(dst), mode=0o644, create_dirs=True)
    assert dst.read_text() == "x"


def test_push_without_create_dirs_fails_cleanly(ssh: SSHTransport, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    with pytest.raises(SSHError, match=r"push .* No such file"):
        ssh.push(src, str(tmp_path / "missing" / "file"))
    assert not (tmp_path / "missing").exists()


def test_push_replaces_the_target_atomically(ssh: SSHTransport, tmp_path: Path) -> None:
    """A new inode renamed over the old one; an open reader keeps the old bytes; no temp file left."""
    remote = tmp_path / "remote"
    remote.mkdir()
    dst = remote / "veza-api"
    dst.write_bytes(b"old binary")
    old_inode = dst.stat().st_ino
    src = tmp_path / "src"
    src.write_bytes(b"new binary" * 100_000)
    with open(dst, "rb") as reader:
        ssh.push(src, str(dst), mode=0o755)
        assert reader.read() == b"old binary"
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_ino != old_inode
    assert [p.name for p in remote.iterdir()] == ["veza-api"]


def test_push_of_a_missing_local_file_touches_nothing_remote(ssh: SSHTransport, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="push .*nope"):
        ssh.push(tmp_path / "nope", str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_pull_copies_a_remote_file(ssh: SSHTransport, tmp_path: Path) -> None:
    remote = tmp_path / "remote-file"
    remote.write_bytes(b"payload\x00\xff" * 1000)
    local = tmp_path / "local-file"
    ssh.pull(str(remote), local)
    assert local.read_bytes() == remote.read_bytes()


def test_pull_of_a_missing_file_is_an_ssh_error_and_leaves_nothing(ssh: SSHTransport, tmp_path: Path) -> None:
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    with pytest.raises(SSHError, match="pull .*missing: No such file"):
        ssh.pull(str(tmp_path / "missing"), local_dir / "x")
    assert list(local_dir.iterdir()) == []


def test_push_after_the_connection_died_reconnects(ssh: SSHTransport, sshd: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    ssh.push(src, str(tmp_path / "one"))
    sshd.kill_connections()
    time.sleep(0.2)
    ssh.push(src, str(tmp_path / "two"))
    assert (tmp_path / "two").read_text() == "x"


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
