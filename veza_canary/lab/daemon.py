"""The host side of the lab: incusd (start, preseed, stop), the nft guard and ip_forward.

incusd is started only when none answers on its socket, in its own session, with every
proxy pointed at a dead loopback port so it never reaches the internet. The state file
records whether the lab started it, so ``down`` stops only what ``up`` started.

The guard is an nft table whose forward-hook chain (priority -100) drops anything that
enters or leaves the lab's bridge to or from another interface. Containers are launched
only once ``guard_loaded()`` says it is there.
"""

from __future__ import annotations

import grp
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from veza_canary.errors import CommandFailed
from veza_canary.lab.config import (
    BRIDGE,
    DEAD_PROXY,
    GUARD_CHAIN,
    GUARD_TABLE,
    INCUS_SOCKET,
    INCUSD,
    STATE_DIR,
    STORAGE_POOL,
    SUBNET,
    LabError,
    gateway,
)
from veza_canary.log import get_logger
from veza_canary.transport import LocalTransport, Result

log = get_logger(__name__)

INCUSD_LOG = STATE_DIR / "incusd.log"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
ADMIN_GROUP = "incus-admin"

_host = LocalTransport()


def host() -> LocalTransport:
    return _host


def incus(*args: str, check: bool = True, timeout: float = 120.0, input: str | bytes | None = None) -> Result:
    """Run ``incus ARGS`` on this host (quiet: no progress bars)."""
    return _host.run(("incus", "-q", *args), check=check, timeout=timeout, input=input)


# --- incusd -------------------------------------------------------------------------------

def incusd_answers(timeout: float = 1.0) -> bool:
    """True when something accepts connections on incusd's unix socket."""
    if not INCUS_SOCKET.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(INCUS_SOCKET))
        return True
    except OSError:
        return False
    finally:
        s.close()


def is_incusd_pid(pid: int | None) -> bool:
    """True when ``pid`` is alive and is an incusd daemon (guards against PID reuse)."""
    if not pid:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if _is_zombie(Path(f"/proc/{pid}")):
        return False
    return exe.removesuffix(" (deleted)") == INCUSD and b"waitready" not in cmdline


def _ensure_group() -> None:
    try:
        grp.getgrnam(ADMIN_GROUP)
    except KeyError:
        _host.run(("groupadd", "--system", ADMIN_GROUP), timeout=30)


def _raise_nofile() -> None:  # runs in the child before exec
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 20000) if hard != resource.RLIM_INFINITY else 20000
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_incusd() -> int:
    """Start incusd in its own session, wait until ready; return its PID."""
    if not os.access(INCUSD, os.X_OK):
        raise LabError(f"{INCUSD} is missing", hint="bash scripts/install-system-deps.sh")
    _ensure_group()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HTTPS_PROXY=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY, https_proxy=DEAD_PROXY, http_proxy=DEAD_PROXY,
               NO_PROXY="", PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    with open(INCUSD_LOG, "ab") as logf:
        proc = subprocess.Popen(  # a daemon outlives this call: no transport fits, argv only
            (INCUSD, "--group", ADMIN_GROUP, "--logfile", str(INCUSD_LOG)),
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
            start_new_session=True, close_fds=True, preexec_fn=_raise_nofile,  # noqa: PLW1509
        )
    r = _host.run((INCUSD, "waitready", "--timeout=60"), check=False, timeout=75)
    if not r.ok:
        if proc.poll() is None:
            proc.terminate()
        raise LabError(f"incusd did not become ready: {r.describe()}", hint=f"see {INCUSD_LOG}")
    log.info("incusd started", pid=proc.pid)
    return proc.pid


def stop_incusd(pid: int, *, timeout: float = 30.0) -> None:
    """Stop the incusd the lab started (by PID), gently first."""
    if not is_incusd_pid(pid):
        return
    # `incus admin shutdown` stops instances and the daemon; nothing should be left by now.
    _host.run(("incus", "admin", "shutdown", "--timeout", "20"), check=False, timeout=40)
    if _wait_gone(pid, timeout):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_incusd_pid(pid):
            return
        os.kill(pid, sig)
        if _wait_gone(pid, 10):
            return
    raise LabError(f"incusd (pid {pid}) did not stop")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        if not is_incusd_pid(pid):
            return True
        time.sleep(0.1)
    return not is_incusd_pid(pid)


def leftover_processes() -> list[tuple[int, str]]:
    """Processes the lab's incusd leaves behind when things are not deleted first."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if not cmd or _is_zombie(d):
            continue
        if (
            (cmd.startswith(INCUSD) and "waitready" not in cmd)
            or cmd.startswith("[lxc monitor]")
            or ("dnsmasq" in cmd and f"--interface={BRIDGE}" in cmd)
            or ("forkdns" in cmd and BRIDGE in cmd)
        ):
            found.append((int(d.name), cmd[:200]))
    return found


def _is_zombie(proc_dir: Path) -> bool:
    try:
        return (proc_dir / "stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


# --- preseed ------------------------------------------------------------------------------

def preseed() -> dict[str, object]:
    """The init preseed (JSON is valid YAML, so no YAML library is needed)."""
    return {
        "config": {
            "core.proxy_http": DEAD_PROXY,
            "core.proxy_https": DEAD_PROXY,
            "images.auto_update_interval": "0",
        },
        "networks": [{
            "name": BRIDGE,
            "type": "bridge",
            "description": "veza-canary lab (isolated by the nft guard)",
            "config": {
                "ipv4.address": f"{gateway()}/{SUBNET.prefixlen}",
                "ipv4.nat": "false",
                "ipv4.dhcp": "true",
                "ipv6.address": "none",
                "raw.dnsmasq": "no-resolv",
            },
        }],
        "storage_pools": [{"name": STORAGE_POOL, "driver": "dir", "config": {}}],
        "profiles": [{
            "name": "default",
            "description": "veza-canary lab",
            "config": {},
            "devices": {
                "root": {"type": "disk", "path": "/", "pool": STORAGE_POOL},
                "eth0": {"type": "nic", "name": "eth0", "network": BRIDGE},
            },
        }],
    }


def apply_preseed() -> None:
    r = _host.run(("incus", "admin", "init", "--preseed"), input=json.dumps(preseed()), check=False,
                  timeout=120)
    if not r.ok:
        raise LabError(f"incus preseed failed: {r.describe()}")


def subnet_conflict() -> str | None:
    """A host route or address in the lab subnet on another interface, described; else None."""
    r = _host.run(("ip", "-j", "-4", "addr", "show"), timeout=10)
    import ipaddress

    for link in json.loads(r.stdout or "[]"):
        if link.get("ifname") == BRIDGE:
            continue
        for a in link.get("addr_info", []):
            net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            if net.overlaps(SUBNET):
                return f"{link.get('ifname')} has {a['local']}/{a['prefixlen']}"
    r = _host.run(("ip", "-j", "-4", "route", "show"), timeout=10)
    for route in json.loads(r.stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == BRIDGE:
            continue
        if ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False).overlaps(SUBNET):
            return f"route {dst} via {route.get('dev')}"
    return None


# --- nft guard ------------------------------------------------------------------------------

def guard_ruleset() -> str:
    family, table = GUARD_TABLE
    return f"""table {family} {table} {{
    chain {GUARD_CHAIN} {{
        type filter hook forward priority -100; policy accept;
        iifname "{BRIDGE}" oifname != "{BRIDGE}" counter drop comment "lab bridge: no way out"
        oifname "{BRIDGE}" iifname != "{BRIDGE}" counter drop comment "lab bridge: no way in"
    }}
}}
"""


def guard_loaded() -> bool:
    """True when the guard table with its drop rules is in the kernel."""
    family, table = GUARD_TABLE
    r = _host.run(("nft", "list", "table", family, table), check=False, timeout=10)
    return r.ok and GUARD_CHAIN in r.stdout and "hook forward priority" in r.stdout and r.stdout.count("drop") >= 2


def load_guard() -> None:
    """(Re)load the guard atomically: delete-and-create in one nft transaction."""
    family, table = GUARD_TABLE
    script = f"table {family} {table}\ndelete table {family} {table}\n" + guard_ruleset()
    try:
        _host.run(("nft", "-f", "-"), input=script, timeout=10)
    except CommandFailed as exc:
        raise LabError(f"cannot load the nft guard: {exc}") from exc
    if not guard_loaded():
        raise LabError("the nft guard is not loaded after loading it")


def remove_guard() -> None:
    family, table = GUARD_TABLE
    _host.run(("nft", "delete", "table", family, table), check=False, timeout=10)


def remove_empty_incus_table() -> None:
    """incusd leaves an empty ``inet incus`` table behind; remove it only when it is empty."""
    r = _host.run(("nft", "-j", "list", "table", "inet", "incus"), check=False, timeout=10)
    if not r.ok:
        return
    items = json.loads(r.stdout).get("nftables", [])
    if not any("chain" in i or "rule" in i or "set" in i or "map" in i for i in items):
        _host.run(("nft", "delete", "table", "inet", "incus"), check=False, timeout=10)


# --- ip_forward -----------------------------------------------------------------------------

def ip_forward() -> str:
    return IP_FORWARD.read_text().strip()


def set_ip_forward(value: str) -> None:
    IP_FORWARD.write_text(value + "\n")

