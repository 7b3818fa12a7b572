"""The fleet as the tool sees it: the I/O objects built once from Settings.

``Fleet`` bundles one object per external system (HAProxy runtime API, each
node, Prometheus, the LB, the shared state store) plus the clock. The pipeline
and the on-call commands take a Fleet; tests build one from fakes that subclass
the real seams.

Several HAProxy (``HAPROXY_CONTAINERS``) make ``haproxy`` an ``lbs.HAProxySet``; the lock and the
history stay on the *first* container of the list, always (docs/multi-lb.md): there is no failover
of the lock, so two deploys can never hold it on two HAProxy. When that container does not answer,
the lock step fails and nothing is changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from veza_canary.clock import Clock
from veza_canary.errors import VezaError
from veza_canary.haproxy import HAProxy, IncusSocat, UnixSocket
from veza_canary.lbs import HAProxySet
from veza_canary.lock import DEFAULT_STATE_DIR, BlockedReleases, FleetLock, StateStore
from veza_canary.node import Node
from veza_canary.prometheus import Prometheus, make_http_client
from veza_canary.transport import IncusTransport, LocalTransport, Transport, host_transport

if TYPE_CHECKING:
    from veza_canary.settings import Settings


@dataclass
class Fleet:
    settings: Settings
    haproxy: HAProxy
    nodes: dict[str, Node]
    prom: Prometheus
    lb_client: httpx.Client
    store: StateStore
    clock: Clock = field(default_factory=Clock)
    host: Transport | None = None

    @property
    def canary(self) -> Node:
        return self.nodes[self.settings.pool.canary]

    @property
    def peers(self) -> list[Node]:
        return [self.nodes[n] for n in self.settings.pool.peers]

    def lock(self) -> FleetLock:
        return FleetLock(self.store, self.clock, stale_after=self.settings.safety.lock_stale_after)

    def blocked(self) -> BlockedReleases:
        return BlockedReleases(self.store)

    def snapshot(self, names: Iterable[str], classify: Callable[[str, str | None], str]) -> dict[str, Any]:
        """The end state reports print: each node's sha256, ``classify(node, sha)``, HAProxy admin and status.

        Best effort: whatever cannot be read is "unknown" with the error, never an exception.
        """
        out: dict[str, Any] = {"nodes": {}}
        try:
            states, stats = self.haproxy.states(), self.haproxy.stats()
        except VezaError as exc:
            states, stats = {}, {}
            out["haproxy_error"] = str(exc)
        for n in names:
            entry: dict[str, Any] = {}
            try:
                if n not in self.nodes:
                    raise VezaError("not part of this fleet")
                sha = self.nodes[n].sha256()
                entry["sha256"], entry["binary"] = sha, classify(n, sha)
            except VezaError as exc:
                entry["sha256"], entry["binary"], entry["error"] = None, "unknown", str(exc)[:300]
            entry["admin"] = states[n].admin if n in states else "unknown"
            entry["status"] = stats[n].status if n in stats else "unknown"
            out["nodes"][n] = entry
        return out

    def close(self) -> None:
        for c in (self.lb_client, self.prom.client):
            try:
                c.close()
            except Exception:  # noqa: BLE001,S110 - closing on the way out must not mask the outcome
                pass
        if self.host is not None:
            self.host.close()


def build_fleet(settings: Settings, *, clock: Clock | None = None) -> Fleet:
    host = host_transport(settings)
    if settings.haproxy.local_socket:
        sock = UnixSocket(str(settings.haproxy.local_socket))
        store = StateStore(LocalTransport(), str(settings.resolved_state_dir / "fleet"))
        haproxy = HAProxy(sock, settings.haproxy.backend)
    else:
        # One HAProxy client per container, in configured order; the first also holds the state store.
        members = [(name, IncusTransport(name, host)) for name in settings.haproxy.lbs]
        store = StateStore(members[0][1], DEFAULT_STATE_DIR)
        clients = [(name, HAProxy(IncusSocat(t, settings.haproxy.socket), settings.haproxy.backend))
                   for name, t in members]
        haproxy = clients[0][1] if len(clients) == 1 else HAProxySet(clients)
    nodes = {
        name: Node(name, IncusTransport(name, host), install_dir=settings.service.install_dir,
                   restart_argv=settings.service.restart_argv, health_url=settings.service.node_health_url,
                   service=settings.service.name)
        for name in settings.pool.nodes
    }
    return Fleet(
        settings=settings,
        haproxy=haproxy,
        nodes=nodes,
        prom=Prometheus(make_http_client(settings), settings.prometheus.url),
        lb_client=httpx.Client(timeout=settings.timeouts.http, follow_redirects=False),
        store=store,
        clock=clock or Clock(),
        host=host,
    )
