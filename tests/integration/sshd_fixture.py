"""A real OpenSSH server on 127.0.0.1 for the SSH transport tests.

Import the fixtures into a test module (``from tests.integration.sshd_fixture import sshd``);
this is deliberately not a conftest.py. Each server gets its own directory with
its host key, a client key, ``authorized_keys``, ``known_hosts`` (the right
``[127.0.0.1]:PORT`` line), the config and the server log. The server runs in
the foreground (``-D -e``) and is killed by PID, with every connection process
it forked.

Without sshd the tests skip, except under ``CI=true`` where they fail: CI must
never go green by skipping the only check of host-key verification.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


def require_sshd() -> None:
    """Skip (or fail under CI=true) when sshd cannot be used here."""
    problem = None
    if not SSHD.is_file() or not os.access(SSHD, os.X_OK):
        problem = f"{SSHD} is not installed (apt-get install openssh-server)"
    elif os.geteuid() != 0:
        problem = "sshd needs root here (privilege separation, login as the current user)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)


def generate_key(path: Path) -> str:
    """Write a new ed25519 private key (OpenSSH format, 0600) and return its public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = public.decode()
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    """One running sshd and everything a client needs to reach it."""

    workdir: Path
    port: int
    user: str
    client_key: Path
    host_public: str  # "ssh-ed25519 AAAA..."
    known_hosts: Path  # holds exactly the right line
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def hostkey_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    def known_hosts_line(self, public: str | None = None) -> str:
        return f"{self.hostkey_name} {public or self.host_public}\n"

    def transport(self, **kwargs: object):  # -> SSHTransport; import deferred so collection never needs paramiko
        from veza_canary.transport.ssh import SSHTransport

        kwargs.setdefault("user", self.user)
        kwargs.setdefault("port", self.port)
        kwargs.setdefault("key_file", self.client_key)
        kwargs.setdefault("known_hosts", [self.known_hosts])
        # Never read or write the real ~/.ssh or /etc/ssh from tests.
        kwargs.setdefault("user_known_hosts", self.workdir / "user_known_hosts")
        kwargs.setdefault("system_known_hosts", ())
        kwargs.setdefault("allow_agent", False)
        kwargs.setdefault("connect_timeout", 5.0)
        return SSHTransport(self.host, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def accepted_logins(self) -> int:
        return self.log().count("Accepted publickey")

    def connection_pids(self) -> list[int]:
        """Every process below the listener: per-connection sshd processes and the commands they run."""
        if self.proc is None:
            return []
        return _descendants(self.proc.pid)

    def kill_connections(self) -> None:
        """SIGKILL every connection (the listener keeps accepting new ones)."""
        for pid in self.connection_pids():
            _kill(pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        children = self.connection_pids()
        _kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill(self.proc.pid)
            self.proc.wait(timeout=5)
        for pid in children:
            _kill(pid)
        self.proc = None


def start_sshd(workdir: Path) -> Sshd:
    """Start sshd on a free port of 127.0.0.1 and wait until it answers with an SSH banner."""
    require_sshd()
    workdir.mkdir(parents=True, exist_ok=True)
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    host_public = generate_key(host_key)
    client_key = workdir / "id_ed25519"
    (workdir / "authorized_keys").write_text(generate_key(client_key) + "\n")
    user = _current_user()
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between free_port() and bind()
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\n"
            f"Port {port}\n"
            f"HostKey {host_key}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "UseDNS no\n"
            "LogLevel VERBOSE\n"
            f"AllowUsers {user}\n"
            "Subsystem sftp internal-sftp\n"
        )
        check = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            pytest.fail(f"sshd refused the test config: {check.stderr.strip()}", pytrace=False)
        log_path = workdir / "sshd.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - sshd keeps it; closed when the test ends
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=log_file, start_new_session=True)
        log_file.close()
        known_hosts = workdir / "known_hosts"
        server = Sshd(workdir=workdir, port=port, user=user, client_key=client_key, host_public=host_public,
                      known_hosts=known_hosts, log_path=log_path, proc=proc)
        known_hosts.write_text(server.known_hosts_line())
        if _wait_for_banner(port, proc, timeout=10):
            return server
        last_error = server.log().strip()[-500:]
        server.stop()
    pytest.fail(f"sshd did not start on 127.0.0.1: {last_error}", pytrace=False)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd for a test module. Tests that kill connections leave the listener running."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd of its own, for tests that stop the server or change its keys."""
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


# -- helpers -----------------------------------------------------------------------


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
