"""The lab's container image: built locally with debootstrap, cached, imported into Incus.

No image server is ever contacted. One Debian image serves every container: systemd,
networkd on ``eth0`` (DHCP), python3, curl, socat, HAProxy and Prometheus (both disabled;
each is enabled only in its own container). The Debian mirror is read from /etc/apt.

The tarballs are cached under ``CACHE_DIR/images/<recipe key>/`` so a later ``up`` skips
debootstrap; the key changes whenever the recipe (packages, mirror, suite) changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from veza_canary.lab.config import CACHE_DIR, IMAGE_ALIAS, LabError, gateway
from veza_canary.lab.daemon import host, incus
from veza_canary.log import get_logger

log = get_logger(__name__)

#: Bump when the build steps below change in a way the package list does not show.
RECIPE_VERSION = 4
BASE_PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "curl", "socat", "ca-certificates", "python3",
                 "iproute2", "procps")
#: Installed in a second stage, under a policy-rc.d that stops their daemons from starting.
SERVICE_PACKAGES = ("haproxy", "prometheus")
#: Units that have no business in a lab container.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "fstrim.timer", "e2scrub_all.timer",
                "e2scrub_reap.service", "getty@tty1.service", "console-getty.service",
                "systemd-timesyncd.service")
DISABLED_UNITS = ("haproxy.service", "prometheus.service")

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class AptSources:
    suite: str
    mirror: str
    suites: tuple[str, ...]
    security: str | None

    def sources_list(self) -> str:
        lines = [f"deb {self.mirror} {s} main" for s in self.suites]
        if self.security:
            lines.append(f"deb {self.security} {self.suite}-security main")
        return "\n".join(lines) + "\n"


def _codename() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError as exc:
        raise LabError("cannot read /etc/os-release") from exc
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    if not m:
        raise LabError("no VERSION_CODENAME in /etc/os-release (is this Debian?)")
    return m.group(1)


def _apt_entries(root: Path = Path("/etc/apt")) -> list[tuple[str, tuple[str, ...]]]:
    """(uri, suites) of every enabled ``deb`` entry in /etc/apt, one-line and deb822 formats."""
    entries: list[tuple[str, tuple[str, ...]]] = []
    one_line = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for f in one_line:
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(parts) >= 3 and parts[0] == "deb":
                entries.append((parts[1].rstrip("/"), (parts[2],)))
    for f in sorted((root / "sources.list.d").glob("*.sources")):
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri.rstrip("/"), tuple(fields.get("suites", "").split())))
    return entries


def apt_sources(root: Path = Path("/etc/apt"), suite: str | None = None) -> AptSources:
    """The Debian mirror (and security mirror) this machine's apt already uses."""
    suite = suite or _codename()
    mirror, suites, security = None, [], None
    for uri, entry_suites in _apt_entries(root):
        if f"{suite}-security" in entry_suites:
            security = security or uri
        elif suite in entry_suites and mirror is None:
            mirror = uri
            suites = [s for s in entry_suites if s in (suite, f"{suite}-updates")]
    if not mirror:
        raise LabError(f"cannot find a Debian mirror for {suite!r} in /etc/apt",
                       hint="add the machine's Debian mirror to /etc/apt/sources.list.d/")
    return AptSources(suite=suite, mirror=mirror, suites=tuple(suites), security=security)


def recipe_key(src: AptSources) -> str:
    blob = json.dumps({"v": RECIPE_VERSION, "base": BASE_PACKAGES, "svc": SERVICE_PACKAGES,
                       "masked": MASKED_UNITS, "src": [src.suite, src.mirror, src.suites, src.security],
                       "gw": gateway(), "arch": platform.machine()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dir(key: str) -> Path:
    return CACHE_DIR / "images" / key


def is_cached(key: str) -> bool:
    d = cache_dir(key)
    return (d / "meta.tar").is_file() and (d / "rootfs.tar").is_file()


# --- Incus side -------------------------------------------------------------------------------

def imported_recipe() -> str | None:
    """The recipe key of the image behind the lab alias, "" if it has none, None if no image."""
    r = incus("image", "list", "--format", "json", timeout=30)
    for img in json.loads(r.stdout or "[]"):
        if any(a.get("name") == IMAGE_ALIAS for a in img.get("aliases") or []):
            return (img.get("properties") or {}).get("veza.recipe", "")
    return None


def ensure_image(progress: Progress) -> str:
    """Make sure the lab image is imported; build and cache it first when needed. Returns the key."""
    src = apt_sources()
    key = recipe_key(src)
    current = imported_recipe()
    if current == key:
        return key
    if not is_cached(key):
        t0 = time.monotonic()
        progress(f"building the lab image with debootstrap from {src.mirror} (first time only, ~1-2 min)")
        build(key, src, progress)
        progress(f"image built and cached in {cache_dir(key)} ({time.monotonic() - t0:.0f}s)")
    if current is not None:
        delete_image()
    progress("importing the lab image")
    d = cache_dir(key)
    incus("image", "import", str(d / "meta.tar"), str(d / "rootfs.tar"), "--alias", IMAGE_ALIAS, timeout=600)
    return key


def delete_image() -> None:
    r = incus("image", "delete", IMAGE_ALIAS, check=False, timeout=120)
    if not r.ok and "not found" not in r.stderr.lower():
        raise LabError(f"cannot delete the lab image: {r.describe()}")


def purge_cache() -> None:
    images = CACHE_DIR / "images"
    if images.is_dir():
        shutil.rmtree(images)
    for d in CACHE_DIR.glob("build-*"):
        _remove_tree(d)


# --- the build ----------------------------------------------------------------------------------

def build(key: str, src: AptSources, progress: Progress) -> None:
    work = CACHE_DIR / f"build-{key}"
    _remove_tree(work)
    rootfs = work / "rootfs"
    work.mkdir(parents=True)
    try:
        host().run(("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                    src.suite, str(rootfs), src.mirror), timeout=1800)
        progress("debootstrap done; installing haproxy and prometheus in the image")
        _install_services(rootfs, src)
        _customise(rootfs)
        progress("packing the image")
        out = cache_dir(key)
        out.mkdir(parents=True, exist_ok=True)
        _write_meta(work, out / "meta.tar.part", key, src)
        host().run(("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(rootfs),
                    "-cf", str(out / "rootfs.tar.part"), "."), timeout=600)
        os.replace(out / "meta.tar.part", out / "meta.tar")
        os.replace(out / "rootfs.tar.part", out / "rootfs.tar")
    finally:
        _kill_chroot_processes(rootfs)
        _remove_tree(work)


def _chroot(rootfs: Path, *argv: str, timeout: float = 600) -> None:
    host().run(("chroot", str(rootfs), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8", *argv), timeout=timeout)


def _install_services(rootfs: Path, src: AptSources) -> None:
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# veza-canary lab image build: no daemon starts in the chroot\nexit 101\n")
    policy.chmod(0o755)
    (rootfs / "etc/apt/sources.list").write_text(src.sources_list())
    resolv = rootfs / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    try:
        _chroot(rootfs, "apt-get", "-q", "update")
        _chroot(rootfs, "apt-get", "-q", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef",
                "-o", "Dpkg::Options::=--force-confold", "install", *SERVICE_PACKAGES, timeout=1200)
        _chroot(rootfs, "apt-get", "clean")
    finally:
        _kill_chroot_processes(rootfs)
        policy.unlink(missing_ok=True)


def _customise(rootfs: Path) -> None:
    net = rootfs / "etc/systemd/network/eth0.network"
    net.parent.mkdir(parents=True, exist_ok=True)
    net.write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nUseDomains=true\n")
    _chroot(rootfs, "systemctl", "enable", "systemd-networkd.service")
    _chroot(rootfs, "systemctl", "disable", *DISABLED_UNITS)
    _chroot(rootfs, "systemctl", "mask", *MASKED_UNITS)
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text(f"nameserver {gateway()}\nsearch incus\n")
    (rootfs / "etc/machine-id").write_text("")
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.is_symlink() or dbus_id.exists():
        dbus_id.unlink()
    lists = rootfs / "var/lib/apt/lists"
    for f in lists.glob("*"):
        if f.is_file():
            f.unlink()
    # Launch time is dominated by unpacking the image once per container: drop what no lab
    # container reads (docs, man pages, translations, the 200 MB raw tz data of moment-timezone
    # that Prometheus's classic UI pulls in; the UI keeps its bundled "with-data" files).
    for rel in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "usr/share/javascript/moment-timezone/data"):
        d = rootfs / rel
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d)
            d.mkdir()
    # The journal of a lab container stays small.
    conf = rootfs / "etc/systemd/journald.conf.d/lab.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("[Journal]\nSystemMaxUse=32M\nRuntimeMaxUse=32M\n")


def _write_meta(work: Path, out: Path, key: str, src: AptSources) -> None:
    meta = work / "meta"
    (meta / "templates").mkdir(parents=True)
    metadata = {
        "architecture": platform.machine(),
        "creation_date": int(time.time()),
        "properties": {
            "description": f"veza-canary lab (Debian {src.suite}, debootstrap minbase)",
            "os": "debian",
            "release": src.suite,
            "veza.recipe": key,
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }
    (meta / "metadata.yaml").write_text(json.dumps(metadata, indent=2) + "\n")  # JSON is valid YAML
    (meta / "templates/hostname.tpl").write_text("{{ instance.name }}\n")
    (meta / "templates/hosts.tpl").write_text(
        "127.0.0.1 localhost\n127.0.1.1 {{ instance.name }}\n"
        "::1 localhost ip6-localhost ip6-loopback\n"
    )
    host().run(("tar", "--numeric-owner", "-C", str(meta), "-cf", str(out), "metadata.yaml", "templates"),
               timeout=60)


def _kill_chroot_processes(rootfs: Path) -> None:
    """Kill any process the build started inside the chroot (a postinst may start a daemon)."""
    try:
        target = str(rootfs.resolve())
    except OSError:
        return
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            root = os.readlink(d / "root")
        except OSError:
            continue
        if root == target or root.startswith(target + "/"):
            log.warning("killing a process left in the image chroot", pid=int(d.name))
            try:
                os.kill(int(d.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _remove_tree(path: Path) -> None:
    """Remove a build directory of ours; refuses anything outside CACHE_DIR."""
    if not path.exists():
        return
    if CACHE_DIR.resolve() not in path.resolve().parents:
        raise LabError(f"refusing to remove {path}: not under {CACHE_DIR}")
    # Nothing may be mounted inside (we never mount in the chroot, but be sure).
    mounts = Path("/proc/mounts").read_text()
    if f" {path.resolve()}/" in mounts or f" {path.resolve()} " in mounts:
        raise LabError(f"refusing to remove {path}: something is mounted inside")
    shutil.rmtree(path)
