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
"""

from __future__ import annotations

import csv
import io
import re
import socket
from dataclasses import dataclass

from veza_canary.errors import HAProxyError, TransportError
from veza_canary.log import get_logger
from veza_canary.transport.base import Transport

log = get_logger(__name__)

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


class IncusSocat(AdminSocket):
    """Reach the admin socket with ``socat`` inside the HAProxy container (or host, via a transport)."""

    def __init__(self, transport: Transport, socket_path: str, *, timeout: float = 10.0) -> None:
        self.transport = transport
        self.socket_path = socket_path
        self.timeout = timeout

    def send(self, command: str) -> str:
        try:
            r = self.transport.run(
                ("socat", "-t", "2", "stdio", f"UNIX-CONNECT:{self.socket_path}"),
                input=command + "\n", timeout=self.timeout, check=False,
            )
        except TransportError as exc:
            raise HAProxyError(f"HAProxy admin socket unreachable: {exc}") from exc
        if r.exit_code != 0:
            detail = (r.stderr.strip().splitlines() or [f"exit {r.exit_code}"])[-1]
            raise HAProxyError(f"HAProxy admin socket {self.socket_path} unreachable: {detail}")
        return r.stdout


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
                s.sendall(command.encode() + b"\n")
                chunks = []
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
        except OSError as exc:
            raise HAProxyError(f"HAProxy admin socket {self.path} unreachable: {exc.strerror or exc}") from exc
        return b"".join(chunks).decode("utf-8", "replace")


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
    if len(lines) < 2 or not lines[1].startswith("# "):
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    header = lines[1][2:].split()
    try:
        ix = {n: header.index(n) for n in ("be_name", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state")}
    except ValueError as exc:
        raise HAProxyError(f"HAProxy: unexpected show servers state header ({exc})") from None
    out = []
    for line in lines[2:]:
        f = line.split()
        if len(f) <= max(ix.values()):
            continue
        out.append(ServerState(backend=f[ix["be_name"]], server=f[ix["srv_name"]], addr=f[ix["srv_addr"]],
                               op_state=_int(f[ix["srv_op_state"]]), admin_state=_int(f[ix["srv_admin_state"]])))
    return out


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

    def stats(self) -> dict[str, ServerStat]:
        reply = self._send(f"show stat {self.backend} 4 -1")
        rows = parse_show_stat(reply)
        return {r.server: r for r in rows if r.backend == self.backend}

    def stat(self, server: str) -> ServerStat:
        _check_name(server, "server")
        stats = self.stats()
        if server not in stats:
            raise HAProxyError(f"HAProxy: no server {server!r} in backend {self.backend!r}")
        return stats[server]

    def states(self) -> dict[str, ServerState]:
        reply = self._send(f"show servers state {self.backend}")
        return {s.server: s for s in parse_servers_state(reply) if s.backend == self.backend}

    def state(self, server: str) -> ServerState:
        _check_name(server, "server")
        states = self.states()
        if server not in states:
            raise HAProxyError(f"HAProxy: no server {server!r} in backend {self.backend!r}")
        return states[server]

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
