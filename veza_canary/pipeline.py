"""The canary deploy, in the runbook's order, safe on every path.

``STEPS`` is the table of contents. Each step is a method with no arguments;
``Deploy.run`` loops over them and applies the rollback policy by phase:

* ``check``  -- preflight, migration gate, lock, confirmation. Nothing is
  changed; a failure exits with its own code (3, 4, 8, 9, 2).
* ``canary`` -- drain, install, node health, ready + UP, LB health, SLI watch.
  Any failure, error or interrupt puts the canary back on a known binary:
  untouched -> simply re-enabled; touched -> drained, last-known-good restored
  atomically, restarted, healthy, ready, UP. Exit 5 (rolled back), 130
  (interrupted) or 7 (the rollback itself failed: the canary is left drained).
* ``peers``  -- one peer at a time: drain, install, restart, health, ready, UP,
  LB. A failed peer is left drained if its binary changed (never re-enabled
  unhealthy), re-enabled if not; the roll stops; exit 6. No automatic peer
  rollback (runbook).

Every run reconciles from live state (HAProxy admin state, each node's sha256),
so re-running the same command after any failure, even a SIGKILL, is safe.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from veza_canary import __version__
from veza_canary.artifact import Artifact, snapshot
from veza_canary.errors import (
    CanaryRolledBack,
    ConfigError,
    DrainTimedOut,
    HAProxyError,
    HealthCheckFailed,
    InfraError,
    Interrupted,
    LintBlocked,
    PeerRollFailed,
    PreflightError,
    PrometheusError,
    RollbackFailed,
    SLIBreached,
    VezaError,
)
from veza_canary.fleet import Fleet
from veza_canary.health import Poll, WaitTimedOut, wait_drained, wait_lb_healthy, wait_node_healthy, wait_up
from veza_canary.lock import LockInfo
from veza_canary.log import get_logger, redact_text
from veza_canary.node import Node
from veza_canary.report import Report, now_iso
from veza_canary.sli import (
    Queries,
    Sample,
    Verdict,
    WatchPolicy,
    WatchResult,
    probe,
    thresholds_from_settings,
    watch,
)

if TYPE_CHECKING:
    from veza_canary.liveview import Observer
    from veza_canary.settings import Settings

log = get_logger(__name__)


# --- interrupts ------------------------------------------------------------------------


class DeployInterrupt(BaseException):
    """SIGINT/SIGTERM arrived outside cleanup. BaseException so no ``except Exception`` swallows it."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"{signame} received")
        self.signame = signame


class _DrainLost(Exception):  # noqa: N818 - internal signal between a drain wait and _drain
    """A node we drained shows ready again: HAProxy lost its runtime state (restart or reload)."""


class InterruptGuard:
    """Turns SIGINT/SIGTERM into DeployInterrupt; during cleanup, refuses them with a message."""

    def __init__(self) -> None:
        self.cleaning = False
        self.received: list[str] = []

    def _handler(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if self.cleaning:
            sys.stderr.write(
                f"veza-canary: {name} received while bringing the fleet to a safe state; not stopping "
                "mid-step (SIGKILL would leave a node drained). Cleanup continues.\n"
            )
            sys.stderr.flush()
            return
        raise DeployInterrupt(name)

    @contextmanager
    def armed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._handler)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextmanager
    def cleanup(self) -> Iterator[None]:
        prev, self.cleaning = self.cleaning, True
        try:
            yield
        finally:
            self.cleaning = prev


# --- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    phase: str  # check | canary | peers
    method: str
    summary: str


STEPS: tuple[Step, ...] = (
    Step("preflight", "check", "preflight",
         "validate artifact + rollback source; HAProxy, nodes, Prometheus reachable; fleet UP; SLI green; "
         "lock free; release not blocked"),
    Step("migration-gate", "check", "migration_gate", "backward-compat lint of migrations new since MIGRATIONS_SINCE"),
    Step("lock", "check", "take_lock", "take the fleet lock on the HAProxy host"),
    Step("confirm", "check", "confirm", "ask before the first change (TTY only; --yes skips)"),
    Step("drain-canary", "canary", "drain_canary", "set server POOL/CANARY state drain; wait for 0 sessions"),
    Step("install-canary", "canary", "install_canary", "push to a temp name, verify sha256, rename, restart"),
    Step("canary-health", "canary", "canary_health", "GET NODE_HEALTH_URL+HEALTH_PATH inside the node until 200"),
    Step("ready-canary", "canary", "ready_canary", "set server state ready; wait until HAProxy says UP"),
    Step("lb-health", "canary", "lb_health", "GET LB_URL+HEALTH_PATH returns 200"),
    Step("sli-watch", "canary", "sli_watch", "p95 and 5xx ratio every SLI_PROBE_INTERVAL for SLI_WINDOW"),
    Step("peers", "peers", "roll_peers", "each peer in turn: drain, install, restart, health, ready, UP, LB"),
)

#: Canary failures that prove the *binary* bad: its sha256 is blocked after the rollback.
_BINARY_FAULTS = (HealthCheckFailed, SLIBreached)


@dataclass(frozen=True, slots=True)
class RollbackSource:
    kind: str  # "local" (ROLLBACK_BINARY) | "previous" (INSTALL_DIR/veza-api.previous on the canary) | "none"
    sha256: str | None
    artifact: Artifact | None = None

    def describe(self) -> str:
        if self.kind == "local" and self.artifact:
            return f"ROLLBACK_BINARY {self.artifact.original} ({(self.sha256 or '?')[:12]})"
        if self.kind == "previous":
            return f"veza-api.previous on the canary ({(self.sha256 or '?')[:12]})"
        return "none"


class Deploy:
    def __init__(
        self,
        fleet: Fleet,
        *,
        workdir: Path,
        force: bool = False,
        confirm: Callable[[str], bool] | None = None,
        report: Report | None = None,
        repo_root: Path | None = None,
        command_line: str = "veza-canary deploy",
        guard: InterruptGuard | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.fleet = fleet
        self.s = fleet.settings
        self.workdir = workdir
        self.force = force
        self._confirm = confirm
        self.report = report or Report()
        self.repo_root = repo_root or Path.cwd()
        self.command_line = command_line
        self.guard = guard or InterruptGuard()
        #: Told about every wait poll and SLI probe (the live view); None: logs only.
        self.observer = observer
        self._on_poll = observer.on_poll if observer else None
        self.artifact: Artifact | None = None
        self.rollback: RollbackSource | None = None
        self.canary_sha_before: str | None = None
        self.drained: set[str] = set()
        self.lock = fleet.lock()
        self.locked = False
        self.done_peers: list[str] = []
        self.skipped_peers: list[str] = []

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> Report:
        rep = self.report
        rep.tool_version = __version__
        rep.settings = self.s.public_dict()
        error: VezaError | None = None
        step = STEPS[0]
        with self.guard.armed():
            try:
                for step in STEPS:
                    with rep.step(step.name, node=self.s.pool.canary if step.phase == "canary" else None):
                        getattr(self, step.method)()
                rep.outcome, rep.exit_code = "success", 0
                rep.message = f"deployed {self._sha()[:12]} to {len(self.s.pool.nodes)} node(s)"
            except DeployInterrupt as exc:
                with self.guard.cleanup():
                    error = self._on_failure(exc, step)
            except VezaError as exc:
                with self.guard.cleanup():
                    error = self._on_failure(exc, step)
            except Exception as exc:  # a bug: still bring the fleet to a safe state
                log.exception("internal_error", step=step.name)
                with self.guard.cleanup():
                    error = self._on_failure(exc, step)
            finally:
                with self.guard.cleanup():
                    try:
                        self._finish(error)
                    except Exception:  # the end-of-run bookkeeping must never mask the outcome
                        log.exception("deploy.finish_failed")
        if error is not None:
            error.report = rep  # type: ignore[attr-defined]
            raise error
        return rep

    def _sha(self) -> str:
        return self.artifact.sha256 if self.artifact else "?"

    # -- check phase ------------------------------------------------------------------
    def preflight(self) -> None:
        s = self.s
        if s.artifact is None:
            raise ConfigError("ARTIFACT", "is not set (the binary to ship)")
        self.artifact = snapshot(s.artifact, "ARTIFACT", self.workdir)
        self.report.artifact = self.artifact.to_dict()
        log.info("preflight.artifact", path=str(s.artifact), sha256=self.artifact.sha256, size=self.artifact.size)

        try:
            self._preflight_fleet()
        except InfraError as exc:
            raise PreflightError(f"preflight: {exc}", hint=exc.hint) from exc
        if self.rollback:
            self.report.rollback_source = {"kind": self.rollback.kind, "sha256": self.rollback.sha256,
                                           "describe": self.rollback.describe()}

    def _preflight_fleet(self) -> None:
        s, f = self.s, self.fleet
        assert self.artifact is not None
        # HAProxy: reachable, backend and every server known, fleet healthy.
        states = f.haproxy.states()
        stats = f.haproxy.stats()
        unknown = [n for n in s.pool.nodes if n not in states or n not in stats]
        if unknown:
            raise PreflightError(
                f"unknown node(s) {', '.join(unknown)}: not servers of HAProxy backend {s.haproxy.backend!r} "
                f"(it has: {', '.join(sorted(states)) or 'none'})"
            )
        bad = []
        for n in s.pool.nodes:
            st, stat = states[n], stats[n]
            if st.in_maint:
                bad.append(f"{n} is in MAINT")
            elif stat.is_down and not st.drained:
                bad.append(f"{n} is DOWN ({stat.check_status or 'no check'})")
            elif st.drained:
                # Drained (and maybe DOWN: a run killed after restarting a bad binary) means left by an earlier
                # run: out of rotation already, and this run reinstalls and checks it before re-enabling it.
                found = "drained and DOWN" if stat.is_down else "drained"
                log.warning("preflight.reconcile", node=n,
                            msg=f"node is {found} (left by an earlier run?); this run will reinstall and re-enable it")
                self.report.event("reconcile", node=n, found=found)
        if bad:
            if not s.safety.allow_degraded:
                raise PreflightError(f"fleet is degraded: {'; '.join(bad)}",
                                     hint="fix the fleet first, or pass --allow-degraded to deploy anyway")
            log.warning("preflight.degraded_allowed", problems=bad)

        # Nodes: reachable, current binary known (temp files of a killed run are removed once the lock is held).
        shas = {}
        for n in s.pool.nodes:
            node = f.nodes[n]
            shas[n] = node.sha256()
        self.canary_sha_before = shas[s.pool.canary]
        self.report.event("fleet_before", shas={n: (v or "missing") for n, v in shas.items()})

        # Rollback source.
        self.rollback = self._rollback_source()

        # Lock free, release not blocked.
        holder = f.lock().current()
        if holder is not None:
            self.report.event("lock_seen", holder=holder.describe())
        f.blocked().check(self.artifact.sha256, force=self.force)

        # Prometheus reachable and the SLI green now on every serving node.
        self._preflight_sli(states)

    def _rollback_source(self) -> RollbackSource:
        s, f = self.s, self.fleet
        assert self.artifact is not None
        if s.rollback_binary is not None:
            rb = snapshot(s.rollback_binary, "ROLLBACK_BINARY", self.workdir)
            if rb.sha256 == self.artifact.sha256:
                raise PreflightError("ROLLBACK_BINARY has the same sha256 as ARTIFACT: a rollback would change nothing")
            return RollbackSource("local", rb.sha256, rb)
        prev = f.canary.sha256(f.canary.previous_path)
        if prev is not None and prev != self.artifact.sha256:
            if self.canary_sha_before is not None and prev != self.canary_sha_before:
                # The runbook keeps .previous by hand; say so when a rollback would not restore what runs now.
                log.warning("preflight.rollback_target_differs", previous=prev[:12],
                            running=self.canary_sha_before[:12],
                            hint="set ROLLBACK_BINARY to roll back to the build the canary runs now")
                self.report.event("rollback_target_differs", previous=prev, running=self.canary_sha_before)
            return RollbackSource("previous", prev)
        why = (f"{f.canary.previous_path} is missing on {s.pool.canary}" if prev is None
               else f"{f.canary.previous_path} on {s.pool.canary} is the artifact itself")
        if s.safety.allow_no_rollback:
            log.warning("preflight.no_rollback", reason=why)
            return RollbackSource("none", None)
        raise PreflightError(f"no last-known-good binary: {why}",
                             hint="set ROLLBACK_BINARY=/path/to/old/veza-api (or --allow-no-rollback)")

    def _preflight_sli(self, states: dict) -> None:
        """Refuse to start into a red SLI or a blind one; a node with no data yet is only a warning."""
        s, f = self.s, self.fleet
        t = thresholds_from_settings(s)
        scoped = "{node}" in s.sli.selector
        targets = [n for n in s.pool.nodes if not states[n].drained and not states[n].in_maint] if scoped else [None]
        nodata = []
        for n in targets:
            sample = probe(f.prom, Queries.from_settings(s, n or s.pool.canary), t)
            where = f" on {n}" if n else ""
            if sample.verdict is Verdict.ERROR:
                raise PreflightError(f"Prometheus: {sample.reason}")
            if sample.verdict is Verdict.FAIL:
                raise PreflightError(f"SLI already red{where} before any change: {sample.reason}",
                                     hint="a canary started into a red SLI would roll back for nothing")
            if sample.verdict is Verdict.NODATA:
                nodata.append(f"{n or 'fleet'} ({sample.reason})")
        if nodata and len(nodata) == len(targets):
            raise PreflightError(f"SLI has no data: {'; '.join(nodata)}",
                                 hint="check PROM_URL, SLI_SELECTOR and that the fleet gets traffic")
        if nodata:
            log.warning("preflight.sli_nodata", nodes=nodata, msg="judged green on the nodes that have data")
            self.report.event("sli_nodata_at_preflight", nodes=nodata)

    def migration_gate(self) -> None:
        try:
            from veza_canary.migrations import deploy_gate
        except ImportError:
            log.warning("migration_gate.unavailable", msg="the migration linter is not installed; gate skipped")
            self.report.migration_gate = {"status": "unavailable"}
            return
        result = deploy_gate(self.s, self.repo_root)
        self.report.migration_gate = result.to_dict()
        if result.blocking and not result.bypassed:
            raise LintBlocked(f"migration gate: {result.summary()}",
                              hint="split the migration (expand/contract), or FORCE_MIGRATE=1 after review")
        if result.blocking and result.bypassed:
            log.warning("migration_gate.FORCED", msg="FORCE_MIGRATE=1 bypasses blocking findings",
                        findings=len(result.blocking))
            self.report.event("force_migrate", findings=len(result.blocking), summary=result.summary())

    def take_lock(self) -> None:
        mine = LockInfo.mine(self._sha(), redact_text(self.command_line))
        self.lock.acquire(mine, wait=self.s.safety.lock_wait)
        self.locked = True
        # Only now, holding the lock: a refused concurrent run must not delete the temp file of a push in flight.
        for n in self.s.pool.nodes:
            self.fleet.nodes[n].remove_stale_temps()

    def confirm(self) -> None:
        if self._confirm is None:
            return
        plan = (f"Deploy {self._sha()[:12]} to canary {self.s.pool.canary}, then peers "
                f"{', '.join(self.s.pool.peers) or '(none)'}?")
        if not self._confirm(plan):
            raise PreflightError("not confirmed; nothing was changed")

    # -- canary phase -----------------------------------------------------------------
    def drain_canary(self) -> None:
        self._drain(self.fleet.canary)

    def install_canary(self) -> None:
        assert self.artifact is not None
        node = self.fleet.canary
        node.install(self.artifact.path, self.artifact.sha256)
        # Always restart the drained canary: a killed run may have renamed the file without restarting.
        self._ensure_drained(node)
        node.restart()

    def canary_health(self) -> None:
        self._node_health(self.fleet.canary)

    def ready_canary(self) -> None:
        self._ready(self.fleet.canary)

    def lb_health(self) -> None:
        try:
            wait_lb_healthy(self.fleet.lb_client, self.s.service.lb_health_url, timeout=min(self.s.timeouts.up, 30.0),
                            interval=self.s.timeouts.poll_interval, clock=self.fleet.clock, on_poll=self._on_poll)
        except WaitTimedOut as exc:
            raise HealthCheckFailed(f"LB health: {exc}") from None

    def sli_watch(self) -> None:
        s, f = self.s, self.fleet
        queries, t = Queries.from_settings(s), thresholds_from_settings(s)
        policy = WatchPolicy(window_s=s.sli.window, interval_s=s.sli.probe_interval,
                             max_nodata=s.sli.max_nodata, max_errors=s.sli.max_errors)
        canary = s.pool.canary
        restarts0 = f.canary.service_restarts()

        def take(at: float) -> Sample:
            # A crash-looping canary can look healthy between crashes; systemd's counter can't.
            if restarts0 is not None:
                now = f.canary.service_restarts()
                if now is not None and now > restarts0:
                    smp = Sample(Verdict.FAIL, f"canary service {s.service.name} crashed and was restarted "
                                               f"{now - restarts0} time(s) by systemd", at=round(at, 3))
                    log.info("sli.probe", verdict=str(smp.verdict), reason=smp.reason, at=smp.at)
                    return smp
            # A canary HAProxy has marked DOWN serves nothing: that is red now, not no-data later.
            try:
                stat = f.haproxy.stat(canary)
            except HAProxyError as exc:
                log.warning("sli.haproxy_unreadable", error=str(exc))
            else:
                if not stat.is_up:
                    smp = Sample(Verdict.FAIL, f"canary {canary} is {stat.status} in HAProxy "
                                               f"({stat.check_status or 'no check'})", at=round(at, 3))
                    log.info("sli.probe", verdict=str(smp.verdict), reason=smp.reason, at=smp.at)
                    return smp
            return probe(f.prom, queries, t, at=at)

        def on_sample(smp: Sample, r: WatchResult) -> None:
            self.report.sli_samples.append(smp.to_dict())
            if self.observer:
                self.observer.on_sample(smp, r)

        if self.observer:
            self.observer.on_watch(policy, canary)
        result = watch(take, policy, f.clock, on_sample=on_sample)
        if not result.ok:
            if result.samples and result.samples[-1].verdict is Verdict.ERROR:
                # Prometheus failed, not the binary: the canary is rolled back (we are blind), but the
                # release is not blocked as if the build were bad.
                raise PrometheusError(f"SLI unknown, Prometheus failing: {result.reason}")
            raise SLIBreached(result.reason)
        log.info("sli.green", reason=result.reason)

    # -- peers phase --------------------------------------------------------------------
    def roll_peers(self) -> None:
        assert self.artifact is not None
        f = self.fleet
        for peer in f.peers:
            before = peer.sha256()
            state, stat = f.haproxy.state(peer.name), f.haproxy.stat(peer.name)
            if before == self.artifact.sha256 and state.admin == "ready" and stat.is_up:
                log.info("peer.skip", node=peer.name, reason="already on the artifact and UP")
                with self.report.step("peer", node=peer.name) as rec:
                    rec.outcome, rec.detail = "skipped", "already on the artifact and UP"
                self.skipped_peers.append(peer.name)
                continue
            restarted = False
            try:
                with self.report.step("peer", node=peer.name):
                    self._drain(peer)
                    peer.install(self.artifact.path, self.artifact.sha256)
                    self._ensure_drained(peer)
                    peer.restart()
                    restarted = True
                    self._node_health(peer)
                    self._ready(peer)
                    self.lb_health()
                self.done_peers.append(peer.name)
            except DeployInterrupt as exc:
                with self.guard.cleanup():
                    where = self._settle_peer(peer, before, interrupted=True, restarted=restarted)
                raise Interrupted(f"interrupted ({exc.signame}) while rolling peer {peer.name}; {where}",
                                  hint=self._resume_hint()) from None
            except Exception as exc:  # every failure settles the peer before the roll stops
                with self.guard.cleanup():
                    where = self._settle_peer(peer, before, interrupted=False)
                raise PeerRollFailed(f"peer {peer.name} failed: {_why(exc)}; {where}",
                                     hint=self._resume_hint()) from exc

    def _settle_peer(self, peer: Node, before: str | None, *, interrupted: bool, restarted: bool = True) -> str:
        """Unchanged binary: back in rotation. Changed: drained, unless interrupted after its restart and healthy.

        A binary renamed into place but not restarted is not what the node runs: re-enabling it would
        leave a node in rotation on the old binary that a re-run then skips as "already on the artifact".
        """
        f = self.fleet
        try:
            live = peer.sha256()
        except VezaError:
            live = None
        changed = live is None or live != before
        try:
            if not changed or (interrupted and restarted and peer.health().ok):
                if peer.name in self.drained:
                    self._ready(peer)
                return f"{peer.name} is in rotation" + (" on the new binary" if changed else " on its old binary")
            f.haproxy.set_state(peer.name, "drain")
            self.drained.add(peer.name)
            if interrupted and not restarted:
                return (f"{peer.name} left DRAINED (out of rotation): its new binary is in place but the service "
                        "was not restarted")
            return f"{peer.name} left DRAINED (out of rotation) on a binary that did not pass its checks"
        except Exception as exc:  # noqa: BLE001 - report, never mask the original failure
            return f"{peer.name} state uncertain ({_why(exc)}): check it with veza-canary status"

    # -- shared node operations --------------------------------------------------------------
    def _drain(self, node: Node, *, again: bool = False) -> None:
        s, f = self.s, self.fleet
        state = f.haproxy.state(node.name)
        # Recorded before the command: a signal while it runs (or just after) must still re-enable the node.
        self.drained.add(node.name)
        if state.admin != "drain":
            f.haproxy.set_state(node.name, "drain")
        else:
            log.info("drain.noop", node=node.name, reason="already drained")
        try:
            wait_drained(f.haproxy, node.name, timeout=s.timeouts.drain, interval=s.timeouts.poll_interval, clock=f.clock,
                         on_poll=self._drain_watch(node))
        except _DrainLost:
            if again:
                raise DrainTimedOut(f"drain of {node.name}: HAProxy keeps losing the drain state (restarting?)",
                                    hint="check HAProxy (veza-canary status), then re-run") from None
            self._drain_lost(node)
            self._drain(node, again=True)
            return
        except WaitTimedOut as exc:
            if s.timeouts.drain_action != "shutdown-sessions":
                raise DrainTimedOut(f"drain of {node.name}: {exc}",
                                    hint="--drain-timeout-action=shutdown-sessions kills them") from None
            log.warning("drain.timeout.shutdown_sessions", node=node.name, last=str(exc.last))
            self.report.event("shutdown_sessions", node=node.name)
            f.haproxy.shutdown_sessions(node.name)
            try:
                wait_drained(f.haproxy, node.name, timeout=10.0, interval=s.timeouts.poll_interval, clock=f.clock,
                             on_poll=self._on_poll)
            except WaitTimedOut as exc2:
                raise DrainTimedOut(f"drain of {node.name} even after shutdown sessions: {exc2}") from None

    def _drain_watch(self, node: Node) -> Callable[[Poll], None]:
        """Per-poll hook of a drain wait: a node we drained that HAProxy shows ready again lost its drain."""

        def on_poll(p: Poll) -> None:
            if self._on_poll is not None:
                self._on_poll(p)
            if p.fields.get("admin") == "ready":
                raise _DrainLost(node.name)

        return on_poll

    def _drain_lost(self, node: Node) -> None:
        log.warning("haproxy.drain_lost", node=node.name,
                    msg="HAProxy no longer has the node drained (a restart or reload loses runtime state); "
                        "draining it again")
        self.report.event("haproxy_drain_lost", node=node.name)

    def _ensure_drained(self, node: Node) -> None:
        """Right before a service restart: still out of rotation? (HAProxy may have restarted since the drain.)"""
        st = self.fleet.haproxy.state(node.name)
        if not (st.drained or st.in_maint):
            self._drain_lost(node)
            self._drain(node, again=True)

    def _node_health(self, node: Node) -> None:
        try:
            h = wait_node_healthy(node, timeout=self.s.timeouts.node_health, interval=self.s.timeouts.poll_interval,
                                  clock=self.fleet.clock, on_poll=self._on_poll)
        except WaitTimedOut as exc:
            raise HealthCheckFailed(f"{node.name} health: {exc}") from None
        log.info("node.healthy", node=node.name, result=h.describe())

    def _ready(self, node: Node) -> None:
        f = self.fleet
        f.haproxy.set_state(node.name, "ready")
        self.drained.discard(node.name)
        try:
            wait_up(f.haproxy, node.name, timeout=self.s.timeouts.up, interval=self.s.timeouts.poll_interval, clock=f.clock,
                    on_poll=self._on_poll)
        except WaitTimedOut as exc:
            raise HealthCheckFailed(f"HAProxy did not report {node.name} UP: {exc}") from None

    # -- failure policy ------------------------------------------------------------------
    def _on_failure(self, exc: BaseException, step: Step) -> VezaError:
        interrupted = isinstance(exc, DeployInterrupt)
        why = _why(exc)
        log.error("deploy.step_failed", step=step.name, phase=step.phase, error=why)
        self.report.event("step_failed", step=step.name, error=why)
        if step.phase == "check":
            if interrupted:
                return Interrupted(f"interrupted ({exc.signame}) during {step.name}; nothing was changed")  # type: ignore[attr-defined]
            if isinstance(exc, VezaError):
                return exc
            return VezaError(f"internal error during {step.name}: {why}")
        if step.phase == "peers":
            if interrupted:  # between two peers (a peer being rolled is settled and re-raised in roll_peers)
                return Interrupted(f"interrupted ({exc.signame}) between peers; no peer was being changed "  # type: ignore[attr-defined]
                                   f"(done: {', '.join(self.done_peers) or 'none'})", hint=self._resume_hint())
            if isinstance(exc, PeerRollFailed | Interrupted):
                return exc
            if isinstance(exc, VezaError):  # between two peers (HAProxy or a node unreadable): the roll stops
                return PeerRollFailed(f"peer roll stopped before changing the next peer: {why} "
                                      f"(done: {', '.join(self.done_peers) or 'none'}; every node is where it was)",
                                      hint=self._resume_hint())
            return VezaError(f"internal error during the peer roll: {why}", hint=self._resume_hint())
        # Canary phase.
        try:
            what = self._restore_canary(why)
        except RollbackFailed as rb:
            return rb
        if interrupted:
            return Interrupted(f"interrupted ({exc.signame}) during {step.name}; {what}")  # type: ignore[attr-defined]
        if isinstance(exc, _BINARY_FAULTS) and what.startswith("canary rolled back") and self.artifact:
            try:
                self.fleet.blocked().block(self.artifact.sha256, f"{step.name}: {why}", self.fleet.clock.now())
                self.report.event("release_blocked", sha256=self.artifact.sha256)
            except VezaError as e:
                log.error("release.block_failed", error=str(e))
        cls = CanaryRolledBack if isinstance(exc, VezaError) else VezaError
        return cls(f"{step.name} failed ({why}); {what}")

    def _restore_canary(self, cause: str) -> str:
        """Put the canary back on a known binary, in rotation. Raises RollbackFailed."""
        f, node = self.fleet, self.fleet.canary
        try:
            live = node.sha256()
        except VezaError:
            live = None
        # Touched = runs (or may run) anything but what it ran before, or the artifact itself (a re-run).
        # Decided from live state, not from memory, so a push that failed before its rename counts as untouched.
        touched = live is None or live != self.canary_sha_before or (
            self.artifact is not None and live == self.artifact.sha256)
        if not touched:
            if node.name in self.drained:
                try:
                    self._ready(node)
                except (VezaError, WaitTimedOut) as exc:
                    raise RollbackFailed(
                        f"canary {node.name} untouched but could not be re-enabled: {_why(exc)}; it is DRAINED",
                        hint="veza-canary haproxy ready " + node.name) from exc
                return f"canary {node.name} untouched and back in rotation (nothing deployed)"
            return "nothing was changed"
        rb = self.rollback
        self.report.event("rollback_start", node=node.name, cause=cause,
                          to=rb.describe() if rb else "none")
        log.warning("rollback.start", node=node.name, cause=cause, to=rb.describe() if rb else "none")
        if rb is None or rb.kind == "none":
            self._leave_drained(node)
            raise RollbackFailed(f"ROLLBACK IMPOSSIBLE: no last-known-good binary; canary {node.name} left DRAINED",
                                 hint="push a known-good binary with: veza-canary rollback --nodes "
                                      f"{node.name} --to /path/to/veza-api")
        try:
            st = f.haproxy.state(node.name)
            if st.admin != "drain":
                f.haproxy.set_state(node.name, "drain")
            self.drained.add(node.name)
            try:
                wait_drained(f.haproxy, node.name, timeout=min(self.s.timeouts.drain, 30.0),
                             interval=self.s.timeouts.poll_interval, clock=f.clock, on_poll=self._on_poll)
            except WaitTimedOut:
                f.haproxy.shutdown_sessions(node.name)  # the bad binary's sessions go; the good one takes over
            if rb.kind == "local":
                assert rb.artifact is not None
                node.install(rb.artifact.path, rb.artifact.sha256)
            else:
                node.restore_previous()
            node.restart()
            self._node_health(node)
            self._ready(node)
            now = node.sha256()
            if now != rb.sha256:
                raise RollbackFailed(f"canary binary is {str(now)[:12]} after rollback, expected {str(rb.sha256)[:12]}")
        except RollbackFailed:
            self._leave_drained(node)
            raise
        except (VezaError, WaitTimedOut, Exception) as exc:  # noqa: BLE001
            self._leave_drained(node)
            raise RollbackFailed(
                f"ROLLBACK FAILED on canary {node.name}: {_why(exc)}; the node is left DRAINED (out of rotation)",
                hint=f"inspect it (veza-canary status), then: veza-canary rollback --nodes {node.name}",
            ) from exc
        self.report.event("rollback_done", node=node.name, sha256=rb.sha256)
        log.warning("rollback.done", node=node.name, sha256=(rb.sha256 or "")[:12])
        return f"canary rolled back to {rb.describe()} and back in rotation"

    def _leave_drained(self, node: Node) -> None:
        try:
            self.fleet.haproxy.set_state(node.name, "drain")
            self.drained.add(node.name)
        except VezaError as exc:
            log.error("leave_drained_failed", node=node.name, error=str(exc))

    # -- the end ----------------------------------------------------------------------------
    def _resume_hint(self) -> str:
        return f"fix the cause, then re-run the same command (it reconciles from live state): {self.command_line}"

    def _finish(self, error: VezaError | None) -> None:
        rep = self.report
        if self.locked:
            self._remove_temps()
        self.lock.release()
        rep.final_state = self.fleet_state()
        rep.ended_at = now_iso()
        if error is not None:
            rep.outcome = type(error).__name__
            rep.exit_code = int(error.exit_code)
            rep.message = redact_text(error.message)
            if error.exit_code not in (0, 2, 3, 4, 8, 9):
                rep.resume = self._resume_hint()
        for name, st in rep.final_state.get("nodes", {}).items():
            log.info("fleet.node", node=name, **st)

    def _remove_temps(self) -> None:
        """No temp file outlives the run, even when a second Ctrl-C cut a cleanup short (SIGKILL: next run)."""
        for n in self.s.pool.nodes:
            try:
                self.fleet.nodes[n].remove_stale_temps()
            except Exception as exc:  # noqa: BLE001 - bookkeeping must not mask the outcome
                log.warning("temps.cleanup_failed", node=n, error=str(exc))

    def fleet_state(self) -> dict:
        def classify(_node: str, sha: str | None) -> str:
            if self.artifact and sha == self.artifact.sha256:
                return "artifact"
            return "rollback" if self.rollback and sha == self.rollback.sha256 else "other"

        return self.fleet.snapshot(self.s.pool.nodes, classify)


def _why(exc: BaseException) -> str:
    return redact_text(str(exc) or type(exc).__name__)


def plan(s: Settings) -> list[str]:
    """The dry-run plan: every step, node and command, in order. Touches nothing."""
    sock = (f"socat stdio UNIX-CONNECT:{s.haproxy.local_socket}" if s.haproxy.local_socket
            else f"incus exec {s.haproxy.container} -- socat stdio UNIX-CONNECT:{s.haproxy.socket}")
    pool = s.haproxy.backend
    restart = " ".join(s.service.restart_argv)

    def node_cmds(n: str) -> list[str]:
        return [
            f"    {sock}  <<< 'set server {pool}/{n} state drain'   (then poll 'show stat' until 0 sessions, "
            f"<= {s.timeouts.drain:g}s, on timeout: {s.timeouts.drain_action})",
            f"    incus exec {n} -- sha256sum {s.service.binary_path}   (identical -> no push)",
            f"    incus -q file push --mode 0755 ARTIFACT {n}{s.service.install_dir}/.veza-api.new-XXXX; verify sha256; "
            f"mv -f it {s.service.binary_path}",
            f"    incus exec {n} -- {restart}",
            f"    incus exec {n} -- curl {s.service.node_health_url}   (until 200, <= {s.timeouts.node_health:g}s)",
            f"    {sock}  <<< 'set server {pool}/{n} state ready'   (until UP, <= {s.timeouts.up:g}s)",
            f"    GET {redact_text(s.service.lb_health_url)}   (expect 200)",
        ]

    lines = ["Plan (dry run: nothing is changed):"]
    for i, step in enumerate(STEPS):
        lines.append(f"{i}. {step.name}: {step.summary}")
        if step.name == "drain-canary":
            lines.append(f"  canary {s.pool.canary}:")
            lines.extend(node_cmds(s.pool.canary))
        elif step.name == "sli-watch":
            q = Queries.from_settings(s)
            lines.append(f"    every {s.sli.probe_interval:g}s for {s.sli.window:g}s against {redact_text(s.prometheus.url)}:")
            lines.append(f"      p95   {q.p95}   (< {s.sli.p95_threshold_s:g})")
            lines.append(f"      5xx   {q.errors}")
            lines.append(f"      total {q.total}   (ratio < {s.sli.err_ratio_threshold:g})")
        elif step.name == "peers":
            for p in s.pool.peers:
                lines.append(f"  peer {p}:")
                lines.extend(node_cmds(p))
    lines.append("On a canary failure: drain, restore the last-known-good binary "
                 f"({'ROLLBACK_BINARY ' + str(s.rollback_binary) if s.rollback_binary else s.service.previous_path}), "
                 "restart, health, ready, UP.")
    return lines


def summary_lines(rep: Report) -> list[str]:
    """What the run says at the end: outcome, each node's state, how to resume."""
    out = [f"outcome: {rep.outcome} (exit {rep.exit_code})" + (f": {rep.message}" if rep.message else "")]
    nodes = rep.final_state.get("nodes", {})
    for name, st in nodes.items():
        sha = (st.get("sha256") or "?")[:12]
        out.append(f"  {name:<24} {st.get('admin', '?'):<6} {st.get('status', '?'):<10} {sha}  ({st.get('binary')})")
    if rep.resume:
        out.append(f"resume: {rep.resume}")
    return out
