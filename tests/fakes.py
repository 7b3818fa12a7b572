"""A simulated fleet for unit tests and the fleet-scale benchmark (test code: not part of the package).

Every fake subclasses the real seam it stands in for (``Transport``,
``AdminSocket``) or plugs into httpx's own (``httpx.MockTransport``), so an API
change breaks the fakes, not silently the tests. The simulation models what the
pipeline depends on: files and a service per node, HAProxy admin/op state and
sessions, and a Prometheus whose answers follow the binary each node *runs*.

A "binary" is any bytes; its behaviour is looked up by sha256 in
``SimFleet.behaviours`` (default: healthy, fast, no errors).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import math
import re
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import httpx

from veza_canary.clock import FakeClock
from veza_canary.errors import CommandFailed, IncusError, PushError
from veza_canary.fleet import Fleet
from veza_canary.haproxy import (
    ADMF_FDRAIN,
    ADMF_FMAINT,
    AdminSocket,
    HAProxy,
)
from veza_canary.lock import LINK_SCRIPT, REMOVE_IF_SCRIPT, StateStore
from veza_canary.node import INSTALL_SCRIPT, TMP_PREFIX, HealthResult, Node, ServiceState
from veza_canary.prometheus import Prometheus
from veza_canary.settings import Settings
from veza_canary.transport.base import Transport


@dataclass
class Behaviour:
    health_status: int = 200
    p95: float = 0.05
    err_ratio: float = 0.0
    starts: bool = True
    req_rate: float = 10.0
    version: str | None = None  # served in the health body and by `veza-api --version` when set
    #: Starts (``systemctl restart`` succeeds, Type=simple) but exits at once: systemd restarts it again and
    #: again (SubState auto-restart, NRestarts rising) and it never answers.
    crash_loop: bool = False


@dataclass
class SimNodeState:
    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    running_sha: str | None = None  # what the service runs (set at restart)
    stopped: bool = False  # the container itself
    restarts: int = 0
    crashes: int = 0  # systemd's NRestarts: automatic restarts after a crash
    #: systemd's start limit hit (a binary that never starts crash-loops into it): every start is refused
    #: until ``systemctl reset-failed`` (StartLimitBurst=3 in the lab's unit).
    start_limited: bool = False
    #: A logical clock of changes: when each file last changed (its ctime) and when the service last started.
    ctimes: dict[str, int] = field(default_factory=dict)
    started_at: int = 0

    def write(self, path: str, data: bytes, tick: int) -> None:
        self.files[path] = data
        self.ctimes[path] = tick

    def move(self, src: str, dst: str, tick: int) -> None:
        self.write(dst, self.files.pop(src), tick)  # rename(2) changes the moved inode's ctime
        self.ctimes.pop(src, None)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SimFleet:
    """State shared by the fakes."""

    def __init__(self, names: list[str], *, binary: bytes = b"old-binary", previous: bytes | None = b"prev-binary",
                 install_dir: str = "/opt/veza/backend-api", clock: FakeClock | None = None) -> None:
        self.install_dir = install_dir
        self.clock = clock or FakeClock()
        self.behaviours: dict[str, Behaviour] = {}
        self.nodes: dict[str, SimNodeState] = {}
        for n in names:
            node = SimNodeState(n)
            node.files[f"{install_dir}/veza-api"] = binary
            if previous is not None:
                node.files[f"{install_dir}/veza-api.previous"] = previous
            node.running_sha = sha(binary)
            node.started_at = 1  # started after its files were written (tick 0)
            self.nodes[n] = node
        self.admin: dict[str, int] = dict.fromkeys(names, 0)
        self.weights: dict[str, int] = dict.fromkeys(names, 1)  # runtime weight (show stat says 0 when drained)
        #: The configured weights (``get weight``'s "initial"); a reload puts ``weights`` back to these.
        self.initial_weights: dict[str, int] = dict.fromkeys(names, 1)
        #: ``show stat``'s algo column. "static-rr", or a hash algorithm with ``hash_type`` "map-based", takes
        #: only weights 0 % and 100 % (HAProxy's refusal message otherwise).
        self.algo = "roundrobin"
        self.hash_type = "map-based"
        #: Map files HAProxy loaded (and the config reads) -> their runtime entries; a reload empties them.
        self.maps: dict[str, dict[str, str]] = {"/etc/haproxy/canary-pin.map": {}}
        self.haproxy_pid = 1000  # show info's Pid: a reload or restart starts another process
        self.sessions: dict[str, int] = dict.fromkeys(names, 0)
        self.sticky_sessions: dict[str, int] = {}  # sessions that never end on their own
        self.state_files: dict[str, bytes] = {}
        self.commands: list[tuple[str, str]] = []  # (where, command) for assertions
        self.corrupt_next_push = False
        self.fail_push_on: set[str] = set()
        #: Pushes to these nodes fail half-way like ``incus file push`` on a full disk: a partial file
        #: is left under the transport's own temp name (``.NAME.veza-tmp-XXXX`` next to the target).
        self.partial_push_on: set[str] = set()
        self.prom_down = False
        #: Prometheus answers but wrongly: "garbage" (200, not JSON), "http-error" (503 with a JSON error),
        #: "wrong-shape" (200, JSON of the wrong shape), "multi-series" (two series per query).
        self.prom_fault: str | None = None
        self.haproxy_down = False
        self.broken_nodes: set[str] = set()  # node-specific failures, whatever binary they run
        self.hooks: dict[str, object] = {}  # name -> callable(SimFleet), fired at events (e.g. "restart:<node>")
        #: Like ``incus exec`` on Incus 6.0 now and then (measured: ~1 in 500 short commands): the next
        #: command's stdout is lost, with exit status 0. Counts down; 0 = off.
        self.lose_stdout = 0
        #: Called with the name of every I/O event, before and after it ("node:backend-api-2:mv",
        #: "done:node:backend-api-2:mv", "haproxy:set server ...", "prom", "lb", "state:ln", ...).
        #: Fault-injection tests raise from here (a signal) or snapshot the fleet (a SIGKILL).
        self.observers: list[Callable[[str], None]] = []

    def reload_haproxy(self) -> None:
        """A reload without a server-state file: runtime weights, admin states and map entries are lost."""
        self.weights = dict(self.initial_weights)
        self.admin = dict.fromkeys(self.admin, 0)
        self.maps = {path: {} for path in self.maps}
        self.haproxy_pid += 1

    @property
    def static_weights(self) -> bool:
        hashes = {"source", "uri", "url_param", "hdr", "rdp-cookie", "hash"}
        return self.algo == "static-rr" or (self.algo in hashes and self.hash_type != "consistent")

    def tick(self) -> int:
        """The next value of the fleet's logical clock of changes."""
        self._tick = getattr(self, "_tick", 1) + 1
        return self._tick

    def behaviour(self, node: str) -> Behaviour:
        n = self.nodes[node]
        if n.stopped or n.running_sha is None:
            return Behaviour(health_status=0, starts=False, req_rate=0.0)
        return self.behaviours.get(n.running_sha, Behaviour())

    def healthy(self, node: str) -> bool:
        if node in self.broken_nodes:
            return False
        b = self.behaviour(node)
        return b.starts and b.health_status == 200

    def fire(self, event: str) -> None:
        hook = self.hooks.get(event)
        if callable(hook):
            hook(self)

    def flaky(self, result: tuple[int, bytes, bytes]) -> tuple[int, bytes, bytes]:
        """Apply ``lose_stdout`` to a command's result."""
        if self.lose_stdout and result[0] == 0:
            self.lose_stdout -= 1
            return 0, b"", result[2]
        return result

    def io(self, event: str) -> None:
        for observer in list(self.observers):
            observer(event)

    def snapshot(self) -> SimFleet:
        """A deep copy of the fleet's state (files, services, HAProxy, state dir), without hooks or observers.

        What a SIGKILL leaves behind: take it at an I/O event, then run the next deploy against it.
        """
        clone = SimFleet.__new__(SimFleet)
        clone.__dict__.update(copy.deepcopy({k: v for k, v in self.__dict__.items()
                                             if k not in ("hooks", "observers")}))
        clone.hooks, clone.observers = {}, []
        return clone

    def temp_files(self, node: str) -> list[str]:
        """Files in the install dir other than the binary and veza-api.previous."""
        keep = {f"{self.install_dir}/veza-api", f"{self.install_dir}/veza-api.previous",
                f"{self.install_dir}/.veza-api.last-good"}
        return sorted(p for p in self.nodes[node].files if p not in keep and p.startswith(self.install_dir + "/"))


class SimNodeTransport(Transport):
    """A node's container: the few commands the tool runs there, on an in-memory filesystem."""

    def __init__(self, sim: SimFleet, node: str) -> None:
        self.sim = sim
        self.node = node
        self.name = f"sim:{node}"

    @property
    def _n(self) -> SimNodeState:
        return self.sim.nodes[self.node]

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        event = f"node:{self.node}:{argv[0]}"
        self.sim.io(event)
        result = self.sim.flaky(self._do(argv))
        self.sim.io("done:" + event)
        return result

    def _do(self, argv: tuple[str, ...]) -> tuple[int, bytes, bytes]:
        self.sim.commands.append((self.node, shlex.join(argv)))
        n = self._n
        if n.stopped:
            return 1, b"", b"Error: Instance is not running\n"
        files = n.files
        cmd = argv[0]
        if cmd == "sha256sum":  # like coreutils: a line per file, exit 1 if any is missing
            paths = argv[2:] if argv[1:2] == ("--",) else argv[1:]
            out, err = b"", b""
            for path in paths:
                if path in files:
                    out += f"{sha(files[path])}  {path}\n".encode()
                else:
                    err += f"sha256sum: {path}: No such file or directory\n".encode()
            return (1 if err else 0), out, err
        if argv[:3] == ("sh", "-c", INSTALL_SCRIPT):  # Node.install: verify sha256, chmod, rename, in one exec
            want, tmp, dst = argv[4:7]
            if tmp not in files:
                return 1, b"", f"sha256sum: {tmp}: No such file or directory\n".encode()
            if sha(files[tmp]) != want:
                return 3, b"", f"veza-install: sha256 of {tmp} is {sha(files[tmp])}, expected {want}\n".encode()
            n.move(tmp, dst, self.sim.tick())
            return 0, b"", b""
        if cmd == "mv":
            src, dst = argv[-2], argv[-1]
            if src not in files:
                return 1, b"", f"mv: cannot stat '{src}': No such file or directory\n".encode()
            n.move(src, dst, self.sim.tick())
            return 0, b"", b""
        if cmd == "cp":
            src, dst = argv[-2], argv[-1]
            if src not in files:
                return 1, b"", f"cp: cannot stat '{src}': No such file or directory\n".encode()
            n.write(dst, files[src], self.sim.tick())
            return 0, b"", b""
        if argv[:3] == ("stat", "-c", "%.9Z"):  # Node.runs_installed: the binary's ctime, the process's start
            paths = [a for a in argv[3:] if a != "--"]
            out = []
            for path in paths:
                if path.startswith("/proc/"):
                    if not (n.running_sha and self.sim.behaviour(self.node).starts):
                        return 1, b"", f"stat: cannot statx '{path}': No such file or directory\n".encode()
                    out.append(f"{n.started_at}.000000000")
                elif path in files:
                    out.append(f"{n.ctimes.get(path, 0)}.000000000")
                else:
                    return 1, b"", f"stat: cannot statx '{path}': No such file or directory\n".encode()
            return 0, ("\n".join(out) + "\n").encode(), b""
        if cmd == "rm":
            files.pop(argv[-1], None)
            return 0, b"", b""
        if cmd == "chmod":
            return 0, b"", b""
        if cmd == "find":
            # find DIR -maxdepth 1 -name PATTERN ... -delete
            pattern = argv[argv.index("-name") + 1] if "-name" in argv else "*"
            directory = argv[1].rstrip("/") + "/"
            for p in [p for p in files if p.startswith(directory) and "/" not in p[len(directory):]
                      and fnmatch.fnmatchcase(p[len(directory):], pattern)]:
                del files[p]
            return 0, b"", b""
        if argv[:2] == ("systemctl", "show"):
            if "--value" in argv:  # -p NRestarts --value
                return 0, f"{n.crashes}\n".encode(), b""
            starts = n.running_sha is not None and self.sim.behaviour(self.node).starts
            state = ("active", "running") if starts else (("failed", "failed") if n.start_limited
                                                          else ("activating", "auto-restart"))
            pid = 1000 + n.restarts if starts else 0
            return 0, (f"MainPID={pid}\nNRestarts={n.crashes}\nActiveState={state[0]}\n"
                       f"SubState={state[1]}\n").encode(), b""
        if argv[:2] == ("systemctl", "reset-failed"):
            n.start_limited = False
            return 0, b"", b""
        if cmd == "systemctl" or argv == tuple(self.sim.hooks.get("restart_argv", ())):  # type: ignore[arg-type]
            if n.start_limited:
                return 1, b"", (b"Job for veza-backend-api.service failed because start of the service was "
                                b"attempted too often.\n")
            n.restarts += 1
            n.running_sha = sha(files.get(f"{self.sim.install_dir}/veza-api", b""))
            n.started_at = self.sim.tick()
            self.sim.sessions[self.node] = 0
            self.sim.fire(f"restart:{self.node}")
            if not self.sim.behaviour(self.node).starts:
                n.start_limited = True  # Restart=on-failure crash-loops it into the start limit
                return 1, b"", b"Job for veza-backend-api.service failed.\n"
            return 0, b"", b""
        if cmd == "curl":
            b = self.sim.behaviour(self.node)
            if not b.starts:
                return 7, b"\n000", b"curl: (7) Failed to connect to 127.0.0.1 port 8080\n"
            status = 500 if self.node in self.sim.broken_nodes else b.health_status
            body = json.dumps({"status": "ok", "version": b.version}) if b.version else '{"status":"ok"}'
            return 0, f"{body}\n{status}".encode(), b""
        if argv[1:] == ("--version",) and argv[0] in files:
            version = self.sim.behaviours.get(sha(files[argv[0]]), Behaviour()).version
            if version is None:
                return 2, b"", b"veza-api: unknown argument '--version'\n"
            return 0, f"{version}\n".encode(), b""
        return 127, b"", f"sim: unknown command {cmd}\n".encode()

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        event = f"push:{self.node}"
        self.sim.io(event)
        self._do_push(local_path, remote_path)
        self.sim.io("done:" + event)

    def _do_push(self, local_path: Path, remote_path: str) -> None:
        if self._n.stopped:
            raise IncusError(f"[{self.node}] incus: Instance is not running")
        if self.node in self.sim.fail_push_on:
            raise IncusError(f"[{self.node}] incus file push: write failed: no space left on device")
        data = Path(local_path).read_bytes()
        if self.node in self.sim.partial_push_on:
            directory, _, base = remote_path.rpartition("/")
            self._n.files[f"{directory}/.{base}.veza-tmp-{secrets.token_hex(6)}"] = data[: len(data) // 2]
            raise IncusError(f'[{self.node}] incus file push: sftp: "write {remote_path}": no space left on device')
        if self.sim.corrupt_next_push:
            self.sim.corrupt_next_push = False
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self._n.write(remote_path, data, self.sim.tick())

    def _pull(self, remote_path: str, local_path: Path) -> None:
        Path(local_path).write_bytes(self._n.files[remote_path])


class SimStateTransport(Transport):
    """The HAProxy container's state directory (lock, blocked releases)."""

    name = "sim:state"

    def __init__(self, sim: SimFleet) -> None:
        self.sim = sim

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        self.sim.io(f"state:{argv[0]}")
        result = self.sim.flaky(self._do(argv))
        self.sim.io(f"done:state:{argv[0]}")
        return result

    def _do(self, argv: tuple[str, ...]) -> tuple[int, bytes, bytes]:
        f = self.sim.state_files
        cmd = argv[0]
        if cmd == "cat":
            p = argv[-1]
            return (0, f[p], b"") if p in f else (1, b"", f"cat: {p}: No such file or directory\n".encode())
        if cmd == "ln":
            src, dst = argv[-2], argv[-1]
            if dst in f:
                return 1, b"", f"ln: failed to create hard link '{dst}': File exists\n".encode()
            f[dst] = f[src]
            return 0, b"", b""
        if cmd == "sh" and argv[2] == REMOVE_IF_SCRIPT:  # rm FILE if it contains TEXT
            path, text = argv[-2], argv[-1]
            if text.encode() not in f.get(path, b""):
                return 1, b"", b""
            del f[path]
            return 0, b"", b""
        if cmd == "sh" and argv[2] == LINK_SCRIPT:  # ln STAGED TARGET, then rm STAGED
            linked = self._do(("ln", "--", argv[-2], argv[-1]))
            f.pop(argv[-2], None)
            return linked
        if cmd == "mv":
            f[argv[-1]] = f.pop(argv[-2])
            return 0, b"", b""
        if cmd == "rm":
            f.pop(argv[-1], None)
            return 0, b"", b""
        if cmd == "mkdir":
            return 0, b"", b""
        if cmd == "ls":
            d = argv[-1].rstrip("/") + "/"
            names = sorted(p[len(d):] for p in f if p.startswith(d) and "/" not in p[len(d):])
            return (0, ("\n".join(names) + "\n").encode(), b"") if names else (2, b"", b"ls: no such dir\n")
        return 127, b"", b"unknown"

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        self.sim.io("state:push")
        self.sim.state_files[remote_path] = Path(local_path).read_bytes()
        self.sim.io("done:state:push")


class SimHAProxy(AdminSocket):
    """HAProxy's runtime API over the simulated fleet (2.6 reply formats)."""

    def __init__(self, sim: SimFleet, backend: str = "api_pool") -> None:
        self.sim = sim
        self.backend = backend

    def _status(self, n: str) -> str:
        adm = self.sim.admin[n]
        if adm & ADMF_FMAINT:
            return "MAINT"
        if not self.sim.healthy(n):
            return "DOWN"
        if adm & ADMF_FDRAIN:
            return "DRAIN"
        return "UP"

    def send(self, command: str) -> str:
        self.sim.io(f"haproxy:{command}")
        reply = self.sim.flaky((0, self._send(command).encode(), b""))[1].decode()
        self.sim.io(f"done:haproxy:{command}")
        return reply

    def _send(self, command: str) -> str:
        self.sim.commands.append(("haproxy", command))
        if self.sim.haproxy_down:
            from veza_canary.errors import HAProxyError

            raise HAProxyError("HAProxy admin socket /run/haproxy/admin.sock unreachable: Connection refused")
        # Sessions on a drained server end by themselves unless sticky.
        for n in self.sim.nodes:
            if self.sim.admin[n] & (ADMF_FDRAIN | ADMF_FMAINT):
                self.sim.sessions[n] = self.sim.sticky_sessions.get(n, 0)
        if ";" in command:  # the runtime API runs ;-separated commands in order, replies one after another
            return "".join(self._send(c.strip()) for c in command.split(";"))
        parts = command.split()
        if parts[:2] == ["show", "stat"]:
            if parts[2] != self.backend:
                return "No such proxy.\n"
            rows = ["# pxname,svname,qcur,qmax,scur,smax,status,weight,check_status,algo,"]
            names = list(self.sim.nodes)
            sid = int(parts[4]) if len(parts) > 4 else -1  # server ids: 1..N, as in show servers state
            for n in (names if sid == -1 else names[sid - 1:sid] if sid >= 1 else []):
                w = 0 if self.sim.admin[n] else self.sim.weights[n]
                rows.append(f"{self.backend},{n},0,0,{self.sim.sessions[n]},5,{self._status(n)},{w},L7OK,,")
            rows.append(f"{self.backend},BACKEND,0,0,0,5,UP,3,,{self.sim.algo},")
            return "\n".join(rows) + "\n\n"
        if parts[:3] == ["show", "servers", "state"]:
            if parts[3] != self.backend:
                return "Can't find backend.\n"
            lines = ["1", "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
                          "srv_iweight"]
            for i, n in enumerate(self.sim.nodes, 1):
                op = 2 if self.sim.healthy(n) else 0
                lines.append(f"3 {self.backend} {i} {n} 10.0.0.{i} {op} {self.sim.admin[n]} {self.sim.weights[n]} "
                             f"{self.sim.initial_weights[n]}")
            return "\n".join(lines) + "\n\n"
        m = re.match(r"^set server (\S+)/(\S+) state (ready|drain|maint)$", command)
        if m:
            be, srv, state = m.groups()
            if be != self.backend:
                return "No such backend.\n"
            if srv not in self.sim.nodes:
                return "No such server.\n"
            self.sim.admin[srv] = {"ready": 0, "drain": ADMF_FDRAIN, "maint": ADMF_FMAINT}[state]
            return "\n"
        m = re.match(r"^set server (\S+)/(\S+) weight (\d+)(%?)$", command)
        if m:
            be, srv, weight, pct = m.groups()
            if be != self.backend:
                return "No such backend.\n"
            if srv not in self.sim.nodes:
                return "No such server.\n"
            initial = self.sim.initial_weights[srv]
            w = initial * int(weight) // 100 if pct else int(weight)
            if w > 256:
                return "Absolute weight can only be between 0 and 256 inclusive.\n"
            if self.sim.static_weights and w not in (0, initial):
                return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n"
            self.sim.weights[srv] = w
            return "\n"
        m = re.match(r"^get weight (\S+)/(\S+)$", command)
        if m:
            if m.group(2) not in self.sim.nodes:
                return "No such server.\n"
            return f"{self.sim.weights[m.group(2)]} (initial {self.sim.initial_weights[m.group(2)]})\n"
        if command == "show info":
            return (f"Name: HAProxy\nVersion: 2.6.12-sim\nPid: {self.sim.haproxy_pid}\n"
                    f"Start_time_sec: {self.sim.haproxy_pid}\n\n")
        map_reply = self._map_command(command)
        if map_reply is not None:
            return map_reply
        m = re.match(r"^shutdown sessions server (\S+)/(\S+)$", command)
        if m:
            self.sim.sticky_sessions.pop(m.group(2), None)
            self.sim.sessions[m.group(2)] = 0
            return "\n"
        return "Unknown command. Please enter one of the following commands only :\n"

    def _map_command(self, command: str) -> str | None:
        """``show map [FILE]``, ``add map FILE K V``, ``del map FILE K``, ``clear map FILE`` (2.6 replies)."""
        parts = command.split()
        if parts[1:2] != ["map"] or parts[0] not in ("show", "add", "del", "clear"):
            return None
        maps = self.sim.maps
        if parts == ["show", "map"]:
            lines = ["# id (file) description"]
            for i, (path, entries) in enumerate(maps.items()):
                lines.append(f"{i} ({path}) pattern loaded from file '{path}' used by map at file "
                             f"'/etc/haproxy/haproxy.cfg' line 30. curr_ver=0 next_ver=0 entry_cnt={len(entries)}")
            return "\n".join(lines) + "\n\n"
        if len(parts) < 3 or parts[2] not in maps:
            return "Unknown map identifier. Please use #<id> or <file>.\n"
        entries = maps[parts[2]]
        if parts[0] == "show":
            return "".join(f"0x{i + 1:x} {k} {v}\n" for i, (k, v) in enumerate(entries.items())) + "\n"
        if parts[0] == "add" and len(parts) == 5:
            entries[parts[3]] = parts[4]
            return "\n"
        if parts[0] == "del" and len(parts) == 4:
            return "\n" if entries.pop(parts[3], None) is not None else "Key not found.\n"
        if parts[0] == "clear" and len(parts) == 3:
            entries.clear()
            return "\n"
        return "'add map' expects three parameters: map identifier, key and value.\n"


class SimPrometheus:
    """An httpx handler answering the SLI queries from the nodes' running binaries."""

    def __init__(self, sim: SimFleet) -> None:
        self.sim = sim
        self.queries: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sim.io("prom")
        if self.sim.prom_down:
            raise httpx.ConnectError("connection refused", request=request)
        fault = self.sim.prom_fault
        if fault == "garbage":
            return httpx.Response(200, content=b"\x00\xffnot json<html>", headers={"content-type": "text/html"})
        if fault == "http-error":
            return httpx.Response(503, json={"status": "error", "errorType": "unavailable", "error": "overloaded"})
        if fault == "wrong-shape":
            return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}})
        if request.url.path == "/-/ready":
            return httpx.Response(200, text="Prometheus Server is Ready.")
        q = parse_qs(request.url.query.decode())["query"][0]
        self.queries.append(q)
        self.sim.fire("prom_query")
        if "increase(" in q:
            return _vector(self._counts(q), fault)
        m = re.search(r'node="([^"]+)"', q)
        nodes = [m.group(1)] if m else list(self.sim.nodes)
        bs = [self.sim.behaviour(n) for n in nodes if n in self.sim.nodes]
        rate = sum(b.req_rate for b in bs)
        if "histogram_quantile" in q:
            value = max((b.p95 for b in bs if b.req_rate > 0), default=math.nan) if rate > 0 else math.nan
            result = [{"metric": {}, "value": [0, _fmt(value)]}]
        elif 'status=~"5.."' in q:
            errs = sum(b.req_rate * b.err_ratio for b in bs)
            result = [{"metric": {}, "value": [0, _fmt(errs)]}] if errs > 0 else [{"metric": {}, "value": [0, "0"]}]
        else:
            result = [{"metric": {}, "value": [0, _fmt(rate)]}] if bs else []
        if fault == "multi-series":
            result = result * 2
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return httpx.Response(200, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


    #: Histogram bucket bounds of the simulated service (the lab stand-in's, Go's defaults).
    LES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def _counts(self, q: str) -> list[dict]:
        """``increase()`` over ``[Ns]`` of the canary's (``node="X"``) or the baseline's (``node=~"a|b"``)
        histogram, from each node's behaviour now: ``req_rate * N`` requests, ``err_ratio`` of them 5xx,
        latencies 90 % at half the behaviour's p95 and 10 % at its p95 (so that is their 95th percentile)."""
        seconds = float(re.search(r"\[(\d+)s\]", q).group(1))  # type: ignore[union-attr]
        one = re.search(r'node="([^"]+)"', q)
        many = re.search(r'node=~"([^"]+)"', q)
        if one:
            nodes = [one.group(1)]
        elif many:
            nodes = [n.replace("\\\\", "").replace("\\", "") for n in many.group(1).split("|")]
        else:
            nodes = list(self.sim.nodes)
        bs = [self.sim.behaviour(n) for n in nodes if n in self.sim.nodes]
        if "_bucket" in q:
            out = []
            for le in (*self.LES, math.inf):
                n = sum(b.req_rate * seconds * (0.9 * (0.5 * b.p95 <= le) + 0.1 * (b.p95 <= le)) for b in bs)
                out.append({"metric": {"le": "+Inf" if math.isinf(le) else repr(le)}, "value": [0, _fmt(n)]})
            return out if bs else []
        errors = sum(b.req_rate * seconds * b.err_ratio for b in bs) if 'status=~"5.."' in q else \
            sum(b.req_rate * seconds for b in bs)
        return [{"metric": {}, "value": [0, _fmt(errors)]}]


def _vector(result: list[dict], fault: str | None) -> httpx.Response:
    if fault == "multi-series":
        result = result * 2
    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
    return httpx.Response(200, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class SimLB:
    """An httpx handler for the LB: 200 when some ready server is healthy."""

    def __init__(self, sim: SimFleet) -> None:
        self.sim = sim

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sim.io("lb")
        ok = any(self.sim.admin[n] == 0 and self.sim.healthy(n) for n in self.sim.nodes)
        return httpx.Response(200 if ok else 503, text="ok" if ok else "no server available")


class SimNode(Node):
    """A node as the deploy policy sees it: its binary, its service and its health are data on the SimFleet.

    Policy tests (pipeline, manual rollback, on-call commands) run on these; they do not depend on the
    commands ``node.py`` emits. Each operation announces itself to the SimFleet's observers
    (``node:NAME:OP`` before, ``done:node:NAME:OP`` after; an install's push is ``push:NAME``), so a
    fault-injection test can land a signal or a SIGKILL between any two of them. ``transport`` is still the
    argv-level fake, for the few reads that go through it (``status``'s version probe).
    """

    def __init__(self, sim: SimFleet, name: str, settings: Settings) -> None:
        svc = settings.service
        super().__init__(name, SimNodeTransport(sim, name), install_dir=svc.install_dir,
                         restart_argv=svc.restart_argv, health_url=svc.node_health_url, service=svc.name)
        self.sim = sim

    @property
    def _n(self) -> SimNodeState:
        return self.sim.nodes[self.name]

    def _op(self, op: str, detail: str) -> _Op:
        return _Op(self, op, detail)

    def sha256(self, path: str | None = None) -> str | None:
        path = path or self.binary_path
        with self._op("sha256sum", f"sha256sum -- {path}"):
            data = self._n.files.get(path)
            return None if data is None else sha(data)

    def install(self, local_path: Path, sha256: str) -> bool:
        if self.sha256() == sha256:
            return False
        self.sim.io(f"push:{self.name}")
        data = Path(local_path).read_bytes()
        if self._n.stopped:
            raise PushError(f"[{self.name}] push of {Path(local_path).name} failed: incus: Instance is not running")
        if self.name in self.sim.fail_push_on or self.name in self.sim.partial_push_on:
            raise PushError(f"[{self.name}] push of {Path(local_path).name} failed: write failed: no space left "
                            "on device")
        if self.sim.corrupt_next_push:
            self.sim.corrupt_next_push = False
            raise PushError(f"[{self.name}] pushed binary is corrupted: sha256 differs from {sha256[:12]}; "
                            "not installed")
        self.sim.io(f"done:push:{self.name}")
        with self._op("mv", f"mv -f -- NEW {self.binary_path}"):  # the rename: atomic
            self._n.write(self.binary_path, data, self.sim.tick())
        return True

    def copy_verified(self, src: str, dst: str, sha256: str) -> None:
        with self._op("cp", f"cp -- {src} {dst}"):
            data = self._n.files.get(src)
            if data is None:
                raise CommandFailed(f"[{self.name}] cp: cannot stat {src!r}: No such file or directory")
            if sha(data) != sha256:
                raise PushError(f"[{self.name}] copy of {src} to {dst} failed: sha256 differs from {sha256[:12]}")
            self._n.write(dst, data, self.sim.tick())

    def restart(self) -> None:
        with self._op("systemctl", f"systemctl restart {self.service}"):
            n = self._n
            n.start_limited = False  # Node.restart clears systemd's start limit (reset-failed) before retrying
            n.restarts += 1
            n.running_sha = sha(n.files.get(self.binary_path, b""))
            n.started_at = self.sim.tick()
            self.sim.sessions[self.name] = 0
            self.sim.fire(f"restart:{self.name}")
            if not self.sim.behaviour(self.name).starts:
                n.start_limited = True
                raise CommandFailed(f"[{self.name}] systemctl restart {self.service}: exit 1: Job for "
                                    f"{self.service}.service failed.")

    def service_restarts(self) -> int | None:
        with self._op("systemctl", f"systemctl show -p NRestarts {self.service}"):
            return self._n.crashes

    def service_state(self) -> ServiceState | None:
        with self._op("systemctl", f"systemctl show {self.service}"):
            n = self._n
            if self.sim.behaviour(self.name).crash_loop:
                n.crashes += 1
                return ServiceState("activating", "auto-restart", n.crashes, 0)
            if n.running_sha is not None and self.sim.behaviour(self.name).starts:
                return ServiceState("active", "running", n.crashes, 1000 + n.restarts)
            state = ("failed", "failed") if n.start_limited else ("activating", "auto-restart")
            return ServiceState(state[0], state[1], n.crashes, 0)

    def runs_installed(self) -> bool:
        state = self.service_state()
        if state is None or not state.running:
            return False
        with self._op("stat", f"stat {self.binary_path} /proc/{state.pid}"):
            n = self._n
            return self.binary_path in n.files and n.started_at >= n.ctimes.get(self.binary_path, 0)

    def health(self, *, timeout: float = 3.0) -> HealthResult:
        if self.sim.behaviour(self.name).crash_loop:
            self.sim.io(f"node:{self.name}:curl")
            return HealthResult(False, None, 0.001, error="curl: (7) Failed to connect to 127.0.0.1 port 8080")
        if self._n.stopped:  # Node.health reports an unreachable container as a failed check, never raises
            self.sim.io(f"node:{self.name}:curl")
            return HealthResult(False, None, 0.001, error=f"[{self.name}] incus: Instance is not running")
        with self._op("curl", f"curl {self.health_url}"):
            b = self.sim.behaviour(self.name)
            if not b.starts:
                return HealthResult(False, None, 0.001, error="curl: (7) Failed to connect to 127.0.0.1 port 8080")
            status = 500 if self.name in self.sim.broken_nodes else b.health_status
            body = json.dumps({"status": "ok", "version": b.version}) if b.version else '{"status":"ok"}'
            return HealthResult(status == 200, status, 0.001, body=body)

    def remove_stale_temps(self) -> None:
        with self._op("find", f"find {self.install_dir} -name *{TMP_PREFIX}* -delete"):
            for p in [p for p in self._n.files if TMP_PREFIX in p or ".veza-tmp-" in p]:
                del self._n.files[p]


class _Op:
    """One node operation: announced before and after, recorded, refused when the container is stopped."""

    def __init__(self, node: SimNode, op: str, detail: str) -> None:
        self.node, self.op, self.detail = node, op, detail

    def __enter__(self) -> None:
        sim = self.node.sim
        sim.io(f"node:{self.node.name}:{self.op}")
        sim.commands.append((self.node.name, self.detail))
        if sim.nodes[self.node.name].stopped:
            raise IncusError(f"[{self.node.name}] incus: Instance is not running")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.node.sim.io(f"done:node:{self.node.name}:{self.op}")


def sim_fleet(settings: Settings, sim: SimFleet | None = None, *, argv: bool = False) -> tuple[Fleet, SimFleet]:
    """A Fleet wired to a SimFleet (created from the settings' nodes when not given).

    Nodes are ``SimNode`` (node-level) unless ``argv``: then the real ``Node`` over the argv-level
    ``SimNodeTransport`` -- for the tests of what node.py itself does inside a deploy (lost output, a push
    that fails half-way, a corrupted push caught on the node).
    """
    sim = sim or SimFleet(list(settings.pool.nodes), install_dir=settings.service.install_dir)
    svc = settings.service
    if argv:
        nodes: dict[str, Node] = {
            n: Node(n, SimNodeTransport(sim, n), install_dir=svc.install_dir, restart_argv=svc.restart_argv,
                    health_url=svc.node_health_url, service=svc.name)
            for n in settings.pool.nodes
        }
    else:
        nodes = {n: SimNode(sim, n, settings) for n in settings.pool.nodes}
    fleet = Fleet(
        settings=settings,
        haproxy=HAProxy(SimHAProxy(sim, settings.haproxy.backend), settings.haproxy.backend),
        nodes=nodes,
        prom=Prometheus(httpx.Client(transport=httpx.MockTransport(SimPrometheus(sim))), settings.prometheus.url),
        lb_client=httpx.Client(transport=httpx.MockTransport(SimLB(sim))),
        store=StateStore(SimStateTransport(sim), "/var/lib/veza-canary"),
        clock=sim.clock,
    )
    return fleet, sim


class SimOtherLB:
    """Another HAProxy in front of the same SimFleet (issue 18 §2): its own runtime state, the same nodes.

    ``SimHAProxy(SimOtherLB(sim))`` answers like a second HAProxy: admin states, runtime weights, map
    entries, sessions, its process id, ``down`` and the commands it received are its own; everything
    else (the nodes, their health, the configured weights, the I/O observers) is the fleet's.
    """

    OWN = ("admin", "weights", "maps", "sessions", "sticky_sessions", "haproxy_pid", "haproxy_down", "commands")

    def __init__(self, sim: SimFleet) -> None:
        own = {"admin": dict.fromkeys(sim.nodes, 0), "weights": dict(sim.initial_weights),
               "maps": {p: {} for p in sim.maps}, "sessions": dict.fromkeys(sim.nodes, 0), "sticky_sessions": {},
               "haproxy_pid": 2000, "haproxy_down": False, "commands": []}
        object.__setattr__(self, "_sim", sim)
        object.__setattr__(self, "_own", own)

    def __getattr__(self, name: str) -> object:
        own = object.__getattribute__(self, "_own")
        return own[name] if name in own else getattr(object.__getattribute__(self, "_sim"), name)

    def __setattr__(self, name: str, value: object) -> None:
        if name in self.OWN:
            self._own[name] = value
        else:
            setattr(self._sim, name, value)

    def reload_haproxy(self) -> None:
        """This HAProxy reloads without a server-state file (the fleet's other HAProxy keeps its state)."""
        self.weights = dict(self._sim.initial_weights)
        self.admin = dict.fromkeys(self.admin, 0)
        self.maps = {path: {} for path in self.maps}
        self.haproxy_pid += 1

    def own(self, **values: object) -> SimOtherLB:
        """Give this HAProxy its own value of a fleet attribute: ``own(algo="static-rr")`` is a config of its own."""
        self._own.update(values)
        return self

    #: Judged on this HAProxy's algorithm (its own one after ``own(algo=...)``, else the fleet's).
    static_weights = property(SimFleet.static_weights.fget)


def two_lb_fleet(settings: Settings, sim: SimFleet | None = None, *,
                 names: tuple[str, str] = ("haproxy", "haproxy-2")) -> tuple[Fleet, SimFleet, SimOtherLB]:
    """``sim_fleet`` with ``fleet.haproxy`` an ``HAProxySet`` of the fleet's HAProxy and a ``SimOtherLB``."""
    from veza_canary.lbs import HAProxySet

    fleet, sim = sim_fleet(settings, sim)
    other = SimOtherLB(sim)
    backend = settings.haproxy.backend
    fleet.haproxy = HAProxySet([(names[0], fleet.haproxy),
                                (names[1], HAProxy(SimHAProxy(other, backend), backend))])  # type: ignore[arg-type]
    return fleet, sim, other
