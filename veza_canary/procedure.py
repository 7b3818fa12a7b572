"""Take one node from binary X to binary Y safely: the one node procedure.

::

    drain -> install -> (still drained?) -> restart -> node health -> ready -> UP -> LB check -> verify

Every path that changes a node goes through here: the deploy's canary steps and its
peers, the canary's automatic rollback, and the manual rollback. What differs between
them is data, a ``Policy``: deadlines, what a drain that does not finish does, and
whether a node is finished before a signal is honoured.

The procedure remembers which nodes it drained (``drained``) and each node's admin
state before that, so a failure policy can always put a node back as it was. It never
re-enables a node whose binary changed but did not pass its checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from veza_canary.errors import (
    CheckFailed,
    DrainTimedOut,
    HealthCheckFailed,
    PushError,
    RollbackFailed,
    VezaError,
)
from veza_canary.health import (
    Poll,
    WaitAborted,
    WaitTimedOut,
    dead_canary,
    poll_until,
    wait_drained,
    wait_lb_healthy,
    wait_node_healthy,
    wait_up,
)
from veza_canary.log import get_logger, redact_text

if TYPE_CHECKING:
    from veza_canary.fleet import Fleet
    from veza_canary.node import Node
    from veza_canary.report import Report
    from veza_canary.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary to put on a node: a local snapshot (pushed) or a file already on the node (copied)."""

    sha256: str
    label: str  # for messages: "ARTIFACT /tmp/veza-api-v2", "the canary's last-good copy", ...
    local: Path | None = None
    remote: str | None = None  # a path on the node, e.g. INSTALL_DIR/veza-api.previous

    def describe(self) -> str:
        return f"{self.label} ({self.sha256[:12]})"


@dataclass(frozen=True, slots=True)
class Policy:
    """How the procedure behaves on one path. Seconds throughout."""

    drain_timeout: float
    #: "fail": a drain that does not reach 0 sessions in time stops the node (put back as it was);
    #: "shutdown-sessions": kill the remaining sessions and go on.
    drain_timeout_action: str
    health_timeout: float
    up_timeout: float
    poll_interval: float
    #: Finish the node (install .. verify) even when SIGINT/SIGTERM arrives meanwhile (manual rollback,
    #: the canary's restore); otherwise the signal stops the node and the caller settles it.
    finish_on_interrupt: bool = False
    #: Servers of the backend that must stay UP and in rotation: a drain that would go below waits (up to
    #: ``up_timeout``) for others to come back, then refuses. 0: no guard (rollbacks: the bad binary must go).
    min_in_rotation: int = 0

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        t = s.timeouts
        return cls(drain_timeout=t.drain, drain_timeout_action=t.drain_action, health_timeout=t.node_health,
                   up_timeout=t.up, poll_interval=t.poll_interval)

    def for_restore(self) -> Policy:
        """Putting the last-known-good binary back: the bad binary's sessions may go after 30 s at most."""
        return replace(self, drain_timeout=min(self.drain_timeout, 30.0), drain_timeout_action="shutdown-sessions",
                       finish_on_interrupt=True, min_in_rotation=0)


class CapacityTooLow(CheckFailed):
    """Draining one more node would take the backend below MIN_IN_ROTATION."""


class BatchNodeFailed(Exception):  # noqa: N818 - carries the node of a batch that failed, and why
    def __init__(self, node: str, cause: BaseException) -> None:
        super().__init__(f"{node}: {why(cause)}")
        self.node = node
        self.cause = cause


class _DrainLost(Exception):  # noqa: N818 - internal signal between a drain wait and drain()
    """A node we drained shows ready again: HAProxy lost its runtime state (restart or reload)."""


class NodeProcedure:
    """The steps of the node procedure, one method each, and ``roll`` that runs them all."""

    def __init__(self, fleet: Fleet, policy: Policy, *, report: Report, lb_url: str,
                 on_poll: Callable[[Poll], None] | None = None) -> None:
        self.fleet = fleet
        self.policy = policy
        self.report = report
        self.lb_url = lb_url
        self.on_poll = on_poll
        #: Nodes this run drained and has not re-enabled yet, with their admin state before.
        self.drained: dict[str, str] = {}

    # -- the steps -------------------------------------------------------------------------
    def drain(self, node: Node, *, policy: Policy | None = None, again: bool = False) -> None:
        """Set drain and wait for 0 sessions (twice in a row). A lost drain (HAProxy reload) is drained again once."""
        p = policy or self.policy
        f = self.fleet
        state = f.haproxy.state(node.name)
        if p.min_in_rotation and state.admin == "ready" and not again:
            self._wait_for_capacity(node, p)
        # Recorded before the command: a signal while it runs (or just after) must still put the node back.
        self.drained.setdefault(node.name, state.admin)
        if state.admin != "drain":
            f.haproxy.set_state(node.name, "drain")
        else:
            log.info("drain.noop", node=node.name, reason="already drained")
        try:
            wait_drained(f.haproxy, node.name, timeout=p.drain_timeout, interval=p.poll_interval, clock=f.clock,
                         on_poll=self._drain_watch(node))
        except _DrainLost:
            if again:
                raise DrainTimedOut(f"drain of {node.name}: HAProxy keeps losing the drain state (restarting?)",
                                    hint="check HAProxy (veza-canary status), then re-run") from None
            self._drain_lost(node)
            self.drain(node, policy=p, again=True)
        except WaitTimedOut as exc:
            if p.drain_timeout_action != "shutdown-sessions":
                raise DrainTimedOut(f"drain of {node.name}: {exc}",
                                    hint="--drain-timeout-action=shutdown-sessions kills them") from None
            log.warning("drain.timeout.shutdown_sessions", node=node.name, last=exc.describe_last())
            self.report.event("shutdown_sessions", node=node.name)
            f.haproxy.shutdown_sessions(node.name)
            try:
                wait_drained(f.haproxy, node.name, timeout=10.0, interval=p.poll_interval, clock=f.clock,
                             on_poll=self.on_poll)
            except WaitTimedOut as exc2:
                raise DrainTimedOut(f"drain of {node.name} even after shutdown sessions: {exc2}") from None

    def install(self, node: Node, binary: Binary) -> bool:
        """Put ``binary`` at the service's path atomically. False when it already was there."""
        if binary.local is not None:
            return node.install(binary.local, binary.sha256)
        assert binary.remote is not None
        current = node.sha256()
        if current == binary.sha256:
            return False
        if node.sha256(binary.remote) != binary.sha256:
            raise PushError(f"[{node.name}] {binary.remote} is not {binary.describe()} any more; not installed")
        node.copy_verified(binary.remote, node.binary_path, binary.sha256)
        return True

    def restart(self, node: Node) -> None:
        """Restart the service, after checking the node is still out of rotation (HAProxy may have reloaded)."""
        st = self.fleet.haproxy.state(node.name)
        if not (st.drained or st.in_maint):
            self._drain_lost(node)
            self.drain(node, again=True)
        node.restart()

    def health(self, node: Node) -> None:
        """Health 200 from inside the node; a unit systemd reports failed or restarting ends the wait at once."""
        try:
            h = wait_node_healthy(node, timeout=self.policy.health_timeout, interval=self.policy.poll_interval,
                                  clock=self.fleet.clock, on_poll=self.on_poll, fail_fast=dead_canary(node))
        except (WaitTimedOut, WaitAborted) as exc:
            raise HealthCheckFailed(f"{node.name} health: {exc}") from None
        log.info("node.healthy", node=node.name, result=h.describe())

    def ready(self, node: Node) -> None:
        """Back in rotation, and HAProxy says UP."""
        f = self.fleet
        f.haproxy.set_state(node.name, "ready")
        self.drained.pop(node.name, None)
        try:
            wait_up(f.haproxy, node.name, timeout=self.policy.up_timeout, interval=self.policy.poll_interval,
                    clock=f.clock, on_poll=self.on_poll)
        except WaitTimedOut as exc:
            raise HealthCheckFailed(f"HAProxy did not report {node.name} UP: {exc}") from None

    def lb_check(self) -> None:
        """One request through the load balancer answers 200 (retried up to 30 s)."""
        try:
            wait_lb_healthy(self.fleet.lb_client, self.lb_url, timeout=min(self.policy.up_timeout, 30.0),
                            interval=self.policy.poll_interval, clock=self.fleet.clock, on_poll=self.on_poll)
        except WaitTimedOut as exc:
            raise HealthCheckFailed(f"LB health: {exc}") from None

    def verify(self, node: Node, binary: Binary) -> None:
        now = node.sha256()
        if now != binary.sha256:
            raise RollbackFailed(f"{node.name} has {str(now)[:12]} after the change, expected {binary.describe()}")

    def _wait_for_capacity(self, node: Node, p: Policy) -> None:
        """Draining ``node`` must leave at least ``p.min_in_rotation`` servers UP and in rotation."""
        f = self.fleet

        def others_in_rotation() -> int:
            return len(f.haproxy.in_rotation() - {node.name})

        try:
            poll_until(others_in_rotation, lambda n: n >= p.min_in_rotation, timeout=p.up_timeout,
                       interval=p.poll_interval, clock=f.clock, what=f"{p.min_in_rotation} other server(s) in "
                       f"rotation before draining {node.name}", node=node.name, event="capacity.poll",
                       on_poll=self.on_poll)
        except WaitTimedOut as exc:
            raise CapacityTooLow(f"draining {node.name} would leave fewer than MIN_IN_ROTATION="
                                 f"{p.min_in_rotation} server(s) in rotation: {exc}",
                                 hint="wait for the other servers to be UP, or lower MIN_IN_ROTATION") from None

    # -- the whole procedure -------------------------------------------------------------------
    def roll(self, node: Node, binary: Binary, *, policy: Policy | None = None,
             cleanup: Callable[[], object] | None = None, on_stage: Callable[[str], None] | None = None) -> None:
        """Drain, install, restart, health, ready, UP, LB check, verify.

        ``cleanup`` is the interrupt guard's cleanup context factory: with ``policy.finish_on_interrupt`` the
        steps after the drain run inside it (a signal is recorded, the node finished). ``on_stage`` is told
        "drained", "installed", "restarted" as the node passes them (the caller's settle policy needs them).
        """
        p = policy or self.policy
        stage = on_stage or (lambda _s: None)
        self.drain(node, policy=p)
        stage("drained")
        if p.finish_on_interrupt and cleanup is not None:
            with cleanup():  # type: ignore[attr-defined]
                self._change(node, binary, stage)
        else:
            self._change(node, binary, stage)

    def roll_batch(self, nodes: list[Node], binary: Binary, *,
                   on_stage: Callable[[str, str], None] | None = None) -> None:
        """The procedure for several nodes at once, phase by phase: drain each (each drain through the capacity
        guard), install each, restart each, then health, ready and UP for each, one LB check, verify each.

        A failure raises ``BatchNodeFailed`` naming the node; the caller settles every node of the batch.
        """
        stage = on_stage or (lambda _n, _s: None)

        def each(what: Callable[[Node], object], label: str | None = None) -> None:
            for n in nodes:
                try:
                    what(n)
                except (VezaError, WaitTimedOut) as exc:
                    raise BatchNodeFailed(n.name, exc) from exc
                if label:
                    stage(n.name, label)

        each(self.drain, "drained")
        each(lambda n: self.install(n, binary), "installed")
        each(self.restart, "restarted")
        each(self.health)
        each(self.ready)
        try:
            self.lb_check()
        except VezaError as exc:
            raise BatchNodeFailed(nodes[-1].name, exc) from exc
        each(lambda n: self.verify(n, binary))

    def _change(self, node: Node, binary: Binary, stage: Callable[[str], None]) -> None:
        self.install(node, binary)
        stage("installed")
        self.restart(node)
        stage("restarted")
        self.health(node)
        self.ready(node)
        self.lb_check()
        self.verify(node, binary)

    # -- putting a node back ----------------------------------------------------------------
    def put_back(self, node: Node) -> str:
        """The binary never changed: the admin state the node had before this run drained it."""
        before = self.drained.get(node.name)
        if before is None:
            return f"{node.name} unchanged"
        try:
            if before == "ready":
                self.ready(node)
                return f"{node.name} unchanged and back in rotation"
            self.drained.pop(node.name, None)
            return f"{node.name} unchanged (left {before}, as it was before this run)"
        except (VezaError, WaitTimedOut) as exc:
            return f"{node.name} unchanged but could not be re-enabled ({why(exc)}): it is DRAINED"

    def leave_drained(self, node: Node) -> None:
        """Out of rotation, loudly: a binary that did not pass its checks never serves."""
        try:
            self.fleet.haproxy.set_state(node.name, "drain")
            self.drained.setdefault(node.name, "drain")
        except VezaError as exc:
            log.error("leave_drained_failed", node=node.name, error=str(exc))

    def settle(self, node: Node, before_sha: str | None, *, interrupted: bool, restarted: bool) -> str:
        """After a failure or a signal on a node: where is it, and is it safe in rotation?

        Unchanged binary: put back as it was. Changed: drained -- unless a signal arrived after the
        restart and the node is healthy on the new binary (then it serves it, as a finished node would).
        A binary renamed into place but not restarted is not what the node runs: never re-enabled.
        """
        try:
            live = node.sha256()
        except VezaError:
            live = None
        changed = live is None or live != before_sha
        try:
            if not changed:
                return self.put_back(node)
            if interrupted and restarted and node.health().ok:
                if node.name in self.drained:
                    self.ready(node)
                return f"{node.name} is in rotation on the new binary"
            self.leave_drained(node)
            if interrupted and not restarted:
                return (f"{node.name} left DRAINED (out of rotation): its new binary is in place but the service "
                        "was not restarted")
            return f"{node.name} left DRAINED (out of rotation) on a binary that did not pass its checks"
        except Exception as exc:  # noqa: BLE001 - report, never mask the original failure
            return f"{node.name} state uncertain ({why(exc)}): check it with veza-canary status"

    # -- internals -------------------------------------------------------------------------
    def _drain_watch(self, node: Node) -> Callable[[Poll], None]:
        """Per-poll hook of a drain wait: a node we drained that HAProxy shows ready again lost its drain."""

        def on_poll(p: Poll) -> None:
            if self.on_poll is not None:
                self.on_poll(p)
            if p.fields.get("admin") == "ready":
                raise _DrainLost(node.name)

        return on_poll

    def _drain_lost(self, node: Node) -> None:
        log.warning("haproxy.drain_lost", node=node.name,
                    msg="HAProxy no longer has the node drained (a restart or reload loses runtime state); "
                        "draining it again")
        self.report.event("haproxy_drain_lost", node=node.name)


def why(exc: BaseException) -> str:
    """An exception as one redacted line of words."""
    return redact_text(str(exc) or type(exc).__name__)
