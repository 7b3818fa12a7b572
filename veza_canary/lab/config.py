"""What the lab looks like: names, addresses, paths, and the ``LabConfig`` value object.

Everything the lab creates is named here, so ``lab down`` can find exactly that and
nothing else. Addresses are static (a DHCP reservation per container on the lab's
bridge), so configs can be written before a container has even booted.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from veza_canary.errors import InfraError

__all__ = [
    "BRIDGE", "CACHE_DIR", "GUARD_TABLE", "HAPROXY_SOCKET", "IMAGE_ALIAS", "LAB_MARK", "POOL_BACKEND",
    "STATE_DIR", "STORAGE_POOL", "SUBNET", "LabConfig", "LabError", "LabUnavailable",
]


class LabError(InfraError):
    """The local lab could not be brought up, inspected or torn down."""


class LabUnavailable(LabError):
    """This machine cannot run the lab (not root, packages missing and not installable)."""


#: The lab's bridge and its /24 (host side is .1). Chosen to be unlikely to clash; checked at ``up``.
BRIDGE = os.environ.get("VEZA_LAB_BRIDGE", "vezabr0")
SUBNET = ipaddress.ip_network(os.environ.get("VEZA_LAB_SUBNET", "10.213.77.0/24"))
STORAGE_POOL = "veza-lab"
IMAGE_ALIAS = "veza-lab"
#: nft table of the guard that keeps the bridge off every other interface.
GUARD_TABLE = ("inet", "veza_lab_guard")
GUARD_CHAIN = "bridge_isolation"
#: Instance config key marking containers the lab owns (``lab down`` deletes only these).
LAB_MARK = "user.veza-lab"

STATE_DIR = Path(os.environ.get("VEZA_LAB_STATE_DIR", "/var/lib/veza-canary-lab"))
#: Test sessions using the lab hold a shared flock on this file; ``down`` refuses while one does.
USERS_LOCK = Path("/run/veza-canary-lab.users")
#: Whoever changes the shared lab (a test, ``lab up``/``down`` from the CLI) holds this flock exclusively.
CHANGE_LOCK = Path("/run/veza-canary-lab.test-lock")
CACHE_DIR = Path(os.environ.get("VEZA_LAB_CACHE_DIR", "/var/cache/veza-canary-lab"))

INCUSD = "/usr/libexec/incus/incusd"
INCUS_SOCKET = Path("/var/lib/incus/unix.socket")
#: incusd must never reach the internet: every proxy points at the discard port on loopback.
DEAD_PROXY = "http://127.0.0.1:9"

POOL_BACKEND = "api_pool"
HAPROXY_SOCKET = "/run/haproxy/admin.sock"
INSTALL_DIR = "/opt/veza/backend-api"
SERVICE_NAME = "veza-backend-api"
LOADGEN_SERVICE = "veza-loadgen"
NODE_PORT = 8080
PROM_PORT = 9090
HAPROXY_METRICS_PORT = 8405
HEALTH_PATH = "/api/v1/health"

GOOD_VERSION = "1.0.0"
PREVIOUS_VERSION = "0.9.0"

#: A canary needs at least one peer; 2 cores do not carry many more than 20 nodes.
MIN_NODES, MAX_NODES = 2, 20
#: HAProxy containers: ``haproxy``, then ``haproxy-2``.. for a multi-LB lab (``lab up --lbs 2``).
MAX_LBS = 3

_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")

# Host numbers inside SUBNET: .1 is the bridge, .10 HAProxy, .11 Prometheus, .12.. the other HAProxy
# (haproxy-2, ...), .101.. the nodes.
_GATEWAY_HOST, _HAPROXY_HOST, _PROM_HOST, _FIRST_NODE_HOST = 1, 10, 11, 101
_EXTRA_HAPROXY_HOST = 12


def gateway() -> str:
    return str(SUBNET.network_address + _GATEWAY_HOST)


@dataclass(frozen=True, kw_only=True, slots=True)
class LabConfig:
    """The lab to build. Defaults: 3 nodes ``backend-api-1..3``, 20 req/s of traffic."""

    nodes: tuple[str, ...] = ("backend-api-1", "backend-api-2", "backend-api-3")
    rate: float = 20.0
    #: The load generator stops by itself after this long (s); the next ``lab up`` restarts it.
    traffic_duration: float = 4 * 3600.0
    haproxy: str = "haproxy"
    prom: str = "prom"
    canary: str = "backend-api-2"
    #: Install missing system packages with scripts/install-system-deps.sh when possible.
    install_deps: bool = True
    #: How many HAProxy serve the pool (same config; the load generator runs on the first only).
    lbs: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.lbs <= MAX_LBS:
            raise LabError(f"the lab runs 1 to {MAX_LBS} HAProxy, got {self.lbs}")
        names = (*self.nodes, *self.haproxies, self.prom)
        if not MIN_NODES <= len(self.nodes) <= MAX_NODES:
            raise LabError(f"the lab needs {MIN_NODES} to {MAX_NODES} backend nodes (a canary and its peers), "
                           f"got {len(self.nodes)}")
        for n in names:
            if not _NAME_RE.match(n):
                raise LabError(f"{n!r} is not a valid container name (lowercase letters, digits, hyphens)")
        if len(set(names)) != len(names):
            raise LabError("container names must be unique")
        if not 0 < self.rate <= 500:
            raise LabError(f"rate {self.rate:g} req/s is out of range (0, 500]")
        if not 0 < self.traffic_duration <= 7 * 86400:
            raise LabError("traffic_duration must be between 0 and a week")

    @classmethod
    def with_nodes(cls, count: int, *, prefix: str = "backend-api", **kw: object) -> LabConfig:
        if not MIN_NODES <= count <= MAX_NODES:
            raise LabError(f"--nodes {count}: must be between {MIN_NODES} and {MAX_NODES}")
        nodes = tuple(f"{prefix}-{i}" for i in range(1, count + 1))
        if "canary" not in kw:
            kw["canary"] = nodes[1]
        return cls(nodes=nodes, **kw)  # type: ignore[arg-type]

    @property
    def haproxies(self) -> tuple[str, ...]:
        """Every HAProxy container: ``haproxy`` (the load generator's, the deploy tool's lock), then
        ``haproxy-2``.. when ``lbs`` > 1."""
        return (self.haproxy, *(f"{self.haproxy}-{i}" for i in range(2, self.lbs + 1)))

    @property
    def containers(self) -> tuple[str, ...]:
        """Every container, in start order: backends first (HAProxy's first checks must pass)."""
        return (*self.nodes, *self.haproxies, self.prom)

    @property
    def canary_node(self) -> str:
        return self.canary if self.canary in self.nodes else self.nodes[1]

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(n for n in self.nodes if n != self.canary_node)

    def ip_of(self, name: str) -> str:
        """The static address of a lab container."""
        if name == self.haproxy:
            host = _HAPROXY_HOST
        elif name == self.prom:
            host = _PROM_HOST
        elif name in self.haproxies:
            host = _EXTRA_HAPROXY_HOST + self.haproxies.index(name) - 1
        elif name in self.nodes:
            host = _FIRST_NODE_HOST + self.nodes.index(name)
        else:
            raise LabError(f"{name!r} is not a container of this lab")
        return str(SUBNET.network_address + host)

    def to_dict(self) -> dict[str, object]:
        return {"nodes": list(self.nodes), "rate": self.rate, "traffic_duration": self.traffic_duration,
                "haproxy": self.haproxy, "prom": self.prom, "canary": self.canary, "lbs": self.lbs}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> LabConfig:
        return cls(nodes=tuple(d["nodes"]), rate=float(d["rate"]),  # type: ignore[arg-type]
                   traffic_duration=float(d.get("traffic_duration", 4 * 3600.0)),  # type: ignore[arg-type]
                   haproxy=str(d["haproxy"]), prom=str(d["prom"]), canary=str(d["canary"]),
                   lbs=int(d.get("lbs", 1)))  # type: ignore[call-overload]
