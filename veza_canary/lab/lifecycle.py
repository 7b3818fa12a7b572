"""``up``, ``down``, ``status`` and ``env``: the lab's lifecycle, step by step.

``up`` reads like its checklist: preflight, guard, daemon, preseed, image, containers,
nodes, HAProxy, Prometheus, traffic, and the checks that prove it all works. Each step
is idempotent, so a second ``up`` reconciles (restores the 1.0.0 build, puts drained
servers back, restarts stopped traffic) in a few seconds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from veza_canary.errors import VezaError
from veza_canary.lab import daemon, fleet, image, probe
from veza_canary.lab.config import (
    BRIDGE,
    HAPROXY_SOCKET,
    HEALTH_PATH,
    INSTALL_DIR,
    LOADGEN_SERVICE,
    NODE_PORT,
    POOL_BACKEND,
    SERVICE_NAME,
    STATE_DIR,
    STORAGE_POOL,
    SUBNET,
    USERS_LOCK,
    LabConfig,
    LabError,
    LabUnavailable,
)
from veza_canary.lab.configs import prometheus_targets
from veza_canary.lab.state import LabState
from veza_canary.lab.traffic import traffic_rate_query
from veza_canary.lab.wait import wait_until
from veza_canary.log import get_logger

log = get_logger(__name__)

Progress = Callable[[str], None]

REQUIRED_COMMANDS = ("incus", "nft", "debootstrap", "dnsmasq", "ip", "tar", "chroot")
INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps.sh"
INSTALL_HINT = "bash scripts/install-system-deps.sh   (as root, from the veza-canary checkout)"


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class LabInfo:
    """What a running lab looks like from the host (returned by ``up``, used by tests)."""

    config: LabConfig
    ips: dict[str, str]
    prom_url: str
    lb_url: str
    env: dict[str, str]
    started_incusd: bool
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.config.nodes

    @property
    def canary(self) -> str:
        return self.config.canary_node

    @property
    def peers(self) -> tuple[str, ...]:
        return self.config.peers

    @property
    def haproxy(self) -> str:
        return self.config.haproxy

    @property
    def haproxies(self) -> tuple[str, ...]:
        return self.config.haproxies

    @property
    def prom(self) -> str:
        return self.config.prom


# --- preflight --------------------------------------------------------------------------------------------

def missing_components() -> list[str]:
    """What this machine lacks to run the lab (empty when it is ready)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the lab runs incusd, nft and debootstrap)")
    for cmd in REQUIRED_COMMANDS:
        if shutil.which(cmd) is None:
            missing.append(f"command {cmd!r}")
    if not os.access(daemon.INCUSD, os.X_OK):
        missing.append(f"{daemon.INCUSD} (package incus-base)")
    return missing


def preflight(cfg: LabConfig, progress: Progress) -> None:
    missing = missing_components()
    if missing and os.geteuid() == 0 and cfg.install_deps and INSTALL_SCRIPT.is_file():
        progress(f"installing system packages ({', '.join(missing)} missing): bash {INSTALL_SCRIPT}")
        r = daemon.host().run(("bash", str(INSTALL_SCRIPT)), check=False, timeout=900)
        if not r.ok:
            raise LabUnavailable(f"installing system packages failed: {r.describe()}", hint=INSTALL_HINT)
        missing = missing_components()
    if missing:
        raise LabUnavailable(f"the lab cannot run here: missing {', '.join(missing)}", hint=INSTALL_HINT)
    conflict = daemon.subnet_conflict()
    if conflict:
        raise LabError(f"the lab subnet {SUBNET} is already used on this host: {conflict}",
                       hint="set VEZA_LAB_SUBNET=10.x.y.0/24 to another free /24")


# --- up -------------------------------------------------------------------------------------------------

@contextmanager
def _lifecycle_lock(progress: Progress) -> Iterator[None]:
    """One ``up``/``down`` at a time on this machine (a second one waits)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another lab up/down is running; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def up(cfg: LabConfig | None = None, *, progress: Progress = _quiet) -> LabInfo:
    """Bring the lab up (or reconcile it); return when HAProxy, Prometheus and traffic all work."""
    cfg = cfg or LabConfig()
    with _lifecycle_lock(progress):
        return _up(cfg, progress)


def _up(cfg: LabConfig, progress: Progress) -> LabInfo:
    timings: dict[str, float] = {}
    t_start = time.monotonic()

    def step(name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        timings[name] = round(time.monotonic() - t0, 2)

    state = LabState.load()
    step("preflight", lambda: preflight(cfg, progress))
    step("guard", lambda: _ensure_guard(state, progress))
    step("incusd", lambda: _ensure_incusd(state, progress))
    step("preseed", daemon.apply_preseed)
    step("image", lambda: image.ensure_image(progress))
    step("containers", lambda: fleet.ensure_containers(cfg, progress))
    if state.haproxy_exporter is None:
        state.haproxy_exporter = fleet.haproxy_has_exporter(cfg.haproxy)
        if not state.haproxy_exporter:
            progress("HAProxy has no Prometheus exporter in this build: HAProxy metrics are not scraped")
    exporter = bool(state.haproxy_exporter)
    # Prometheus first: its first samples land ~6 s after start, so let that overlap the rest.
    progress("configuring Prometheus, the nodes and HAProxy")
    step("prometheus", lambda: fleet.setup_prometheus(cfg, exporter=exporter))
    step("nodes", lambda: _setup_nodes(cfg, progress))
    # HAProxy after the nodes: its first checks must pass, or servers start DOWN for `rise` checks.
    step("haproxy", lambda: [fleet.setup_haproxy(cfg, exporter=exporter, name=h) for h in cfg.haproxies])
    step("servers_up", lambda: _wait_servers_up(cfg, progress))
    step("loadgen", lambda: fleet.setup_loadgen(cfg))
    step("prom_targets", lambda: _wait_targets(cfg, exporter, progress))
    step("traffic", lambda: _wait_traffic(cfg, progress))
    state.config = cfg.to_dict()
    state.save()
    timings["total"] = round(time.monotonic() - t_start, 2)
    info = _info(cfg, state, timings)
    log.info("lab up timings", **timings)
    lbs = f" ({cfg.lbs} HAProxy: {', '.join(cfg.haproxies)})" if cfg.lbs > 1 else ""
    progress(f"lab is up in {timings['total']:.1f}s: {len(cfg.nodes)} nodes UP in HAProxy{lbs}, "
             f"Prometheus at {info.prom_url}, traffic through {info.lb_url}")
    return info


def _ensure_guard(state: LabState, progress: Progress) -> None:
    if state.ip_forward_before is None:
        state.ip_forward_before = daemon.ip_forward()
        state.save()
    if not daemon.guard_loaded():
        progress(f"loading the nft guard (table {' '.join(daemon.GUARD_TABLE)}) isolating {BRIDGE}")
        daemon.load_guard()


def _ensure_incusd(state: LabState, progress: Progress) -> None:
    if daemon.incusd_answers():
        r = daemon.host().run((daemon.INCUSD, "waitready", "--timeout=60"), check=False, timeout=75)
        if not r.ok:
            raise LabError(f"incusd answers on its socket but is not ready: {r.describe()}")
        if state.incusd_started and not daemon.is_incusd_pid(state.incusd_pid):
            # A daemon the lab did not start took over; not ours to stop.
            state.incusd_started, state.incusd_pid = False, None
            state.save()
        return
    progress("starting incusd (no daemon was running)")
    pid = daemon.start_incusd()
    state.incusd_started, state.incusd_pid = True, pid
    state.save()


def _setup_nodes(cfg: LabConfig, progress: Progress) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        restarted = [n for n, r in zip(cfg.nodes, pool.map(fleet.setup_node, cfg.nodes), strict=True) if r]
    if restarted:
        progress(f"started {SERVICE_NAME} 1.0.0 on {', '.join(restarted)}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(fleet.wait_node_healthy, cfg.nodes))


def _wait_servers_up(cfg: LabConfig, progress: Progress) -> None:
    for h in cfg.haproxies:
        probe.set_servers_ready(cfg, h)

    def all_up() -> bool:
        return all(sorted(s.name for s in probe.server_stats(cfg, h) if s.up) == sorted(cfg.nodes)
                   for h in cfg.haproxies)

    wait_until(all_up, 60, f"every server UP in HAProxy backend {POOL_BACKEND}", interval=0.25,
               retry_on=(VezaError,))
    on = f" on each of {', '.join(cfg.haproxies)}" if cfg.lbs > 1 else ""
    progress(f"HAProxy: all {len(cfg.nodes)} servers UP{on}")


def _wait_targets(cfg: LabConfig, exporter: bool, progress: Progress) -> None:
    want = prometheus_targets(cfg, exporter=exporter)
    wait_until(lambda: probe.targets_up(cfg) == want, 90, f"count(up == 1) == {want} in Prometheus",
               interval=0.5, retry_on=(VezaError,))
    progress(f"Prometheus: {want}/{want} targets up")


def _wait_traffic(cfg: LabConfig, progress: Progress) -> None:
    def per_node() -> bool:
        # A short rate window: only samples taken since this `up` count (not pre-restart data).
        result = probe.prom_query(cfg, 'sum by (node) (rate(veza_gin_http_request_duration_seconds_count'
                                       '{job="veza-backend-api",path!="/api/v1/health"}[5s]))')
        return len({r["metric"].get("node") for r in result if float(r["value"][1]) > 0}) == len(cfg.nodes)

    wait_until(per_node, 60, "API traffic on every node in Prometheus", interval=0.5, retry_on=(VezaError,))
    progress(f"traffic flowing: {cfg.rate:g} req/s through HAProxy to every node")


# --- down -----------------------------------------------------------------------------------------------

def down(*, purge: bool = False, force: bool = False, progress: Progress = _quiet) -> None:
    """Delete everything the lab created; stop incusd and drop the guard only if the lab set them up.

    Refuses while a test session holds ``USERS_LOCK`` (shared), unless ``force``.
    """
    if not force and _lab_in_use():
        raise LabError("a test session is using the lab (it holds " + str(USERS_LOCK) + "); nothing was deleted",
                       hint="wait for it to finish, or `veza-canary lab down --force`")
    with _lifecycle_lock(progress):
        _down(purge, progress)


def _lab_in_use() -> bool:
    try:
        fh = open(USERS_LOCK)  # noqa: SIM115
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _down(purge: bool, progress: Progress) -> None:
    state = LabState.load()
    started_here = False
    if not daemon.incusd_answers() and _incus_has_lab_leftovers() and os.access(daemon.INCUSD, os.X_OK):
        # The daemon died (e.g. the session ended) but its database still lists lab objects:
        # start it to delete them cleanly, then stop it again.
        progress("starting incusd to delete what the lab left behind")
        state.incusd_pid, state.incusd_started, started_here = daemon.start_incusd(), True, True
        state.save()
    if daemon.incusd_answers():
        others = fleet.foreign_instances()
        if others:
            raise LabError(
                f"instances the lab did not create use its Incus: {', '.join(others)}; nothing was deleted",
                hint="delete them first (incus delete --force NAME), then run `veza-canary lab down` again")
        fleet.delete_lab_containers(progress)
        progress("deleting image, profile devices, network and storage pool")
        image.delete_image()
        _delete_infra()
    if state.incusd_started and state.incusd_pid:
        progress(f"stopping incusd (pid {state.incusd_pid}, started by the lab)")
        daemon.stop_incusd(state.incusd_pid)
        _reap_leftovers(progress)
        daemon.remove_empty_incus_table()
    elif started_here:
        daemon.stop_incusd(state.incusd_pid or 0)
    if daemon.guard_loaded() or state.ip_forward_before is not None:
        progress("removing the nft guard")
        daemon.remove_guard()
    if state.ip_forward_before == "0" and daemon.ip_forward() != "0":
        progress("setting net.ipv4.ip_forward back to 0")
        daemon.set_ip_forward("0")
    if purge:
        progress("purging the cached image tarballs")
        image.purge_cache()
    LabState.remove()
    progress("lab is down")


def _incus_has_lab_leftovers() -> bool:
    return Path("/var/lib/incus/database/global/db.bin").exists() and (
        Path(f"/var/lib/incus/networks/{BRIDGE}").exists()
        or Path(f"/var/lib/incus/storage-pools/{STORAGE_POOL}").exists()
        or any(Path("/var/lib/incus/containers").glob("*"))
    )


def _delete_infra() -> None:
    for dev in ("eth0", "root"):
        r = daemon.incus("profile", "device", "show", "default", check=False)
        if r.ok and f"{dev}:" in r.stdout:
            daemon.incus("profile", "device", "remove", "default", dev, check=False)
    for args in (("network", "delete", BRIDGE), ("storage", "delete", STORAGE_POOL)):
        r = daemon.incus(*args, check=False, timeout=120)
        if not r.ok and "not found" not in r.stderr.lower():
            raise LabError(f"incus {' '.join(args)}: {r.describe()}")


def _reap_leftovers(progress: Progress) -> None:
    import signal

    for pid, cmd in daemon.leftover_processes():
        progress(f"stopping leftover process {pid}: {cmd[:80]}")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    try:
        wait_until(lambda: not daemon.leftover_processes(), 10, "leftover incus processes to exit")
    except LabError:
        for pid, _cmd in daemon.leftover_processes():
            os.kill(pid, signal.SIGKILL)


# --- status and env ----------------------------------------------------------------------------------------

def current_config() -> LabConfig:
    state = LabState.load()
    if not state.config:
        raise LabError("no lab is recorded as up on this machine", hint="veza-canary lab up")
    return LabConfig.from_dict(state.config)


def env(cfg: LabConfig | None = None) -> dict[str, str]:
    """The deploy tool's environment for this lab (names from veza_canary.settings)."""
    cfg = cfg or current_config()
    return {
        "PROM_URL": probe.prom_url(cfg),
        "LB_URL": f"http://{cfg.ip_of(cfg.haproxy)}",
        "CANARY_NODE": cfg.canary_node,
        "PEER_NODES": " ".join(cfg.peers),
        "POOL_BACKEND": POOL_BACKEND,
        "HAPROXY_CONTAINER": cfg.haproxy,
        "HAPROXY_SOCKET": HAPROXY_SOCKET,
        "INSTALL_DIR": INSTALL_DIR,
        "SERVICE_NAME": SERVICE_NAME,
        "NODE_HEALTH_URL": f"http://127.0.0.1:{NODE_PORT}",
        "HEALTH_PATH": HEALTH_PATH,
        "ALLOW_SHORT_SLI_WINDOW": "1",
        "SLI_WINDOW": "30",
        "SLI_PROBE_INTERVAL": "3",
        "SLI_RATE_WINDOW": "10s",
        "DRAIN_TIMEOUT": "20",
        "NODE_HEALTH_TIMEOUT": "30",
        "UP_TIMEOUT": "30",
        "POLL_INTERVAL": "0.5",
        # Several HAProxy: the deploy tool drives them all (docs/multi-lb.md); unset with one.
        **({"HAPROXY_CONTAINERS": " ".join(cfg.haproxies)} if cfg.lbs > 1 else {}),
    }


def _info(cfg: LabConfig, state: LabState, timings: dict[str, float]) -> LabInfo:
    e = env(cfg)
    return LabInfo(config=cfg, ips={n: cfg.ip_of(n) for n in cfg.containers}, prom_url=e["PROM_URL"],
                   lb_url=e["LB_URL"], env=e, started_incusd=state.incusd_started, timings=timings)


def info() -> LabInfo:
    """LabInfo of the lab recorded as up (no checks; see ``status``)."""
    cfg = current_config()
    return _info(cfg, LabState.load(), {})


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    name: str
    status: str
    ip: str | None


@dataclass(frozen=True, slots=True)
class LabStatus:
    incusd: str
    guard_loaded: bool
    containers: list[ContainerStatus]
    servers: list[probe.ServerStat]
    targets: list[probe.Target]
    traffic_rate: float | None
    loadgen_active: bool
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems


def status() -> LabStatus:
    """Everything ``lab status`` shows; problems are collected, not raised."""
    state = LabState.load()
    problems: list[str] = []
    if not daemon.incusd_answers():
        incusd = "not running"
        return LabStatus(incusd, daemon.guard_loaded(), [], [], [], None, False,
                         ["incusd is not running" + (" (lab is down)" if not state.config else "")])
    incusd = f"running (pid {state.incusd_pid}, started by the lab)" if state.incusd_started else \
        "running (not started by the lab)"
    guard = daemon.guard_loaded()
    if not guard:
        problems.append("the nft guard is not loaded")
    found = fleet.list_lab_containers()
    containers = [ContainerStatus(n, i.get("status", "?"), fleet.ipv4_of(i)) for n, i in sorted(found.items())]
    if not state.config:
        problems.append("no lab recorded as up (run `veza-canary lab up`)")
        return LabStatus(incusd, guard, containers, [], [], None, False, problems)
    cfg = LabConfig.from_dict(state.config)
    for n in cfg.containers:
        if n not in found:
            problems.append(f"container {n} is missing")
        elif found[n].get("status") != "Running":
            problems.append(f"container {n} is {found[n].get('status')}")
    servers: list[probe.ServerStat] = []
    targets: list[probe.Target] = []
    rate = None
    loadgen = False
    try:
        servers = probe.server_stats(cfg)
        problems += [f"HAProxy server {s.name} is {s.status}" for s in servers if not s.up]
        for h in cfg.haproxies[1:]:
            problems += [f"HAProxy server {s.name} is {s.status} on {h}" for s in probe.server_stats(cfg, h)
                         if not s.up]
        loadgen = fleet.is_active(cfg.haproxy, LOADGEN_SERVICE)
        if not loadgen:
            problems.append(f"{LOADGEN_SERVICE} is not running (its duration may have run out; `lab up`)")
    except VezaError as exc:
        problems.append(f"HAProxy: {exc}")
    try:
        targets = probe.prom_targets(cfg)
        problems += [f"Prometheus target {t.node or t.url} is {t.health}" for t in targets if t.health != "up"]
        rate = probe.prom_scalar(cfg, traffic_rate_query("10s"))
    except VezaError as exc:
        problems.append(f"Prometheus: {exc}")
    return LabStatus(incusd, guard, containers, servers, targets, rate, loadgen, problems)


def restore_node(node: str, cfg: LabConfig | None = None) -> None:
    """Put one node back as ``up`` left it: 1.0.0 build running, server ready and UP in HAProxy."""
    cfg = cfg or current_config()
    if node not in cfg.nodes:
        raise LabError(f"{node!r} is not a node of the lab ({', '.join(cfg.nodes)})")
    fleet.setup_node(node)
    fleet.wait_node_healthy(node)
    for h in cfg.haproxies:
        reply = probe.haproxy_command(cfg, f"set server {POOL_BACKEND}/{node} state ready;"
                                           f"set server {POOL_BACKEND}/{node} weight 100", container=h)
        if reply.strip():
            raise LabError(f"HAProxy {h} refused to set {node} ready: {reply.strip()[:200]}")

    def node_up() -> bool:
        return all(any(s.name == node and s.up for s in probe.server_stats(cfg, h)) for h in cfg.haproxies)

    wait_until(node_up, 30, f"{node} UP in HAProxy", interval=0.25, retry_on=(VezaError,))
