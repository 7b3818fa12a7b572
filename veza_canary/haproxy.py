"""The HAProxy runtime API: one command per connection, replies parsed, never trusted blindly.

The seam is ``AdminSocket.send(command) -> reply``: ``IncusSocat`` runs
``incus exec HAPROXY -- socat stdio UNIX-CONNECT:SOCKET`` through a transport,
``UnixSocket`` talks to a local socket path. ``HAProxy`` builds commands from
validated names and parses replies (pure functions below do the parsing).

Facts this relies on (HAProxy 2.6, measured): a successful ``set server``
replies with an empty line; errors are text (``No such server.``, ``No such
backend.``, ...). ``show servers state`` carries ``srv_admin_state`` as a
bitmask; DRAIN on a DOWN server still shows ``DOWN`` in ``show stat``, so
drain/maint are read from the bitmask, health from ``show stat``.

Cost per read is flat in the size of the backend: ``stat(server)`` asks for one
row (``show stat BACKEND 4 SID``, SID being HAProxy's numeric server id),
``state(server)`` picks the server's one line out of ``show servers state``
without parsing the others, and ``view(server)`` gets both in one call
(``show servers state B; show stat B 4 SID``: the runtime API runs
``;``-separated commands in order, each reply ending with an empty line). Server
ids are learnt from ``show servers state`` once and kept; they are stable until
HAProxy reloads with a changed configuration, so every reply is checked by
*name*: a row that is missing or names another server means the ids moved (a
reload), and the ids are read again before the one retry. A stale id can
therefore cost a read, never return another server's figures.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import posixpath
import re
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from veza_canary.errors import HAProxyError, TransportError
from veza_canary.log import get_logger
from veza_canary.transport.base import Transport
from veza_canary.transport.incus_api import IncusAPI

log = get_logger(__name__)

T = TypeVar("T")

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")

# srv_admin_state bits (src/server.h).
ADMF_FMAINT = 0x01
ADMF_IMAINT = 0x02
ADMF_CMAINT = 0x04
ADMF_FDRAIN = 0x08
ADMF_IDRAIN = 0x10
ADMF_RMAINT = 0x20
ADMF_HMAINT = 0x40
_MAINT_MASK = ADMF_FMAINT | ADMF_IMAINT | ADMF_CMAINT | ADMF_RMAINT | ADMF_HMAINT
_DRAIN_MASK = ADMF_FDRAIN | ADMF_IDRAIN

STATES = ("ready", "drain", "maint")


class AdminSocket:
    """The seam: send one runtime-API command, return the raw reply."""

    def send(self, command: str) -> str:
        raise NotImplementedError


#: ``sh -c SOCAT_SCRIPT veza-haproxy COMMAND SOCKET``: the shell of the HAProxy container feeds the command
#: to ``socat``, so the exec needs no stdin of its own (an Incus REST API exec has none; see transport/incus.py).
#: A constant: the command and the socket path are positional parameters, never parsed as shell code.
SOCAT_SCRIPT = 'printf "%s\\n" "$1" | socat -t 2 stdio "UNIX-CONNECT:$2"'


class IncusSocat(AdminSocket):
    """Reach the admin socket inside the HAProxy container (or host, via a transport).

    Through ``socat`` run in the container (``SOCAT_SCRIPT``), one exec per command. When the
    container runs on this very machine (its transport talks to the local Incus daemon's API),
    the socket is reached directly instead, at ``/proc/self/fd/DIR/<socket name>`` where DIR is an
    ``O_PATH`` descriptor of the socket's directory, opened from the container's root
    (``/proc/<init pid>/root``) one component at a time without following a symlink (an absolute
    symlink would be resolved against this host's root), and the socket itself checked not to be
    one: ~0.1 ms a command instead of an exec's ~30-40 ms (docs/benchmarks.md). The descriptor keeps
    pointing into that container: after a restart of the container the path stops resolving and
    it is looked up again, so a reused PID can never lead to another process's socket. Anything
    unusual (not root, a VM, the root being this host's own, a symlink or ``..`` on the way, no
    connection) falls back to ``socat``; a failure after the command was sent is an error, not a
    silent second send.
    """

    def __init__(self, transport: Transport, socket_path: str, *, timeout: float = 10.0,
                 direct: bool = True) -> None:
        self.transport = transport
        self.socket_path = socket_path
        self.timeout = timeout
        api = getattr(transport, "api", None) if direct else None
        self._api: IncusAPI | None = api if isinstance(api, IncusAPI) else None
        self._dir: int | None = None  # O_PATH fd of the socket's directory inside the container

    def send(self, command: str) -> str:
        if self._api is not None and self.socket_path.startswith("/"):
            reply = self._send_direct(command)
            if reply is not None:
                return reply
        try:
            r = self.transport.run(("sh", "-c", SOCAT_SCRIPT, "veza-haproxy", command, self.socket_path),
                                   timeout=self.timeout, check=False)
        except TransportError as exc:
            raise HAProxyError(f"HAProxy admin socket unreachable: {exc}") from exc
        if r.exit_code != 0:
            detail = (r.stderr.strip().splitlines() or [f"exit {r.exit_code}"])[-1]
            raise HAProxyError(f"HAProxy admin socket {self.socket_path} unreachable: {detail}")
        return r.stdout

    def _send_direct(self, command: str) -> str | None:
        """The reply through the container's root, or None when that way is closed (nothing was sent)."""
        for fresh in (False, True):
            sock_dir = self._socket_dir(fresh)
            if sock_dir is None:
                return None
            name = posixpath.basename(self.socket_path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(self.timeout)
                try:
                    # The last component must be the socket itself, not a symlink (which the kernel would
                    # resolve against *this* host's root); the directories were opened without following any.
                    if not stat.S_ISSOCK(os.stat(name, dir_fd=sock_dir, follow_symlinks=False).st_mode):
                        log.debug("haproxy.direct.not_a_socket", path=self.socket_path)
                        self._direct_off()
                        return None
                    s.connect(f"/proc/self/fd/{sock_dir}/{name}")
                except OSError as exc:
                    log.debug("haproxy.direct.connect_failed", error=str(exc), fresh=fresh)
                    continue  # the container restarted (or HAProxy): look its root up again, then socat
                try:
                    return _exchange(s, command)
                except OSError as exc:
                    raise HAProxyError(f"HAProxy admin socket {self.socket_path}: {exc.strerror or exc}") from exc
            finally:
                s.close()
        return None

    def _socket_dir(self, fresh: bool) -> int | None:
        """O_PATH fd of the socket's directory inside the container, every component opened without
        following a symlink (an absolute symlink would lead to this host's files); None: use socat."""
        if self._dir is not None and not fresh:
            return self._dir
        self.close()
        if any(p in (".", "..") for p in self.socket_path.split("/")):
            self._direct_off()
            return None
        api, container = self._api, getattr(self.transport, "container", "")
        assert api is not None
        pid = api.instance_pid(container)
        if pid is None:
            return None
        try:
            fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        st, host_root = os.fstat(fd), os.stat("/")
        # Still that container's init after the open (not a PID reused meanwhile), and not this host's root.
        if api.instance_pid(container) != pid or (st.st_dev, st.st_ino) == (host_root.st_dev, host_root.st_ino):
            os.close(fd)
            return None
        try:
            self._dir = open_dir_nofollow(fd, posixpath.dirname(self.socket_path))
        except OSError as exc:  # a symlink on the way (ENOTDIR/ELOOP), or not there (yet)
            log.debug("haproxy.direct.no_path", path=self.socket_path, error=str(exc))
            return None
        finally:
            os.close(fd)
        return self._dir

    def _direct_off(self) -> None:
        self._api = None
        self.close()

    def close(self) -> None:
        if self._dir is not None:
            try:
                os.close(self._dir)
            except OSError:
                pass
            self._dir = None


def open_dir_nofollow(root: int, directory: str) -> int:
    """An ``O_PATH`` fd of ``directory`` under the directory fd ``root``, opened one component at a time
    without following a symlink; OSError on a symlink (ENOTDIR/ELOOP), ``.``/``..`` or a missing part."""
    fd = os.dup(root)
    try:
        for part in (p for p in directory.split("/") if p):
            if part in (".", ".."):
                raise OSError(errno.EINVAL, f"{part!r} in {directory!r}")
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _exchange(s: socket.socket, command: str) -> str:
    s.sendall(command.encode() + b"\n")
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


class UnixSocket(AdminSocket):
    """Talk to a local admin socket directly (HAPROXY_LOCAL_SOCKET)."""

    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def send(self, command: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                return _exchange(s, command)
        except OSError as exc:
            raise HAProxyError(f"HAProxy admin socket {self.path} unreachable: {exc.strerror or exc}") from exc


# --- parsed views ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerStat:
    """One server row of ``show stat``."""

    backend: str
    server: str
    status: str  # UP, UP 1/2, DOWN, DRAIN, MAINT, NOLB, no check, ...
    scur: int
    qcur: int
    weight: int
    check_status: str

    @property
    def is_up(self) -> bool:
        return self.status.startswith("UP")

    @property
    def is_down(self) -> bool:
        return self.status.startswith("DOWN")


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server row of ``show servers state``."""

    backend: str
    server: str
    addr: str
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int
    srv_id: int = 0  # HAProxy's numeric id of the server (stable until a reload)

    @property
    def drained(self) -> bool:
        return bool(self.admin_state & _DRAIN_MASK)

    @property
    def in_maint(self) -> bool:
        return bool(self.admin_state & _MAINT_MASK)

    @property
    def admin(self) -> str:
        if self.in_maint:
            return "maint"
        if self.drained:
            return "drain"
        return "ready"


@dataclass(frozen=True, slots=True)
class ServerView:
    """What one poll needs about one server (admin state and health, sessions), read in one call."""

    state: ServerState
    stat: ServerStat


def parse_show_stat(reply: str) -> list[ServerStat]:
    """Parse ``show stat`` CSV by header name. Raises HAProxyError on an error reply."""
    text = reply.strip("\n")
    if not text.startswith("# "):
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    rows = list(csv.reader(io.StringIO(text[2:])))
    header = rows[0]
    try:
        idx = {name: header.index(name) for name in ("pxname", "svname", "status", "scur", "qcur", "weight",
                                                       "check_status")}
    except ValueError as exc:
        raise HAProxyError(f"HAProxy: unexpected show stat header ({exc})") from None
    out = []
    for row in rows[1:]:
        if not row or len(row) < len(header) - 1:
            continue
        if row[idx["svname"]] in ("FRONTEND", "BACKEND"):
            continue
        out.append(ServerStat(
            backend=row[idx["pxname"]], server=row[idx["svname"]], status=row[idx["status"]],
            scur=_int(row[idx["scur"]]), qcur=_int(row[idx["qcur"]]), weight=_int(row[idx["weight"]]),
            check_status=row[idx["check_status"]],
        ))
    return out


def parse_servers_state(reply: str) -> list[ServerState]:
    """Parse ``show servers state BACKEND``. Raises HAProxyError on an error reply."""
    lines = [ln for ln in reply.splitlines() if ln.strip()]
    ix = _servers_state_header(lines[1] if len(lines) > 1 else "", reply)
    out = []
    for line in lines[2:]:
        st = _server_state_line(line, ix)
        if st is not None:
            out.append(st)
    return out


def servers_up(reply: str, backend: str) -> set[str]:
    """Servers of ``backend`` whose ``show stat`` status starts with ``UP`` (see ``HAProxy.in_rotation``)."""
    text = reply.strip("\n")
    if not text.startswith("# "):
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    head, _, body = text[2:].partition("\n")
    header = head.split(",")
    try:
        px, sv, st = header.index("pxname"), header.index("svname"), header.index("status")
    except ValueError as exc:
        raise HAProxyError(f"HAProxy: unexpected show stat header ({exc})") from None
    cut = max(px, sv, st)
    up = set()
    for line in body.splitlines():
        f = line.split(",", cut + 1)
        if len(f) > cut and f[px] == backend and f[st].startswith("UP") and f[sv] not in ("FRONTEND", "BACKEND"):
            up.add(f[sv])
    return up


def find_server_state(reply: str, backend: str, server: str) -> ServerState | None:
    """The one line of ``server`` in a ``show servers state`` reply, or None when it has none.

    Only that line is split and parsed: the search over the others is ``str.find``, so a read costs
    the same for 3 servers and for 500. Raises HAProxyError on an error reply.
    """
    head_end = reply.find("\n", reply.find("\n") + 1)  # end of the "# be_id ..." header (second line)
    lines = reply[:head_end].splitlines() if head_end > 0 else reply.splitlines()
    ix = _servers_state_header(lines[1] if len(lines) > 1 else "", reply)
    needle = f" {server} "  # a line is "<be_id> <be_name> <srv_id> <srv_name> ...": a match elsewhere is skipped
    pos = head_end
    while pos >= 0:
        pos = reply.find(needle, pos + 1)
        if pos < 0:
            return None
        start = reply.rfind("\n", 0, pos) + 1
        end = reply.find("\n", pos)
        line = reply[start:end if end >= 0 else len(reply)]
        st = _server_state_line(line, ix)
        if st is not None and st.server == server and st.backend == backend:
            return st
        pos = end if end >= 0 else -1
    return None


def _servers_state_header(header_line: str, reply: str) -> dict[str, int]:
    if not header_line.startswith("# "):
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    header = header_line[2:].split()
    try:
        return {n: header.index(n)
                for n in ("be_name", "srv_id", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state")}
    except ValueError as exc:
        raise HAProxyError(f"HAProxy: unexpected show servers state header ({exc})") from None


def _server_state_line(line: str, ix: dict[str, int]) -> ServerState | None:
    f = line.split()
    if len(f) <= max(ix.values()):
        return None
    return ServerState(backend=f[ix["be_name"]], server=f[ix["srv_name"]], addr=f[ix["srv_addr"]],
                       op_state=_int(f[ix["srv_op_state"]]), admin_state=_int(f[ix["srv_admin_state"]]),
                       srv_id=_int(f[ix["srv_id"]]))


def split_replies(reply: str, count: int) -> list[str]:
    """Cut the reply to ``count`` ``;``-separated commands into one reply each.

    Every reply of the runtime API ends with an empty line and none holds one inside, so the
    replies are the text between empty lines. Raises HAProxyError when there are fewer.
    """
    parts = reply.split("\n\n")
    if len(parts) < count:
        raise HAProxyError(f"HAProxy: {count} replies expected, got {len(parts)}: {_first_line(reply)}")
    return [p + "\n\n" for p in parts[:count]]


def check_empty_reply(reply: str, command: str) -> None:
    """``set server``-style commands answer one empty line on success; anything else is an error."""
    if reply.strip():
        raise HAProxyError(f"HAProxy refused {command!r}: {_first_line(reply)}")


def _first_line(reply: str) -> str:
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
    return lines[0][:200] if lines else "(empty reply)"


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        return 0


# --- the client -------------------------------------------------------------------


class HAProxy:
    """Typed runtime-API operations on one backend."""

    def __init__(self, sock: AdminSocket, backend: str) -> None:
        _check_name(backend, "backend")
        self.sock = sock
        self.backend = backend
        #: server name -> HAProxy's numeric server id, learnt from ``show servers state``; valid until a
        #: reload renumbers them, which every read detects (replies are matched by name, not by id).
        self._sids: dict[str, int] = {}

    def _send(self, command: str) -> str:
        reply = self.sock.send(command)
        # HAProxy never answers a show/get with nothing: an empty reply is output lost on the way (incus exec
        # on Incus 6.0 drops a command's stdout now and then, with exit 0). Reads are safe to repeat.
        for _ in range(2):
            if reply or not command.startswith(("show ", "get ")):
                break
            log.warning("haproxy.empty_reply.retry", command=command)
            reply = self.sock.send(command)
        log.debug("haproxy", command=command, reply=reply[:200])
        return reply

    def command(self, line: str) -> str:
        """One raw runtime-API command line (weights, maps, ``show info``): its reply, reads retried as above."""
        return self._send(line)

    def each(self, op: Callable[[HAProxy], T]) -> dict[str, T]:
        """``op`` run on each HAProxy this client talks to, by name (the per-HAProxy read hook).

        A raw reply describes one HAProxy process, so a read that must describe the fleet (``traffic.py``:
        weights, pins, ``show info``, the algorithm) is taken from each HAProxy and combined by the caller.
        One HAProxy: ``{"": op(self)}`` (no name: there is nothing to tell apart); ``lbs.HAProxySet`` names
        each of its members.
        """
        return {"": op(self)}

    def stats(self) -> dict[str, ServerStat]:
        """Every server of the backend (one whole read: for status views, not for polls)."""
        reply = self._send(f"show stat {self.backend} 4 -1")
        rows = parse_show_stat(reply)
        return {r.server: r for r in rows if r.backend == self.backend}

    def stat(self, server: str) -> ServerStat:
        """One server's ``show stat`` row: HAProxy is asked for that row only."""
        _check_name(server, "server")
        for attempt in (1, 2):
            sid = self._sid(server)
            row = self._stat_row(self._send(f"show stat {self.backend} 4 {sid}"), server)
            if row is not None:
                return row
            if attempt == 1:
                self._ids_moved(server, sid)
        raise HAProxyError(f"HAProxy: no server {server!r} in backend {self.backend!r}")

    def states(self) -> dict[str, ServerState]:
        """Every server's admin/op state (one whole read); refreshes the cached server ids."""
        reply = self._send(f"show servers state {self.backend}")
        rows = [s for s in parse_servers_state(reply) if s.backend == self.backend]
        self._sids = {s.server: s.srv_id for s in rows}
        return {s.server: s for s in rows}

    def state(self, server: str) -> ServerState:
        """One server's admin/op state; only its line of the reply is parsed."""
        _check_name(server, "server")
        st = find_server_state(self._send(f"show servers state {self.backend}"), self.backend, server)
        if st is None:
            raise HAProxyError(f"HAProxy: no server {server!r} in backend {self.backend!r}")
        self._learn(st)
        return st

    def view(self, server: str) -> ServerView:
        """``state(server)`` and ``stat(server)`` in one runtime-API call: what a drain poll needs."""
        _check_name(server, "server")
        sid = self._sid(server)
        state_reply, stat_reply = split_replies(
            self._send(f"show servers state {self.backend}; show stat {self.backend} 4 {sid}"), 2)
        st = find_server_state(state_reply, self.backend, server)
        if st is None:
            raise HAProxyError(f"HAProxy: no server {server!r} in backend {self.backend!r}")
        row = self._stat_row(stat_reply, server) if st.srv_id == sid else None
        if row is None:  # the ids moved under us (a reload): this reply's state line has the new one
            self._ids_moved(server, sid)
            self._learn(st)
            row = self.stat(server)
        return ServerView(st, row)

    def in_rotation(self) -> set[str]:
        """Servers of the backend that take new traffic now: admin ready *and* UP, in one read.

        ``show stat`` says it in its status column alone: a ready server that is up is ``UP`` (``UP 1/2``
        while going down); drained is ``DRAIN``, maintenance ``MAINT``, down ``DOWN``, not balancing
        ``NOLB``, unchecked ``no check``. Only that column is cut out of each row, so a capacity check
        before every drain costs microseconds per server, not a parse of the whole backend.
        """
        return servers_up(self._send(f"show stat {self.backend} 4 -1"), self.backend)

    # -- server ids -------------------------------------------------------------------
    def _sid(self, server: str) -> int:
        sid = self._sids.get(server)
        if sid is None:
            self.states()  # learns every id in one read (once per run, or after a reload)
            sid = self._sids.get(server)
            if sid is None:
                raise HAProxyError(f"HAProxy: no server {server!r} in backend {self.backend!r}")
        return sid

    def _learn(self, st: ServerState) -> None:
        if st.srv_id and self._sids.get(st.server) != st.srv_id:
            if st.server in self._sids:
                log.info("haproxy.server_ids_changed", server=st.server, was=self._sids[st.server], now=st.srv_id)
            self._sids[st.server] = st.srv_id

    def _ids_moved(self, server: str, sid: int) -> None:
        log.info("haproxy.server_ids_stale", server=server, sid=sid,
                 msg="HAProxy's server ids changed (a reload?): reading them again")
        self._sids.clear()

    def _stat_row(self, reply: str, server: str) -> ServerStat | None:
        for row in parse_show_stat(reply):
            if row.backend == self.backend and row.server == server:
                return row
        return None

    def set_state(self, server: str, state: str) -> None:
        _check_name(server, "server")
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        cmd = f"set server {self.backend}/{server} state {state}"
        check_empty_reply(self._send(cmd), cmd)
        log.info("haproxy.set_state", server=server, state=state)

    def set_weight(self, server: str, weight: int) -> None:
        _check_name(server, "server")
        if not 0 <= weight <= 256:
            raise ValueError("weight must be 0..256")
        cmd = f"set server {self.backend}/{server} weight {weight}"
        check_empty_reply(self._send(cmd), cmd)

    def get_weight(self, server: str) -> tuple[int, int]:
        _check_name(server, "server")
        reply = self._send(f"get weight {self.backend}/{server}").strip()
        m = re.match(r"^(\d+) \(initial (\d+)\)$", reply)
        if not m:
            raise HAProxyError(f"HAProxy: {_first_line(reply)}")
        return int(m.group(1)), int(m.group(2))

    def shutdown_sessions(self, server: str) -> None:
        _check_name(server, "server")
        cmd = f"shutdown sessions server {self.backend}/{server}"
        check_empty_reply(self._send(cmd), cmd)
        log.warning("haproxy.shutdown_sessions", server=server)


def _check_name(name: str, what: str) -> None:
    # Names go into a runtime-API command line; ';' would chain commands, spaces split them.
    if not _NAME_RE.match(name):
        raise HAProxyError(f"refusing HAProxy {what} name {name!r}")
