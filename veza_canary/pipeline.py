"""The canary deploy, in the runbook's order, safe on every path.

``STEPS`` is the table of contents, rollback included. Each step is a callable
taking the ``Deploy``; ``Deploy.run`` loops over them and applies the failure
policy by phase:

* ``check``  -- preflight, migration gate, lock, confirmation. Nothing is
  changed; a failure exits with its own code (3, 4, 8, 9, 2).
* ``canary`` -- drain, install, node health, ready + UP, LB health, SLI watch.
  Any failure, error or interrupt runs ``ON_CANARY_FAILURE``: untouched -> put
  back as it was; touched -> the node procedure puts the last-known-good binary
  back (the bytes the canary ran when the deploy started, kept on the node as
  ``.veza-api.last-good``). Exit 5 (rolled back), 130 (interrupted) or 7 (the
  rollback itself failed: the canary is left drained).
* ``peers``  -- each peer through the node procedure. A failed peer is left
  drained if its binary changed (never re-enabled unhealthy), put back if not;
  the roll stops; exit 6. No automatic peer rollback (runbook).

Every node change goes through ``procedure.NodeProcedure``, the same code the
manual rollback uses. Every run reconciles from live state (HAProxy admin state,
each node's sha256 and what its service runs), so re-running the same command
after any failure, even a SIGKILL, is safe -- and deploying what already runs
everywhere changes nothing.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from veza_canary import __version__, traffic
from veza_canary.announce import Announcer
from veza_canary.artifact import Artifact, private_workdir, remove_stale_workdirs, snapshot
from veza_canary.errors import (
    CanaryRolledBack,
    ConfigError,
    FleetIncident,
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
from veza_canary.evidence import PromEvidence, queries_from_settings
from veza_canary.fleet import Fleet, build_fleet
from veza_canary.health import WaitTimedOut, dead_canary
from veza_canary.hooks import CONFIRM_PROMOTION, POST_CANARY, PRE_DEPLOY
from veza_canary.interrupts import DeployInterrupt, InterruptGuard
from veza_canary.lock import LockInfo
from veza_canary.log import get_logger, redact_text
from veza_canary.node import LAST_GOOD_NAME, Node
from veza_canary.notify import CANARY_IN_ROTATION, VERDICT, RunFacts
from veza_canary.procedure import BatchNodeFailed, Binary, NodeProcedure, Policy, why
from veza_canary.report import Report, now_iso, report_paths, write_reports
from veza_canary.sli import Queries, WatchPolicy
from veza_canary.verdict import Outcome
from veza_canary.verdict import Policy as JudgePolicy
from veza_canary.verdict import Sample as JudgeSample
from veza_canary.verdict import WatchResult as JudgeResult
from veza_canary.verdict import snapshot as judge_snapshot
from veza_canary.verdict import watch as judge_watch

if TYPE_CHECKING:
    from veza_canary.liveview import Observer
    from veza_canary.settings import Settings

log = get_logger(__name__)

__all__ = ["STEPS", "ON_CANARY_FAILURE", "Deploy", "DeployInterrupt", "InterruptGuard", "dry_run", "execute", "plan",
           "summary_lines"]


# --- the table of contents -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    phase: str  # check | canary | peers | rollback
    run: Callable[[Deploy], None]
    summary: str


def _preflight(d: Deploy) -> None:
    d.preflight()


def _migration_gate(d: Deploy) -> None:
    d.migration_gate()


def _lock(d: Deploy) -> None:
    d.take_lock()


def _confirm(d: Deploy) -> None:
    d.confirm()


def _pre_deploy_hook(d: Deploy) -> None:
    d.ann.gate(PRE_DEPLOY, f"deploy {d._sha()[:12]} to {', '.join(d.s.pool.nodes)}")
    d.ann.started(f"deploying {d._sha()[:12]}: canary {d.s.pool.canary}, then "
                  f"{', '.join(d.s.pool.peers) or 'no peers'}")


def _drain_canary(d: Deploy) -> None:
    d.proc.drain(d.fleet.canary)


def _install_canary(d: Deploy) -> None:
    d.install_canary()


def _canary_health(d: Deploy) -> None:
    d.proc.health(d.fleet.canary)


def _ready_canary(d: Deploy) -> None:
    d.enter_first_stage()
    d.proc.ready(d.fleet.canary)
    c = d.s.pool.canary
    d.ann.emit(CANARY_IN_ROTATION, f"canary {c} runs {d._sha()[:12]} and is UP", node=c)


def _lb_health(d: Deploy) -> None:
    d.proc.lb_check()


def _sli_watch(d: Deploy) -> None:
    d.sli_watch()


def _confirm_promotion(d: Deploy) -> None:
    c = d.s.pool.canary
    d.ann.gate(CONFIRM_PROMOTION, f"promote {d._sha()[:12]} from canary {c} to the peers", verdict="pass")
    d.ann.inform(POST_CANARY, f"canary {c} passed; promoting {d._sha()[:12]}", verdict="pass")


def _peers(d: Deploy) -> None:
    d.roll_peers()


def _rollback_canary(d: Deploy) -> None:
    d.restore_canary()


STEPS: tuple[Step, ...] = (
    Step("preflight", "check", _preflight,
         "validate artifact + rollback source; HAProxy, nodes, Prometheus reachable; fleet UP; SLI green; "
         "release not blocked; what already runs the artifact"),
    Step("migration-gate", "check", _migration_gate, "backward-compat lint of migrations new since MIGRATIONS_SINCE"),
    Step("lock", "check", _lock, "take the fleet lock on the HAProxy host"),
    Step("confirm", "check", _confirm, "ask before the first change (TTY only; --yes skips)"),
    Step("pre-deploy-hook", "check", _pre_deploy_hook,
         "run HOOKS_DIR/pre-deploy when present (non-zero: stop, nothing changed); webhook deploy-started"),
    Step("drain-canary", "canary", _drain_canary, "set server POOL/CANARY state drain; wait for 0 sessions"),
    Step("install-canary", "canary", _install_canary,
         "keep a verified copy of the running binary; push to a temp name, verify sha256, rename; restart"),
    Step("canary-health", "canary", _canary_health, "GET NODE_HEALTH_URL+HEALTH_PATH inside the node until 200"),
    Step("ready-canary", "canary", _ready_canary, "set server state ready; wait until HAProxy says UP"),
    Step("lb-health", "canary", _lb_health, "GET LB_URL+HEALTH_PATH returns 200"),
    Step("sli-watch", "canary", _sli_watch, "p95 and 5xx ratio every SLI_PROBE_INTERVAL for SLI_WINDOW"),
    Step("confirm-promotion", "canary", _confirm_promotion,
         "run HOOKS_DIR/confirm-promotion when present (non-zero: canary rolled back, peers untouched), "
         "then post-canary"),
    Step("peers", "peers", _peers, "each peer in turn: drain, install, restart, health, ready, UP, LB, verify"),
)

#: Run when a canary step fails, errs or is interrupted after the canary was touched.
ON_CANARY_FAILURE = Step("rollback-canary", "rollback", _rollback_canary,
                         "drain, put the last-known-good binary back (by sha256), restart, health, ready, UP, LB")

#: Canary steps skipped when the canary already runs the artifact (a re-run): nothing to change on it.
_CANARY_CHANGES = {"drain-canary", "install-canary", "canary-health", "ready-canary", "lb-health"}

#: Canary failures that prove the *binary* bad: its sha256 is blocked after the rollback.
_BINARY_FAULTS = (HealthCheckFailed, SLIBreached)


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of the canary's watch: its share of traffic and how long it is judged."""

    name: str  # "pinned", "5%", "100%"
    percent: int  # weight in percent of the configured one (0 while pinned)
    hold_s: float
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class RollbackSource:
    """Where the canary's automatic rollback takes its bytes from."""

    kind: str  # local (ROLLBACK_BINARY) | running (copied before the push) | kept (an earlier run's copy) | none
    binary: Binary | None
    artifact: Artifact | None = None

    @property
    def sha256(self) -> str | None:
        return self.binary.sha256 if self.binary else None

    def describe(self) -> str:
        return self.binary.describe() if self.binary else "none"


# --- the deploy ------------------------------------------------------------------------------


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
        announcer: Announcer | None = None,
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
        #: Webhooks, hooks and the history entry (a quiet one when none is given: tests, benchmarks).
        self.ann = announcer or Announcer(RunFacts(command="deploy", nodes=self.s.pool.nodes,
                                                   canary=self.s.pool.canary))
        self.proc = NodeProcedure(fleet, Policy.from_settings(self.s), report=self.report,
                                  lb_url=self.s.service.lb_health_url,
                                  on_poll=observer.on_poll if observer else None)
        self.artifact: Artifact | None = None
        self.rollback: RollbackSource | None = None
        #: Every node's sha256 at preflight (None: no binary): what "unchanged" means when a node is settled.
        self.shas_before: dict[str, str | None] = {}
        self.canary_files: dict[str, str | None] = {}
        #: The canary already runs the artifact and is in rotation (a re-run): its change steps are skipped.
        self.canary_done = False
        #: Every node already runs the artifact and is in rotation: the deploy changes nothing.
        self.all_done = False
        #: Nodes that already ran the artifact, in rotation, at preflight.
        self.runs_artifact: set[str] = set()
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
                    self._run_step(step)
                rep.outcome, rep.exit_code = "success", 0
                rep.message = (f"{self._sha()[:12]} already runs on all {len(self.s.pool.nodes)} node(s); "
                               "nothing was changed" if self.all_done
                               else f"deployed {self._sha()[:12]} to {len(self.s.pool.nodes)} node(s)")
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

    def _run_step(self, step: Step) -> None:
        node = self.s.pool.canary if step.phase == "canary" else None
        with self.report.step(step.name, node=node) as rec:
            skip = self._skip_reason(step)
            if skip:
                log.info("step.skipped", step=step.name, reason=skip)
                rec.outcome, rec.detail = "skipped", skip
                return
            step.run(self)

    def _skip_reason(self, step: Step) -> str | None:
        # A no-op run still takes (and so clears a dead holder's) lock and runs the gate; it asks nothing.
        if self.all_done and step.name not in ("preflight", "migration-gate", "lock"):
            return "every node already runs the artifact and is in rotation"
        if self.canary_done and step.name in _CANARY_CHANGES:
            return "the canary already runs the artifact and is in rotation"
        return None

    def _sha(self) -> str:
        return self.artifact.sha256 if self.artifact else "?"

    # -- check phase ------------------------------------------------------------------
    def preflight(self) -> None:
        s = self.s
        if s.artifact is None:
            raise ConfigError("ARTIFACT", "is not set (the binary to ship)")
        self.artifact = snapshot(s.artifact, "ARTIFACT", self.workdir)
        self.report.artifact = self.artifact.to_dict()
        self.ann.check()
        self.ann.learn(sha256=self.artifact.sha256, artifact_path=str(s.artifact))
        log.info("preflight.artifact", path=str(s.artifact), sha256=self.artifact.sha256, size=self.artifact.size)
        local_rb = None
        if s.rollback_binary is not None:
            local_rb = snapshot(s.rollback_binary, "ROLLBACK_BINARY", self.workdir)
            if local_rb.sha256 == self.artifact.sha256:
                raise PreflightError("ROLLBACK_BINARY has the same sha256 as ARTIFACT: a rollback would change nothing")
        try:
            self._preflight_fleet(local_rb)
        except InfraError as exc:
            raise PreflightError(f"preflight: {exc}", hint=exc.hint) from exc
        if self.rollback:
            self.report.rollback_source = {"kind": self.rollback.kind, "sha256": self.rollback.sha256,
                                           "describe": self.rollback.describe()}

    def _preflight_fleet(self, local_rb: Artifact | None) -> None:
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

        self._preflight_capacity(states, stats)

        # Nodes: reachable, current binary known, and whether each already runs the artifact.
        shas, done = {}, {}
        canary = f.canary
        # The canary's three files in one round trip: what it runs, the copy a run keeps, veza-api.previous.
        self.canary_files = canary.sha256s(canary.binary_path, canary.last_good_path, canary.previous_path)
        for n in s.pool.nodes:
            node = f.nodes[n]
            shas[n] = self.canary_files[node.binary_path] if node is canary else node.sha256()
            in_rotation = states[n].admin == "ready" and stats[n].is_up
            done[n] = shas[n] == self.artifact.sha256 and in_rotation and node.runs_installed()
        self.shas_before = shas
        self.report.event("fleet_before", shas={n: (v or "missing") for n, v in shas.items()},
                          runs_artifact=[n for n, v in done.items() if v])
        self.runs_artifact = {n for n, v in done.items() if v}
        self.canary_done = done[s.pool.canary]
        self.all_done = all(done.values())
        if self.all_done:
            log.info("preflight.already_deployed", sha256=self.artifact.sha256[:12],
                     msg="every node already runs the artifact and is in rotation: nothing to do")
            return

        # Rollback source, lock, blocked release, SLI.
        self.rollback = self._rollback_source(local_rb)
        f.blocked().check(self.artifact.sha256, force=self.force)
        self._preflight_sli(states)
        if self.shaped:
            t = self.s.traffic
            if t.ramped:
                plan = traffic.check_ramp(f.haproxy, self.s.pool.canary, t.steps)
                self.report.event("ramp_plan", **plan.to_dict())
            if t.pins:
                self._pin_map().preflight()

    def _preflight_capacity(self, states: dict, stats: dict) -> None:
        """MIN_IN_ROTATION must hold while the canary, then each batch of peers, is out of rotation."""
        pool = self.s.pool
        backend = len(states)
        floor = pool.min_in_rotation.of(backend)
        batch = max(1, pool.batch.of(len(pool.peers)))
        worst = max(1, min(batch, len(pool.peers)))
        if backend - worst < floor:
            raise PreflightError(
                f"MIN_IN_ROTATION={pool.min_in_rotation} ({floor} of {backend} servers) cannot hold while "
                f"{worst} node(s) are out of rotation (PEER_BATCH={pool.batch})",
                hint="lower PEER_BATCH or MIN_IN_ROTATION")
        self.proc.policy = replace(self.proc.policy, min_in_rotation=floor)
        self.report.event("capacity", backend=backend, min_in_rotation=floor, peer_batch=batch)

    def _rollback_source(self, local_rb: Artifact | None) -> RollbackSource:
        """The canary's last-known-good binary: ROLLBACK_BINARY, else the bytes the canary runs now."""
        s, canary = self.s, self.fleet.canary
        assert self.artifact is not None
        if local_rb is not None:
            return RollbackSource("local", Binary(local_rb.sha256, f"ROLLBACK_BINARY {local_rb.original}",
                                                  local=local_rb.path), local_rb)
        running = self.shas_before[s.pool.canary]
        kept = self.canary_files[canary.last_good_path]
        previous = self.canary_files[canary.previous_path]
        if running is not None and running != self.artifact.sha256:
            if previous is not None and previous != running:
                log.info("preflight.previous_not_running", previous=previous[:12], running=running[:12],
                         msg="veza-api.previous is not what the canary runs; the rollback target is the running "
                             "build (kept as " + LAST_GOOD_NAME + " before the push)")
                self.report.event("previous_not_running", previous=previous, running=running)
            return RollbackSource("running", Binary(running, f"the build the canary ran before ({LAST_GOOD_NAME})",
                                                    remote=canary.last_good_path))
        if kept is not None and kept != self.artifact.sha256:
            log.warning("preflight.reconcile_rollback_target", kept=kept[:12],
                        msg="the canary already has the artifact (an earlier run); its rollback target is the copy "
                            "that run kept of the build before")
            self.report.event("rollback_target_from_earlier_run", sha256=kept)
            return RollbackSource("kept", Binary(kept, f"the build the canary ran before ({LAST_GOOD_NAME}, kept "
                                                       "by an earlier run)", remote=canary.last_good_path))
        why_none = ("the canary's binary is missing" if running is None
                    else "the canary already has the artifact and no copy of the build before it was kept")
        if s.safety.allow_no_rollback:
            log.warning("preflight.no_rollback", reason=why_none)
            return RollbackSource("none", None)
        raise PreflightError(f"no last-known-good binary: {why_none}",
                             hint="set ROLLBACK_BINARY=/path/to/old/veza-api (or --allow-no-rollback)")

    def _preflight_sli(self, states: dict) -> None:
        """Refuse to start into a red SLI or a blind one; a node with no data yet is only a warning.

        Judged like the watch (``verdict.snapshot``), over the recent past only (two rate windows, at least
        two probe intervals): one error in a quiet minute is not "already red", and a build rolled back a few
        minutes ago does not keep the fleet red. Each node is judged alone against the SLO: a node merely
        worse than the others is not refused here."""
        s, f = self.s, self.fleet
        policy = JudgePolicy.from_settings(s)
        scoped = "{node}" in s.sli.selector
        targets = [n for n in s.pool.nodes if not states[n].drained and not states[n].in_maint] if scoped else [None]
        nodata, held = [], []
        for n in targets:
            # The node alone, against the SLO: no baseline (its regex of every other node would make a preflight
            # of N nodes cost N^2, and the baseline rules do not refuse here anyway).
            node_only = PromEvidence(f.prom, queries_from_settings(s, n or s.pool.canary)[0], None)
            sample = judge_snapshot(node_only, policy, policy.recent_s)
            where = f" on {n}" if n else ""
            verdict = str(sample.verdict)
            if verdict == "error":
                raise PreflightError(f"Prometheus: {sample.reason}")
            if verdict == "fail":
                raise PreflightError(f"SLI already red{where} before any change: {sample.reason}",
                                     hint="a canary started into a red SLI would roll back for nothing")
            elif verdict == "hold":
                held.append(f"{n or 'fleet'} ({sample.reason})")
            elif verdict == "no-data":
                nodata.append(f"{n or 'fleet'} ({sample.reason})")
        if held and len(held) == len(targets):
            raise PreflightError(f"SLI already red on the whole fleet before any change: {held[0]}",
                                 hint="a fleet-wide incident: a canary started now would judge nothing")
        if nodata and len(nodata) == len(targets):
            raise PreflightError(f"SLI has no data: {'; '.join(nodata)}",
                                 hint="check PROM_URL, SLI_SELECTOR and that the fleet gets traffic")
        if nodata:
            log.warning("preflight.sli_nodata", nodes=nodata, msg="judged green on the nodes that have data")
            self.report.event("sli_nodata_at_preflight", nodes=nodata)

    def migration_gate(self) -> None:
        from veza_canary.migrations import deploy_gate

        result = deploy_gate(self.s, self.repo_root, config_path=self.s.config_file)
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
        self.reconcile_traffic()

    def confirm(self) -> None:
        if self._confirm is None:
            return
        question = (f"Deploy {self._sha()[:12]} to canary {self.s.pool.canary}, then peers "
                    f"{', '.join(self.s.pool.peers) or '(none)'}?")
        if not self._confirm(question):
            raise PreflightError("not confirmed; nothing was changed")

    # -- canary phase -----------------------------------------------------------------
    def install_canary(self) -> None:
        """Keep the running build (the rollback target) on the node, then install the artifact and restart."""
        assert self.artifact is not None
        node = self.fleet.canary
        rb = self.rollback
        if rb is not None and rb.kind == "running" and rb.binary is not None:
            assert rb.binary.remote is not None
            if node.sha256(rb.binary.remote) != rb.binary.sha256:
                node.copy_verified(node.binary_path, rb.binary.remote, rb.binary.sha256)
                self.report.event("last_good_kept", node=node.name, sha256=rb.binary.sha256,
                                  path=rb.binary.remote)
        self.proc.install(node, self._artifact_binary())
        # Restarted whether or not the file changed: the drained canary may run something else (a run killed
        # between the rename and the restart); the drain is what made a restart free.
        self.proc.restart(node)

    # -- traffic shaping (CANARY_STEPS, CANARY_PINS) ------------------------------------------
    @property
    def shaped(self) -> bool:
        return bool(self.s.traffic.pins) or self.s.traffic.ramped

    def enter_first_stage(self) -> None:
        """While still drained, the canary's weight for its first stage (0 while pinned): ready keeps it."""
        if self.shaped:
            first = self._stages()[0]
            w = traffic.set_weight(self.fleet.haproxy, self.s.pool.canary, first.percent)
            self.report.event("weight", node=self.s.pool.canary, stage=first.name, weight=w.to_dict())

    def _pin_map(self) -> traffic.PinMap:
        return traffic.PinMap(self.fleet.haproxy, str(self.s.traffic.pin_map))

    def reconcile_traffic(self) -> None:
        """Under the lock: no node of this deploy left at a reduced weight, no pin left (a SIGKILLed ramp)."""
        h = self.fleet.haproxy
        weights = traffic.weights(h)  # every server in one read
        for n in self.s.pool.nodes:
            w = weights.get(n)
            if w is not None and w.skewed:
                log.warning("traffic.reconcile", node=n, weight=w.to_dict(), msg="restoring the configured weight")
                self.report.event("weight_restored", node=n, weight=w.to_dict())
                traffic.restore_weight(h, n)
        if self.s.traffic.pins:
            self._pin_map().clear()

    def restore_traffic(self) -> None:
        """Every exit path: pins removed, the canary at its configured weight. Never raises."""
        if not (self.shaped and self.locked):
            return
        try:
            if self.s.traffic.pins:
                self._pin_map().clear()
            w = traffic.read_weight(self.fleet.haproxy, self.s.pool.canary)
            if w.skewed:
                traffic.restore_weight(self.fleet.haproxy, self.s.pool.canary)
                self.report.event("weight_restored", node=self.s.pool.canary, weight=w.to_dict())
        except Exception as exc:  # noqa: BLE001 - reported in the end state, never masks the outcome
            log.error("traffic.restore_failed", error=why(exc),
                      hint="veza-canary haproxy weight --restore (status shows any skewed weight)")
            self.report.event("traffic_restore_failed", error=why(exc))

    def _artifact_binary(self) -> Binary:
        assert self.artifact is not None
        return Binary(self.artifact.sha256, f"ARTIFACT {self.artifact.original}", local=self.artifact.path)

    def sli_watch(self) -> None:
        """Judge the canary: the pinned stage (CANARY_PINS), each weighted step (CANARY_STEPS), then full weight
        for SLI_WINDOW. Each stage is its own verdict on its own evidence; the first that is not green stops."""
        if self.canary_done and not self._peers_todo():
            return
        for stage in self._stages():
            self._judge_stage(stage)
        log.info("sli.green", stages=len(self._stages()))

    def _stages(self) -> list[Stage]:
        t, window = self.s.traffic, self.s.sli.window
        stages = [Stage("pinned", 0, t.pin_hold, pinned=True)] if t.pins else []
        for i, pct in enumerate(t.steps):
            last = i == len(t.steps) - 1
            stages.append(Stage(f"{pct}%", pct, window if last else t.step_hold))
        return stages

    def _judge_stage(self, stage: Stage) -> None:
        s, f = self.s, self.fleet
        canary = s.pool.canary
        shaped = bool(s.traffic.pins) or s.traffic.ramped
        guard = traffic.StepGuard.enter(f.haproxy, canary, stage.percent) if shaped else None
        pins = traffic.PinMap(f.haproxy, str(s.traffic.pin_map)) if s.traffic.pins else None
        if pins is not None:
            if stage.pinned:
                pins.ensure(s.traffic.pins, canary)
            else:
                pins.clear()
        self.report.event("stage", stage=stage.name, percent=stage.percent, hold_s=stage.hold_s)
        log.info("sli.stage", stage=stage.name, percent=stage.percent, hold_s=stage.hold_s, pinned=stage.pinned)
        dead = dead_canary(f.canary)
        dead()  # the baseline, now: restarts from here on are the canary dying (a dead unit: the first alive())

        def alive() -> str | None:
            """Ends the watch at once: the unit died, HAProxy marks the canary DOWN, or its weight was changed."""
            if (why := dead()) is not None:
                return f"canary {canary}: {why}"
            try:  # HAProxy unreadable for a moment (a reload): not the canary's fault; asked again shortly
                stat = f.haproxy.stat(canary)
                if not stat.is_up:
                    return f"canary {canary} is {stat.status} in HAProxy ({stat.check_status or 'no check'})"
                if guard is not None:
                    chk = guard.check()
                    if chk.lost:
                        self.report.event("weight_reapplied", stage=stage.name, reason=chk.reason)
                    elif not chk.ok:
                        return f"canary {canary}'s weight changed under the ramp: {chk.reason}"
                if pins is not None and stage.pinned:
                    pins.ensure(s.traffic.pins, canary)
            except InfraError as exc:
                log.warning("sli.haproxy_unreadable", error=str(exc))
            return None

        def on_sample(smp: JudgeSample, r: JudgeResult) -> None:
            self.report.sli_samples.append({**smp.to_dict(), "stage": stage.name})
            if self.observer:
                self.observer.on_sample(smp, r)  # type: ignore[arg-type]

        policy = replace(JudgePolicy.from_settings(s), window_s=stage.hold_s)
        if stage.pinned or stage.percent < 100:
            # A small share of traffic: a quiet rate window is expected and must not end the stage early; it is
            # still never a pass (a stage whose evidence stays too thin is rolled back when its hold ends).
            policy = replace(policy, max_nodata=max(policy.max_nodata, int(stage.hold_s // policy.interval_s) + 1))
        evidence = PromEvidence.from_settings(f.prom, s)
        if self.observer:
            self.observer.on_watch(WatchPolicy(window_s=policy.window_s, interval_s=policy.interval_s,
                                               max_nodata=policy.max_nodata, max_errors=policy.max_errors), canary)
        result = judge_watch(evidence, policy, f.clock, alive=alive, on_sample=on_sample,
                             prior=evidence.baseline_history(policy.interval_s))
        share = None
        if shaped:  # over the time the stage actually ran
            ran = result.samples[-1].at if result.samples else policy.interval_s
            share = traffic.measured_share(f.prom, traffic.share_template(s), canary=canary, pool=s.pool.nodes,
                                           window_s=max(policy.interval_s, ran)).to_dict()
        self.report.event("stage_verdict", stage=stage.name, outcome=str(result.outcome), rule=result.rule,
                          reason=result.reason, measured_share=share)
        self.ann.emit(VERDICT, f"canary {canary} at {stage.name}: {result.outcome}: {result.reason}",
                      step="sli-watch", stage=stage.name, node=canary, verdict="pass" if result.ok else "fail",
                      rule=result.rule, reason=result.reason, evidence=self.report.sli_samples[-5:])
        if result.ok:
            return
        if result.outcome is Outcome.ERROR:
            # Prometheus failed, not the binary: rolled back (we are blind), the release not blocked.
            raise PrometheusError(f"SLI unknown at {stage.name}, Prometheus failing: {result.reason}")
        if result.outcome is Outcome.FLEET_INCIDENT:
            raise FleetIncident(f"fleet-wide incident during the watch at {stage.name} (the baseline is as bad "
                                f"as the canary; the canary is not blamed, the release not blocked): {result.reason}")
        raise SLIBreached(f"SLI breach at {stage.name} ({result.rule}): {result.reason}")

    # -- peers phase --------------------------------------------------------------------
    def _peers_todo(self) -> list[Node]:
        return [p for p in self.fleet.peers if p.name not in self.runs_artifact]

    def roll_peers(self) -> None:
        """The peers that do not run the artifact yet, PEER_BATCH at a time, never below MIN_IN_ROTATION."""
        todo = {p.name for p in self._peers_todo()}
        for peer in self.fleet.peers:
            if peer.name not in todo:
                log.info("peer.skip", node=peer.name, reason="already runs the artifact and is in rotation")
                with self.report.step("peer", node=peer.name) as rec:
                    rec.outcome, rec.detail = "skipped", "already runs the artifact and is in rotation"
                self.skipped_peers.append(peer.name)
        peers = [p for p in self.fleet.peers if p.name in todo]
        size = max(1, self.s.pool.batch.of(len(self.s.pool.peers)))
        for i in range(0, len(peers), size):
            self._roll_batch(peers[i:i + size])

    def _roll_batch(self, batch: list[Node]) -> None:
        """One batch of peers through the node procedure; any failure or signal settles every node of it."""
        artifact = self._artifact_binary()
        names = [p.name for p in batch]
        befores = {p.name: self.shas_before[p.name] for p in batch}  # this run holds the lock since preflight
        stages: dict[str, list[str]] = {n: [] for n in names}

        def settle(failed: str | None, *, interrupted: bool) -> str:
            # The failed node: drained unless unchanged. The others: finished when healthy, else drained too.
            return "; ".join(self.proc.settle(p, befores[p.name], interrupted=interrupted or p.name != failed,
                                              restarted="restarted" in stages[p.name]) for p in batch)

        try:
            with self.report.step("peer", node=",".join(names)):
                if len(batch) == 1:
                    self.proc.roll(batch[0], artifact, on_stage=stages[names[0]].append)
                else:
                    self.proc.roll_batch(batch, artifact, on_stage=lambda n, s: stages[n].append(s))
            self.done_peers.extend(names)
            for n in names:
                self.ann.emit(VERDICT, f"peer {n} runs {self._sha()[:12]} and is UP", step="peer", node=n,
                              verdict="pass")
        except DeployInterrupt as exc:
            with self.guard.cleanup():
                where = settle(None, interrupted=True)
            raise Interrupted(f"interrupted ({exc.signame}) while rolling {', '.join(names)}; {where}",
                              hint=self._resume_hint()) from None
        except Exception as exc:  # every failure settles the batch before the roll stops
            failed = exc.node if isinstance(exc, BatchNodeFailed) else names[0]
            cause = exc.cause if isinstance(exc, BatchNodeFailed) else exc
            with self.guard.cleanup():
                where = settle(failed, interrupted=False)
                self.ann.emit(VERDICT, f"peer {failed} failed: {why(cause)}; {where}", step="peer", node=failed,
                              verdict="fail")
            raise PeerRollFailed(f"peer {failed} failed: {why(cause)}; {where}",
                                 hint=self._resume_hint()) from exc

    # -- failure policy ------------------------------------------------------------------
    def _on_failure(self, exc: BaseException, step: Step) -> VezaError:
        interrupted = isinstance(exc, DeployInterrupt)
        reason = why(exc)
        log.error("deploy.step_failed", step=step.name, phase=step.phase, error=reason)
        self.report.event("step_failed", step=step.name, error=reason)
        if step.phase == "check":
            if interrupted:
                return Interrupted(f"interrupted ({exc.signame}) during {step.name}; nothing was changed")  # type: ignore[attr-defined]
            if isinstance(exc, VezaError):
                return exc
            return VezaError(f"internal error during {step.name}: {reason}")
        if step.phase == "peers":
            if interrupted:  # between two peers (a peer being rolled is settled and re-raised in roll_peers)
                return Interrupted(f"interrupted ({exc.signame}) between peers; no peer was being changed "  # type: ignore[attr-defined]
                                   f"(done: {', '.join(self.done_peers) or 'none'})", hint=self._resume_hint())
            if isinstance(exc, PeerRollFailed | Interrupted):
                return exc
            if isinstance(exc, VezaError):  # between two peers (HAProxy or a node unreadable): the roll stops
                return PeerRollFailed(f"peer roll stopped before changing the next peer: {reason} "
                                      f"(done: {', '.join(self.done_peers) or 'none'}; every node is where it was)",
                                      hint=self._resume_hint())
            return VezaError(f"internal error during the peer roll: {reason}", hint=self._resume_hint())
        # Canary phase.
        self._failure_cause = reason
        if self.shaped and self.s.traffic.pins and self.locked:
            try:  # pinned users leave a bad canary at once
                self._pin_map().clear()
            except VezaError as e:
                log.error("traffic.unpin_failed", error=str(e))
        try:
            with self.report.step(ON_CANARY_FAILURE.name, node=self.s.pool.canary) as rec:
                what = self._settle_canary(reason)
                rec.detail = what
        except RollbackFailed as rb:
            return rb
        finally:
            self.restore_traffic()  # only once the old binary is back (or the canary is drained)
        if interrupted:
            return Interrupted(f"interrupted ({exc.signame}) during {step.name}; {what}")  # type: ignore[attr-defined]
        if isinstance(exc, _BINARY_FAULTS) and what.startswith("canary rolled back") and self.artifact:
            try:
                self.fleet.blocked().block(self.artifact.sha256, f"{step.name}: {reason}", self.fleet.clock.now())
                self.report.event("release_blocked", sha256=self.artifact.sha256)
            except VezaError as e:
                log.error("release.block_failed", error=str(e))
        cls = CanaryRolledBack if isinstance(exc, VezaError) else VezaError
        return cls(f"{step.name} failed ({reason}); {what}")

    def _settle_canary(self, cause: str) -> str:
        """Put the canary back on a known binary, in rotation. Raises RollbackFailed."""
        node = self.fleet.canary
        try:
            live = node.sha256()
        except VezaError:
            live = None
        # Touched = has (or may have) anything but what it had before, or the artifact itself (a re-run).
        # Decided from live state, not from memory, so a push that failed before its rename counts as untouched.
        touched = live is None or live != self.shas_before.get(self.s.pool.canary) or (
            self.artifact is not None and live == self.artifact.sha256)
        if not touched:
            if node.name not in self.proc.drained:
                return "nothing was changed"
            where = self.proc.put_back(node)
            if "could not be re-enabled" in where:
                raise RollbackFailed(f"canary {where}", hint="veza-canary haproxy ready " + node.name)
            if where.endswith("back in rotation"):
                return f"canary {node.name} untouched and back in rotation (nothing deployed)"
            return f"canary {where} (nothing deployed)"
        self.restore_canary(cause)
        return f"canary rolled back to {self.rollback.describe() if self.rollback else '?'} and back in rotation"

    def restore_canary(self, cause: str | None = None) -> None:
        """ON_CANARY_FAILURE: the node procedure puts the last-known-good binary back. Raises RollbackFailed."""
        node = self.fleet.canary
        rb = self.rollback
        cause = cause or getattr(self, "_failure_cause", "?")
        self.report.event("rollback_start", node=node.name, cause=cause, to=rb.describe() if rb else "none")
        log.warning("rollback.start", node=node.name, cause=cause, to=rb.describe() if rb else "none")
        if rb is None or rb.binary is None:
            self.proc.leave_drained(node)
            raise RollbackFailed(f"ROLLBACK IMPOSSIBLE: no last-known-good binary; canary {node.name} left DRAINED",
                                 hint="push a known-good binary with: veza-canary rollback --nodes "
                                      f"{node.name} --to /path/to/veza-api")
        try:
            self.proc.roll(node, rb.binary, policy=self.proc.policy.for_restore(), cleanup=self.guard.cleanup)
        except (VezaError, WaitTimedOut, Exception) as exc:  # noqa: BLE001
            self.proc.leave_drained(node)
            raise RollbackFailed(
                f"ROLLBACK FAILED on canary {node.name}: {why(exc)}; the node is left DRAINED (out of rotation)",
                hint=f"inspect it (veza-canary status), then: veza-canary rollback --nodes {node.name} --to PATH",
            ) from exc
        self.report.event("rollback_done", node=node.name, sha256=rb.sha256)
        log.warning("rollback.done", node=node.name, sha256=(rb.sha256 or "")[:12])

    # -- the end ----------------------------------------------------------------------------
    def _resume_hint(self) -> str:
        return f"fix the cause, then re-run the same command (it reconciles from live state): {self.command_line}"

    def _finish(self, error: VezaError | None) -> None:
        rep = self.report
        if self.locked and error is not None:  # a run that succeeded renamed every temp file it pushed
            self._remove_temps()
        self.restore_traffic()
        rep.final_state = self.fleet_state()
        rep.ended_at = now_iso()
        if error is not None:
            rep.outcome = type(error).__name__
            rep.exit_code = int(error.exit_code)
            rep.message = redact_text(error.message)
            if error.resumable:
                rep.resume = self._resume_hint()
        # The outcome event, on-rollback and the history entry, while still holding the lock.
        self.ann.conclude(rep)
        self.lock.release()
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


# --- running a deploy from a command -------------------------------------------------------------


def execute(
    settings: Settings,
    *,
    fleet: Fleet | None = None,
    force: bool = False,
    confirm: Callable[[str], bool] | None = None,
    report_path: Path | None = None,
    command_line: str = "veza-canary deploy",
    stream=None,
    observer: Observer | None = None,
) -> int:
    """One deploy as a command runs it: private workdir, the run, reports written, the end state printed.

    Returns 0 or raises the run's VezaError (with ``.report``).
    """
    stream = stream or sys.stdout
    fleet = fleet or build_fleet(settings)
    report = Report(command="deploy")
    paths = report_paths(report, settings, report_path)
    ann = Announcer.from_settings(settings, store=fleet.store, command="deploy", repo_root=Path.cwd(),
                                  report_path=paths[0])
    for stale in remove_stale_workdirs():  # a SIGKILLed run cannot clean up after itself
        log.info("workdir.stale_removed", path=str(stale))
    workdir = private_workdir()
    error: VezaError | None = None
    try:
        Deploy(fleet, workdir=workdir, force=force, confirm=confirm, report=report,
               command_line=command_line, observer=observer, announcer=ann).run()
    except VezaError as exc:
        error = exc
        if report.exit_code is None:  # failed before the pipeline could record it (bad settings)
            report.outcome, report.exit_code, report.message = type(exc).__name__, int(exc.exit_code), exc.message
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        fleet.close()
        write_reports(report, paths)
        ann.post_deploy()  # sees the report on disk
        report.notifications = ann.close()
        for path in write_reports(report, paths):
            log.info("report.written", path=str(path))
    for line in summary_lines(report):
        stream.write(line + "\n")
    stream.flush()
    if error is not None:
        raise error
    return 0


# --- the dry run -------------------------------------------------------------------------------------


def validate_offline(settings: Settings, repo_root: Path, workdir: Path) -> tuple[Artifact, Artifact | None, object]:
    """Everything a real run would refuse that can be checked without touching the fleet.

    The artifact and ROLLBACK_BINARY (regular, non-empty, executable; hashed), and the migration gate.
    Raises the same errors, with the same exit codes, as the real run. Returns what the plan shows.
    """
    s = settings
    if s.artifact is None:
        raise ConfigError("ARTIFACT", "is not set (the binary to ship)")
    art = snapshot(s.artifact, "ARTIFACT", workdir)
    rb = None
    if s.rollback_binary is not None:
        rb = snapshot(s.rollback_binary, "ROLLBACK_BINARY", workdir)
        if rb.sha256 == art.sha256:
            raise PreflightError("ROLLBACK_BINARY has the same sha256 as ARTIFACT: a rollback would change nothing")
    from veza_canary.migrations import deploy_gate

    gate = deploy_gate(s, repo_root, config_path=s.config_file)
    if gate.blocking and not gate.bypassed:
        raise LintBlocked(f"migration gate: {gate.summary()}",
                          hint="split the migration (expand/contract), or FORCE_MIGRATE=1 after review")
    return art, rb, gate


def dry_run(settings: Settings, repo_root: Path | None = None) -> list[str]:
    """``deploy --dry-run``: validate what can be validated offline (same errors and codes as a real run), then
    the plan. Touches nothing: no fleet, no lock, no node."""
    workdir = private_workdir()
    try:
        art, rb, gate = validate_offline(settings, repo_root or Path.cwd(), workdir)
        return plan(settings, artifact=art, rollback=rb, gate=gate)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def plan(s: Settings, *, artifact: Artifact | None = None, rollback: Artifact | None = None,
         gate: object | None = None) -> list[str]:
    """The dry-run plan: what ships, where, every step with its own commands. Touches nothing."""
    sock = (f"socat stdio UNIX-CONNECT:{s.haproxy.local_socket}" if s.haproxy.local_socket
            else f"incus exec {s.haproxy.lbs[0]} -- socat stdio UNIX-CONNECT:{s.haproxy.socket}"
            + (f" (and the same on {', '.join(s.haproxy.lbs[1:])})" if len(s.haproxy.lbs) > 1 else ""))
    pool = s.haproxy.backend
    svc = s.service
    health = redact_text(svc.node_health_url)
    lb = redact_text(svc.lb_health_url)
    # INCUS_HOST never carries a password (settings refuse one): shown as given, user included.
    where = s.ssh.incus_host if s.ssh.incus_host and s.ssh.incus_host != "local" else "this machine (local incus)"
    if s.rollback_binary:
        rb_line = f"ROLLBACK_BINARY {s.rollback_binary}" + (
            f" ({rollback.size} bytes, sha256 {rollback.sha256})" if rollback else "")
    else:
        rb_line = (f"the build the canary runs when the deploy starts, copied to {svc.install_dir}/{LAST_GOOD_NAME} "
                   "and verified before the push (an earlier run's copy on a re-run)")

    def drain(n: str) -> list[str]:
        return [f"    {sock}  <<< 'set server {pool}/{n} state drain'   (then poll 'show stat' until 0 sessions, "
                f"<= {s.timeouts.drain:g}s, on timeout: {s.timeouts.drain_action})"]

    def install(n: str, keep: bool) -> list[str]:
        out = [f"    incus exec {n} -- sha256sum {svc.binary_path}   (identical -> no push)"]
        if keep:
            out.append(f"    incus exec {n} -- cp {svc.binary_path} -> {svc.install_dir}/{LAST_GOOD_NAME} "
                       "(verified by sha256, renamed into place)")
        out += [f"    incus -q file push --mode 0755 ARTIFACT {n}{svc.install_dir}/.veza-api.new-XXXX; verify sha256; "
                f"rename to {svc.binary_path}",
                f"    incus exec {n} -- {' '.join(svc.restart_argv)}   (after checking {n} is still drained)"]
        return out

    def health_(n: str) -> list[str]:
        return [f"    incus exec {n} -- curl {health}   (until 200, <= {s.timeouts.node_health:g}s)"]

    def ready(n: str) -> list[str]:
        return [f"    {sock}  <<< 'set server {pool}/{n} state ready'   (until UP, <= {s.timeouts.up:g}s)"]

    lb_line = [f"    GET {lb}   (expect 200)"]
    q = Queries.from_settings(s)
    c = s.pool.canary
    per_step: dict[str, list[str]] = {
        "preflight": [f"    {sock}  <<< 'show servers state {pool}' / 'show stat'   (every node known, UP)",
                      "    incus exec NODE -- sha256sum, systemctl show   (what each node runs)",
                      f"    GET {redact_text(s.prometheus.url)}/api/v1/query   (SLI green now)"],
        "migration-gate": [f"    lint {s.migrations.dir} (new since {s.migrations.since}, {s.migrations.dialect})"
                           + (f": {gate.summary()}" if gate is not None else "")],  # type: ignore[attr-defined]
        "lock": [f"    lock file on {s.haproxy.lbs[0]}:/var/lib/veza-canary/lock.json"],
        "confirm": ["    a yes/no question on a TTY (--yes skips)"],
        "drain-canary": drain(c),
        "install-canary": install(c, keep=not s.rollback_binary),
        "canary-health": health_(c),
        "ready-canary": ready(c),
        "lb-health": lb_line,
        "sli-watch": [f"    every {s.sli.probe_interval:g}s for {s.sli.window:g}s against "
                      f"{redact_text(s.prometheus.url)}:",
                      f"      p95   {q.p95}   (< {s.sli.p95_threshold_s:g})",
                      f"      5xx   {q.errors}",
                      f"      total {q.total}   (ratio < {s.sli.err_ratio_threshold:g})"],
        "peers": [],
    }
    for p in s.pool.peers:
        per_step["peers"] += [f"  peer {p}:", *drain(p), *install(p, keep=False), *health_(p), *ready(p), *lb_line]

    lines = ["Plan (dry run: nothing is changed):"]
    if artifact is not None:
        lines.append(f"  artifact:   {artifact.original} ({artifact.size} bytes, sha256 {artifact.sha256})")
    else:
        lines.append(f"  artifact:   {s.artifact}")
    lines += [f"  incus:      {where}",
              f"  fleet:      canary {c}; peers {', '.join(s.pool.peers) or '(none)'}; HAProxy backend {pool} "
              f"on {', '.join(s.haproxy.lbs)}",
              f"  rollback:   {rb_line}",
              f"  migrations: {s.migrations.dir}" + ("  (FORCE_MIGRATE=1: blocking findings bypassed)"
                                                     if s.migrations.force else "")]
    for i, step in enumerate(STEPS):
        lines.append(f"{i}. {step.name}: {step.summary}")
        lines.extend(per_step.get(step.name, []))
    lines.append(f"On a canary failure ({ON_CANARY_FAILURE.name}): {ON_CANARY_FAILURE.summary}; source: {rb_line}.")
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
