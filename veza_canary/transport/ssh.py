"""SSHTransport: commands and files on another machine over one paramiko connection.

Used as the *host* transport of ``IncusTransport`` when ``INCUS_HOST`` is
``ssh://user@host[:port]``. The only module that imports paramiko; every
paramiko and socket error is translated here into ``SSHError`` with one line
that names the endpoint and says what to do.

- **Host keys are verified.** Keys come from the system known_hosts files,
  ``~/.ssh/known_hosts`` and ``SSH_KNOWN_HOSTS``; an unknown host is refused.
  ``SSH_ACCEPT_NEW_HOST_KEY=1`` accepts an *unknown* host once and appends its key
  to ``~/.ssh/known_hosts`` (OpenSSH's ``StrictHostKeyChecking=accept-new``); a
  *changed* key is refused in every mode.
- **One connection per run.** Each ``run`` opens one session channel on the
  same connection. If the connection died between two commands it is
  re-opened once; a command that may have started is never sent again (a
  connection lost mid-command is an ``SSHError`` saying so).
- **Commands are argv.** The remote command line is ``shlex.join(argv)``, which
  the remote login shell (POSIX sh family) splits back into exactly ``argv``.
- **Files go over SFTP**, to a temporary name in the target's directory, chmod,
  then ``posix_rename`` over the target: readers see the old file or the new one.
"""

from __future__ import annotations

import getpass
import os
import posixpath
import secrets
import select
import shlex
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST, cMSG_CHANNEL_REQUEST
from paramiko.hostkeys import InvalidHostKey
from paramiko.ssh_exception import NoValidConnectionsError

from veza_canary.errors import ConfigError, SSHError, TransportError
from veza_canary.log import get_logger
from veza_canary.transport.base import Transport

if TYPE_CHECKING:
    from veza_canary.settings import Settings

log = get_logger(__name__)

DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_KEEPALIVE = 15.0
#: Deadline of one SFTP request (a push of a large binary is many requests).
DEFAULT_FILE_TIMEOUT = 120.0
SYSTEM_KNOWN_HOSTS: tuple[Path, ...] = (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")

_CHUNK = 1 << 16
#: How often the command loop looks at the deadline and the connection when nothing arrives.
_IDLE_POLL = 0.5
#: ... and while stdin still has bytes waiting for the remote window to open.
_SEND_POLL = 0.02
#: How long to wait for the end of output once the exit status has arrived.
_EOF_GRACE = 2.0

_NETWORK_ERRORS = (paramiko.SSHException, OSError, EOFError)


def parse_ssh_url(url: str) -> tuple[str | None, str, int]:
    """``ssh://user@host[:port]`` -> (user or None, host, port). Raises ConfigError naming INCUS_HOST."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("INCUS_HOST", f"is not a valid ssh:// URL ({exc})") from None
    if parts.scheme != "ssh":
        raise ConfigError("INCUS_HOST", "must look like ssh://user@host[:port]")
    if parts.password is not None:
        raise ConfigError("INCUS_HOST", "must not carry a password (use SSH_KEY_FILE or ssh-agent)")
    if not parts.hostname:
        raise ConfigError("INCUS_HOST", "has no host (use ssh://user@host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("INCUS_HOST", "must be only ssh://user@host[:port], without a path or query")
    if port == 0:
        raise ConfigError("INCUS_HOST", "has port 0")
    return (unquote(parts.username) if parts.username else None), parts.hostname, port or DEFAULT_PORT


class SSHTransport(Transport):
    """Run argv and copy files on ``host`` over SSH (paramiko), one reused connection."""

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int = DEFAULT_PORT,
        key_file: str | Path | None = None,
        known_hosts: Iterable[str | Path] = (),
        accept_new_host_key: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive: float = DEFAULT_KEEPALIVE,
        file_timeout: float = DEFAULT_FILE_TIMEOUT,
        allow_agent: bool = True,
        user_known_hosts: str | Path | None = None,
        system_known_hosts: Iterable[str | Path] = SYSTEM_KNOWN_HOSTS,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.user = user or getpass.getuser()
        self.key_file = Path(key_file).expanduser() if key_file else None
        self.known_hosts = tuple(Path(p).expanduser() for p in known_hosts)
        self.accept_new_host_key = accept_new_host_key
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.file_timeout = file_timeout
        self.allow_agent = allow_agent
        #: Where accept-new writes; also read like any known_hosts file.
        self.user_known_hosts = Path(user_known_hosts or USER_KNOWN_HOSTS).expanduser()
        self.system_known_hosts = tuple(Path(p) for p in system_known_hosts)
        shown_host = f"[{host}]" if ":" in host else host
        self.name = f"ssh://{self.user}@{shown_host}:{self.port}"
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        #: Keys accepted by accept-new in this process: a reconnect must meet the same key.
        self._accepted: dict[str, paramiko.PKey] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SSHTransport:
        """Build from ``INCUS_HOST=ssh://user@host[:port]`` and the ``SSH_*`` knobs."""
        if not settings.ssh.incus_host or settings.ssh.incus_host == "local":
            raise ConfigError("INCUS_HOST", "is not an ssh:// URL")
        user, host, port = parse_ssh_url(settings.ssh.incus_host)
        return cls(
            host,
            user=user,
            port=port,
            key_file=settings.ssh.key_file,
            known_hosts=[settings.ssh.known_hosts] if settings.ssh.known_hosts else [],
            accept_new_host_key=settings.ssh.accept_new_host_key,
            connect_timeout=settings.ssh.connect_timeout,
        )

    # -- commands -----------------------------------------------------------------
    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        if any("\x00" in a for a in argv):
            raise ValueError("argv contains a NUL byte")
        chan = self._open(lambda client: _transport_of(client).open_session(timeout=self.connect_timeout),
                          "open a session")
        try:
            return self._exec(chan, argv, input, timeout)
        finally:
            try:
                chan.close()
            except _NETWORK_ERRORS:
                pass

    def _exec(self, chan: paramiko.Channel, argv: tuple[str, ...], input: bytes | None,
              timeout: float | None) -> tuple[int, bytes, bytes]:
        # The remote login shell splits this back into exactly argv (tests/unit/test_no_shell.py
        # insists that whatever reaches exec_command comes straight from shlex.join).
        command = shlex.join(argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        # From here on the command may have started: whatever happens, it is never sent again.
        try:
            chan.exec_command(command)
            pending: memoryview | None = memoryview(input) if input else None
            if pending is None:
                chan.shutdown_write()  # the remote stdin sees EOF, like /dev/null
            wakeup = chan.fileno()  # readable whenever output is buffered or the channel closed
            eof_grace_until: float | None = None
            while not chan.closed:
                now = time.monotonic()
                if chan.status_event.is_set():
                    # sshd may send exit-status before the last output it still has to
                    # read from the command's pipes: wait for EOF too, but not forever
                    # (a background child can hold stdout open, like `ssh host 'daemon &'`).
                    if chan.eof_received:
                        break
                    eof_grace_until = eof_grace_until or now + _EOF_GRACE
                    if now >= eof_grace_until:
                        break
                if deadline is not None and now >= deadline:
                    _signal_remote(chan, "KILL")
                    raise self._timed_out(argv, timeout, self.name)
                if pending is not None and chan.send_ready():
                    try:
                        sent = chan.send(pending[:_CHUNK])
                    except OSError:
                        if not chan.exit_status_ready():
                            raise
                        sent = len(pending)  # the command ended without reading all of its stdin
                    pending = pending[sent:] if sent < len(pending) else None
                    if pending is None and not chan.closed:
                        chan.shutdown_write()
                wait = _SEND_POLL if pending is not None else _IDLE_POLL
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - now))
                if chan.eof_received:
                    chan.status_event.wait(wait)  # the wakeup pipe stays readable after EOF
                else:
                    select.select([wakeup], [], [], wait)
                _drain(chan, out, err)
            _drain(chan, out, err)
        except _NETWORK_ERRORS as exc:
            raise self._lost(argv, exc) from exc
        if chan.exit_status == -1:
            if not _transport_of_chan(chan).is_active():
                raise self._lost(argv, _transport_of_chan(chan).get_exception())
            raise SSHError(f"{self.name}: {argv[0]} ended without an exit status")
        return chan.exit_status, bytes(out), bytes(err)

    def _lost(self, argv: tuple[str, ...], exc: BaseException | None) -> SSHError:
        self._drop()
        why = f" ({_describe(exc)})" if exc is not None else ""
        return SSHError(
            f"{self.name}: connection lost while running {argv[0]}{why}; "
            "it may or may not have completed, and was not retried"
        )

    # -- files --------------------------------------------------------------------
    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        directory, base = posixpath.split(remote_path)
        if not base:
            raise ValueError(f"push target {remote_path!r} names a directory, not a file")
        tmp = posixpath.join(directory, f".{base}.veza-tmp-{secrets.token_hex(6)}")
        try:
            src = open(local_path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise TransportError(f"[local] push {local_path}: {exc.strerror or exc}") from exc
        with src:
            size = os.fstat(src.fileno()).st_size
            sftp = self._sftp_client()
            try:
                if create_dirs and directory:
                    _makedirs(sftp, directory)
                sftp.putfo(src, tmp, file_size=size, confirm=True)
                sftp.chmod(tmp, mode)  # before the rename: the target never has the wrong mode
                sftp.posix_rename(tmp, remote_path)
            except Exception as exc:
                self._remove_quietly(sftp, tmp)
                raise self._file_error(f"push {local_path} -> {remote_path}", exc) from exc
            except BaseException:
                self._remove_quietly(sftp, tmp)
                raise

    def _pull(self, remote_path: str, local_path: Path) -> None:
        tmp = local_path.with_name(f".{local_path.name}.veza-tmp-{secrets.token_hex(6)}")
        try:
            dst = open(tmp, "xb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise TransportError(f"[local] pull to {local_path}: {exc.strerror or exc}") from exc
        try:
            with dst:
                sftp = self._sftp_client()
                try:
                    sftp.getfo(remote_path, dst)
                except Exception as exc:
                    raise self._file_error(f"pull {remote_path}", exc) from exc
            os.replace(tmp, local_path)
        except OSError as exc:
            raise TransportError(f"[local] pull to {local_path}: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is not None and self._alive():
                return self._sftp

            def opener(client: paramiko.SSHClient) -> paramiko.SFTPClient:
                sftp = client.open_sftp()
                sftp.get_channel().settimeout(self.file_timeout)
                return sftp

            self._sftp = self._open(opener, "start SFTP")
            return self._sftp

    def _remove_quietly(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except Exception:  # noqa: BLE001, S110 - it may never have been created; keep the first error
            pass

    def _file_error(self, what: str, exc: Exception) -> SSHError:
        if not self._alive():
            self._drop()
            return SSHError(f"{self.name}: connection lost during {what} ({_describe(exc)})")
        return SSHError(f"{self.name}: {what}: {_describe(exc)}")

    # -- the connection -----------------------------------------------------------
    def _open(self, opener: Any, what: str) -> Any:
        """``opener(client)`` on a live connection; reconnect once if the old one turned out dead.

        Only used to open channels, before anything has run, so retrying is safe.
        """
        with self._lock:
            fresh = self._client is None or not self._alive()
            client = self._connected()
            try:
                return opener(client)
            except _NETWORK_ERRORS as exc:
                if fresh or self._alive():
                    raise SSHError(f"{self.name}: cannot {what}: {_describe(exc)}") from exc
            log.info("ssh connection found dead; reconnecting once", where=self.name)
            self._drop()
            client = self._connected()
            try:
                return opener(client)
            except _NETWORK_ERRORS as exc:
                raise SSHError(f"{self.name}: cannot {what}: {_describe(exc)}") from exc

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and not self._alive():
                log.info("ssh connection lost since the last command; reconnecting", where=self.name)
                self._drop()
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _alive(self) -> bool:
        t = self._client.get_transport() if self._client is not None else None
        return t is not None and t.is_active()

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            self._load_host_keys(client)
            client.set_missing_host_key_policy(_AcceptNew(self) if self.accept_new_host_key else _RejectUnknown())
            pkey = self._load_key()
            t = self.connect_timeout
            log.debug("ssh connect", where=self.name, key_file=str(self.key_file) if self.key_file else None,
                      agent=self.allow_agent)
            client.connect(
                self.host, port=self.port, username=self.user, pkey=pkey,
                allow_agent=self.allow_agent, look_for_keys=pkey is None,
                timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t,
                transport_factory=_ParamikoTransport,
            )
            if self.keepalive > 0:
                _transport_of(client).set_keepalive(max(1, round(self.keepalive)))
        except SSHError:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise self._connect_error(exc) from exc
        except BaseException:
            client.close()
            raise
        return client

    def _drop(self) -> None:
        with self._lock:
            sftp, client = self._sftp, self._client
            self._sftp = self._client = None
        for thing in (sftp, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001, S110 - it is dead already
                    pass

    def close(self) -> None:
        """Close the connection. Idempotent; a later command opens a new one."""
        self._drop()

    # -- host keys and credentials ------------------------------------------------
    def _hostkey_name(self) -> str:
        return self.host if self.port == DEFAULT_PORT else f"[{self.host}]:{self.port}"

    def _load_host_keys(self, client: paramiko.SSHClient) -> None:
        optional = [*self.system_known_hosts, self.user_known_hosts]
        for path in [*optional, *self.known_hosts]:
            required = path in self.known_hosts
            try:
                client.load_system_host_keys(str(path))
            except FileNotFoundError:
                if required:
                    raise SSHError(f"{self.name}: known_hosts file {path} does not exist (SSH_KNOWN_HOSTS)") from None
            except OSError as exc:
                if required:
                    raise SSHError(f"{self.name}: cannot read known_hosts file {path}: {exc.strerror}") from exc
                log.warning("known_hosts file unreadable; skipped", path=str(path), error=exc.strerror)
            except InvalidHostKey as exc:
                raise SSHError(f"{self.name}: known_hosts file {path} has a corrupt line: {exc.line[:60]!r}") from exc
        for name, key in self._accepted.items():
            client.get_host_keys().add(name, key.get_name(), key)

    def _load_key(self) -> paramiko.PKey | None:
        if self.key_file is None:
            return None
        path = self.key_file
        try:
            return paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            raise SSHError(f"{self.name}: key file {path} is passphrase-protected; load it into ssh-agent "
                           "(ssh-add) and unset SSH_KEY_FILE") from None
        except FileNotFoundError:
            raise SSHError(f"{self.name}: key file {path} does not exist (SSH_KEY_FILE)") from None
        except OSError as exc:
            raise SSHError(f"{self.name}: cannot read key file {path}: {exc.strerror}") from exc
        except (paramiko.SSHException, paramiko.UnknownKeyType, ValueError) as exc:
            # Never echo the exception text: it could quote key material.
            raise SSHError(f"{self.name}: key file {path} is not a private key paramiko can use "
                           f"({type(exc).__name__})") from None

    def remember_host_key(self, hostname: str, key: paramiko.PKey) -> None:
        """Accept-new: trust ``key`` for ``hostname`` from now on and append it to the user known_hosts."""
        path = self.user_known_hosts
        # Another client may have written a key for this host since we loaded the files.
        if path.exists():
            known = paramiko.HostKeys()
            try:
                known.load(str(path))
            except (OSError, InvalidHostKey):
                known = paramiko.HostKeys()
            entry = known.lookup(hostname)
            if entry is not None and entry.get(key.get_name()) != key:
                raise paramiko.BadHostKeyException(hostname, key, next(iter(entry.values())))
            if entry is not None:
                self._accepted[hostname] = key
                return
        self._accepted[hostname] = key
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if path.exists() and not _ends_with_newline(path):
                line = "\n" + line  # never glue our entry onto a last line without a newline
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="ascii") as f:
                f.write(line)
        except OSError as exc:
            log.warning("ssh host key accepted for this run but not saved", where=self.name, host=hostname,
                        file=str(path), error=exc.strerror)
            return
        log.warning("ssh host key accepted and saved (accept-new)", where=self.name, host=hostname,
                    key_type=key.get_name(), fingerprint=key.fingerprint, file=str(path))

    def _connect_error(self, exc: BaseException) -> SSHError:
        n = self.name
        if isinstance(exc, _UnknownHostKey):
            searched = ", ".join(str(p) for p in [*self.known_hosts, self.user_known_hosts, *self.system_known_hosts])
            return SSHError(
                f"{n}: host key not in known_hosts (use SSH_ACCEPT_NEW_HOST_KEY=1 to trust it)",
                hint=f"the server offered {exc.key.get_name()} {exc.key.fingerprint}; searched {searched}. "
                     f"Check the fingerprint with the host's owner, or add it with "
                     f"ssh-keyscan -p {self.port} {self.host} >> ~/.ssh/known_hosts",
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return SSHError(
                f"{n}: host key CHANGED: the server offered {exc.key.get_name()} {exc.key.fingerprint}, "
                f"known_hosts has {exc.expected_key.get_name()} {exc.expected_key.fingerprint}; refusing to connect",
                hint="someone may be intercepting the connection, or the host was rebuilt. If the change is "
                     f"expected, remove the old key: ssh-keygen -R {shlex.quote(self._hostkey_name())}",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            tried = [f"key file {self.key_file}"] if self.key_file else ["default keys in ~/.ssh"]
            if self.allow_agent and os.environ.get("SSH_AUTH_SOCK"):
                tried.append("ssh-agent")
            return SSHError(f"{n}: authentication failed for user {self.user} (tried {', '.join(tried)})")
        if isinstance(exc, NoValidConnectionsError):
            return SSHError(f"{n}: cannot connect: connection refused or host unreachable")
        if isinstance(exc, socket.gaierror):
            return SSHError(f"{n}: cannot resolve host {self.host!r}")
        if isinstance(exc, TimeoutError | socket.timeout):
            return SSHError(f"{n}: cannot connect: no answer within {self.connect_timeout:g}s")
        if isinstance(exc, OSError):
            return SSHError(f"{n}: cannot connect: {exc.strerror or exc}")
        return SSHError(f"{n}: SSH handshake failed: {_describe(exc)}")


# -- host key policies ---------------------------------------------------------------


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"Server {hostname!r} not found in known_hosts")
        self.hostname = hostname
        self.key = key


class _RejectUnknown(paramiko.RejectPolicy):
    """RejectPolicy, with the offered key kept for the error message."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """accept-new: trust a host we have *no* key for, and remember it.

    paramiko consults the policy only when no loaded file has any key for the
    host; a different key for a known host raises BadHostKeyException before any
    policy runs, so a changed key never reaches this class.
    """

    def __init__(self, owner: SSHTransport) -> None:
        self.owner = owner

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.owner.remember_host_key(hostname, key)


# -- paramiko plumbing ---------------------------------------------------------------

_PLAIN_CHANNEL_REQUEST = paramiko.Transport._channel_handler_table[MSG_CHANNEL_REQUEST]


def _channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko ignores ``exit-signal``; turn it into the shell's 128+N, as ``ssh`` users expect."""
    start = m.packet.tell()
    if m.get_text() == "exit-signal":
        m.get_boolean()  # want-reply (always false for exit-signal)
        name = m.get_text()
        try:
            chan.exit_status = 128 + signal.Signals[f"SIG{name}"].value
        except KeyError:
            chan.exit_status = 255  # what OpenSSH's ssh(1) exits with after a remote signal
        chan.status_event.set()
        return
    m.packet.seek(start)
    _PLAIN_CHANNEL_REQUEST(chan, m)


class _ParamikoTransport(paramiko.Transport):
    _channel_handler_table = {**paramiko.Transport._channel_handler_table, MSG_CHANNEL_REQUEST: _channel_request}


def _signal_remote(chan: paramiko.Channel, name: str) -> None:
    """Best effort RFC 4254 6.9 ``signal``, then close the channel.

    OpenSSH kills the command's process group on ``signal`` for ordinary users;
    for root logins (no privilege separation after auth) it refuses, and the
    command only learns of the closed channel when it next writes.
    """
    try:
        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(name)
        chan.transport._send_user_message(m)
    except Exception:  # noqa: BLE001, S110 - closing the channel below is the fallback
        pass
    try:
        chan.close()
    except _NETWORK_ERRORS:
        pass


def _transport_of(client: paramiko.SSHClient) -> paramiko.Transport:
    t = client.get_transport()
    if t is None:
        raise paramiko.SSHException("not connected")
    return t


def _transport_of_chan(chan: paramiko.Channel) -> paramiko.Transport:
    return chan.get_transport()


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while chan.recv_ready():
        out += chan.recv(_CHUNK)
    while chan.recv_stderr_ready():
        err += chan.recv_stderr(_CHUNK)


def _makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    path = "/" if directory.startswith("/") else ""
    for part in [p for p in directory.split("/") if p]:
        path = posixpath.join(path, part) if path else part
        try:
            if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                raise NotADirectoryError(20, f"{path} exists and is not a directory")
        except FileNotFoundError:
            try:
                sftp.mkdir(path, 0o755)
            except OSError:
                # Lost a race with someone creating it: fine if it is a directory now.
                if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    raise


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no details"
    if isinstance(exc, EOFError):
        return "closed by the remote end"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text or type(exc).__name__
