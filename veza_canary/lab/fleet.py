"""The lab's containers: launch, wait, write configs, start services (idempotently).

Every container the lab creates carries ``user.veza-lab=true`` and a static address
(a DHCP reservation on the lab bridge). Files are compared by sha256 before they are
pushed, and a service is restarted or reloaded only when one of its files changed (or
it is not running), so a second ``lab up`` is quick and does not disturb the fleet.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from veza_canary.errors import CommandFailed, IncusError
from veza_canary.lab import configs, traffic
from veza_canary.lab.config import (
    GOOD_VERSION,
    IMAGE_ALIAS,
    INSTALL_DIR,
    LAB_MARK,
    LOADGEN_SERVICE,
    PREVIOUS_VERSION,
    SERVICE_NAME,
    LabConfig,
    LabError,
)
from veza_canary.lab.daemon import guard_loaded, host, incus
from veza_canary.lab.standin import Faults, render_standin
from veza_canary.lab.wait import wait_until
from veza_canary.transport import IncusTransport

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class FileSpec:
    path: str
    content: bytes
    mode: int = 0o644

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def ct(name: str) -> IncusTransport:
    return IncusTransport(name, host())


# --- containers ---------------------------------------------------------------------------------

def list_lab_containers() -> dict[str, dict]:
    """Containers marked as the lab's: name -> incus list entry."""
    r = incus("list", "--format", "json", timeout=60)
    out = {}
    for inst in json.loads(r.stdout or "[]"):
        if (inst.get("config") or {}).get(LAB_MARK) == "true":
            out[inst["name"]] = inst
    return out


def foreign_instances() -> list[str]:
    """Instances (any project) that the lab did not create; they would block deleting its pool/network."""
    r = incus("list", "--all-projects", "--format", "json", timeout=60)
    return sorted(i["name"] for i in json.loads(r.stdout or "[]")
                  if (i.get("config") or {}).get(LAB_MARK) != "true")


def ipv4_of(inst: dict) -> str | None:
    net = ((inst.get("state") or {}).get("network") or {}).get("eth0") or {}
    for a in net.get("addresses") or []:
        if a.get("family") == "inet" and a.get("scope") == "global":
            return a.get("address")
    return None


def ensure_containers(cfg: LabConfig, progress: Progress) -> None:
    """Launch missing containers, start stopped ones, delete lab containers no longer wanted."""
    if not guard_loaded():
        raise LabError("refusing to launch containers: the nft guard is not loaded")
    existing = list_lab_containers()
    for name in sorted(set(existing) - set(cfg.containers)):
        progress(f"deleting {name} (not in this lab's config)")
        incus("delete", "--force", name, timeout=120)
    missing = [n for n in cfg.containers if n not in existing]
    stopped = [n for n in cfg.containers if n in existing and existing[n].get("status") != "Running"]
    if missing:
        progress(f"launching {', '.join(missing)}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: _launch(cfg, n), missing))
        list(pool.map(lambda n: incus("start", n, timeout=120), stopped))
    if missing or stopped:
        progress("waiting for systemd and addresses in the new containers")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: wait_booted(n, cfg.ip_of(n)), cfg.containers))


def _launch(cfg: LabConfig, name: str) -> None:
    r = incus("launch", IMAGE_ALIAS, name, "--config", f"{LAB_MARK}=true",
              "--device", f"eth0,ipv4.address={cfg.ip_of(name)}", check=False, timeout=180)
    if not r.ok:
        raise LabError(f"cannot launch {name}: {r.describe()}")


def wait_booted(name: str, ip: str, timeout: float = 90.0) -> None:
    """Wait until systemd finished booting (running/degraded) and eth0 has ``ip``."""
    t = ct(name)

    def booted() -> bool:
        r = t.run(("systemctl", "is-system-running"), check=False, timeout=20)
        return r.stdout.strip() in ("running", "degraded")

    def addressed() -> bool:
        r = t.run(("ip", "-4", "-o", "addr", "show", "dev", "eth0"), check=False, timeout=20)
        return f" {ip}/" in r.stdout

    wait_until(booted, timeout, f"systemd in {name}", interval=0.2, retry_on=(IncusError,))
    wait_until(addressed, timeout, f"address {ip} on {name}", interval=0.2, retry_on=(IncusError,))


def delete_lab_containers(progress: Progress) -> None:
    names = sorted(list_lab_containers())
    if names:
        progress(f"deleting containers {', '.join(names)}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: incus("delete", "--force", n, timeout=180), names))


# --- files ------------------------------------------------------------------------------------------

def sync_files(name: str, files: Iterable[FileSpec]) -> set[str]:
    """Push the files whose content (or mode) differs; return the changed paths."""
    files = list(files)
    t = ct(name)
    r = t.run(("stat", "-c", "%a %n", "--", *[f.path for f in files]), check=False, timeout=30)
    modes = {line.split(" ", 1)[1]: int(line.split(" ", 1)[0], 8) for line in r.stdout.splitlines() if " " in line}
    present = [f.path for f in files if f.path in modes]
    sums: dict[str, str] = {}
    if present:
        r = t.run(("sha256sum", "--", *present), check=False, timeout=30)
        for line in r.stdout.splitlines():
            digest, _, path = line.partition("  ")
            sums[path] = digest
    changed = set()
    with tempfile.TemporaryDirectory(prefix="veza-lab-") as tmp:
        for i, f in enumerate(files):
            if sums.get(f.path) == f.sha256 and modes.get(f.path) == f.mode:
                continue
            local = Path(tmp) / str(i)
            local.write_bytes(f.content)
            t.push(local, f.path, mode=f.mode, create_dirs=True)
            changed.add(f.path)
    return changed


def systemctl(name: str, *args: str, check: bool = True, timeout: float = 60.0) -> str:
    r = ct(name).run(("systemctl", *args), check=False, timeout=timeout)
    if check and not r.ok:
        status = ct(name).run(("systemctl", "status", "--no-pager", "-n", "20", *args[-1:]), check=False,
                              timeout=20)
        raise LabError(f"[{name}] systemctl {' '.join(args)} failed: {r.describe()}\n{status.stdout[-2000:]}")
    return r.stdout.strip()


def is_active(name: str, unit: str) -> bool:
    return systemctl(name, "is-active", unit, check=False) == "active"


# --- nodes ------------------------------------------------------------------------------------------

def node_files() -> list[FileSpec]:
    return [
        FileSpec(f"{INSTALL_DIR}/veza-api", render_standin(GOOD_VERSION, Faults()).encode(), 0o755),
        FileSpec(f"{INSTALL_DIR}/veza-api.previous", render_standin(PREVIOUS_VERSION, Faults()).encode(), 0o755),
        FileSpec(f"/etc/systemd/system/{SERVICE_NAME}.service", configs.node_unit().encode()),
    ]


def setup_node(name: str) -> bool:
    """Install the 1.0.0 build (and 0.9.0 as .previous) and run the service. True if (re)started."""
    changed = sync_files(name, node_files())
    if any(p.endswith(".service") for p in changed):
        systemctl(name, "daemon-reload")
        systemctl(name, "enable", f"{SERVICE_NAME}.service")
    if changed or not is_active(name, SERVICE_NAME) or running_version(name) != GOOD_VERSION:
        systemctl(name, "reset-failed", SERVICE_NAME, check=False)
        systemctl(name, "restart", SERVICE_NAME)
        return True
    return False


def running_version(name: str) -> str | None:
    """The version the node's running process reports on its health endpoint (None: no answer)."""
    r = ct(name).run(("curl", "-s", "-m", "2", "http://127.0.0.1:8080/api/v1/health"), check=False, timeout=10)
    try:
        return json.loads(r.stdout).get("version")
    except (ValueError, AttributeError):
        return None


def wait_node_healthy(name: str, timeout: float = 30.0) -> None:
    def ok() -> bool:
        r = ct(name).run(("curl", "-fsS", "-m", "2", "http://127.0.0.1:8080/api/v1/health"), check=False,
                         timeout=10)
        return r.ok

    wait_until(ok, timeout, f"{name} to answer its health check", interval=0.2)


# --- HAProxy and load generator ------------------------------------------------------------------------

def haproxy_has_exporter(name: str) -> bool:
    r = ct(name).run(("haproxy", "-vv"), timeout=30)
    return "prometheus-exporter" in r.stdout.lower() or "prometheus exporter" in r.stdout.lower()


def setup_haproxy(cfg: LabConfig, *, exporter: bool, name: str | None = None) -> None:
    """HAProxy in ``name`` (default: ``cfg.haproxy``; every one of ``cfg.haproxies`` gets the same config)."""
    name = name or cfg.haproxy
    # The map first: the config reads it, and `haproxy -c` below needs it to exist.
    changed = sync_files(name, [FileSpec(configs.PIN_MAP, configs.pin_map().encode()),
                                FileSpec("/etc/haproxy/haproxy.cfg", configs.haproxy_cfg(cfg, exporter=exporter)
                                         .encode())])
    try:
        ct(name).run(("haproxy", "-c", "-q", "-f", "/etc/haproxy/haproxy.cfg"), timeout=30)
    except CommandFailed as exc:
        raise LabError(f"the generated haproxy.cfg is invalid: {exc}") from exc
    if not is_active(name, "haproxy"):
        systemctl(name, "enable", "haproxy.service")
        systemctl(name, "reset-failed", "haproxy", check=False)
        systemctl(name, "restart", "haproxy")
    elif changed:
        systemctl(name, "reload", "haproxy")


def setup_loadgen(cfg: LabConfig) -> None:
    name = cfg.haproxy
    changed = sync_files(name, [
        FileSpec("/usr/local/bin/veza-loadgen", traffic.loadgen_program().encode(), 0o755),
        FileSpec(f"/etc/systemd/system/{LOADGEN_SERVICE}.service", configs.loadgen_unit(cfg).encode()),
    ])
    if changed:
        systemctl(name, "daemon-reload")
    if changed or not is_active(name, LOADGEN_SERVICE):
        systemctl(name, "restart", LOADGEN_SERVICE)


def stop_loadgen(cfg: LabConfig) -> None:
    systemctl(cfg.haproxy, "stop", LOADGEN_SERVICE, check=False)


# --- Prometheus --------------------------------------------------------------------------------------------

def setup_prometheus(cfg: LabConfig, *, exporter: bool) -> None:
    name = cfg.prom
    changed = sync_files(name, [
        FileSpec("/etc/prometheus/prometheus.yml", configs.prometheus_yml(cfg, exporter=exporter).encode()),
        FileSpec("/etc/default/prometheus", configs.prometheus_defaults().encode()),
    ])
    try:
        ct(name).run(("promtool", "check", "config", "/etc/prometheus/prometheus.yml"), timeout=30)
    except CommandFailed as exc:
        raise LabError(f"the generated prometheus.yml is invalid: {exc}") from exc
    if "/etc/default/prometheus" in changed or not is_active(name, "prometheus"):
        systemctl(name, "enable", "prometheus.service")
        systemctl(name, "reset-failed", "prometheus", check=False)
        systemctl(name, "restart", "prometheus")
    elif changed:
        systemctl(name, "reload", "prometheus")


# --- test builds on one node -----------------------------------------------------------------------------------

def install_build(name: str, local_path: str | Path, *, restart: bool = True) -> None:
    """Put a build at INSTALL_DIR/veza-api on one node and restart the service (as a deploy would).

    The restart's outcome is not checked: a ``fail_start`` build is expected to fail it.
    """
    ct(name).push(local_path, f"{INSTALL_DIR}/veza-api", mode=0o755, create_dirs=True)
    if restart:
        systemctl(name, "reset-failed", SERVICE_NAME, check=False)
        systemctl(name, "restart", SERVICE_NAME, check=False)
