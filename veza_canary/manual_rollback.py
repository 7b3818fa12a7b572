"""The runbook's "Manual rollback (full)", one node at a time, safe on every path.

``ManualRollback.run`` does, in order:

1. **plan** (changes nothing): resolve the nodes (``all`` = CANARY_NODE then
   PEER_NODES), check each is a server of the HAProxy backend, and resolve the target
   binary: ``previous`` is each node's own ``INSTALL_DIR/veza-api.previous`` (all must
   exist), a PATH is a local binary snapshotted and hashed once. A node already on its
   target and in rotation is skipped, so a re-run after a failure picks up where it
   stopped, and a mixed fleet is fine.
2. **lock**: the fleet lock, like ``deploy``.
3. **confirm** (TTY only).
4. **each node in turn**: drain and wait for 0 sessions; restore atomically
   (``Node.restore_previous`` or ``Node.install``); restart; node health; ready; HAProxy
   UP; LB health; check the binary is the target.

Failure policy: a node that cannot be drained is put back as it was (its binary never
changed) and the run stops; a node whose restore, restart or checks fail is left
DRAINED (out of rotation, said loudly) and the run stops: exit 7 either way, with the
command to resume. Nodes after it are not touched (a target binary that does not start
must not take the whole fleet out of rotation). SIGINT/SIGTERM during a drain wait puts
that node back and stops; once a node's binary is being replaced, the node is finished
first, then the run stops (exit 130).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from veza_canary import __version__
from veza_canary.announce import Announcer
from veza_canary.artifact import Artifact, check_binary, snapshot
from veza_canary.errors import (
    Interrupted,
    PreflightError,
    RollbackFailed,
    VezaError,
)
from veza_canary.health import WaitTimedOut
from veza_canary.interrupts import DeployInterrupt, InterruptGuard
from veza_canary.lock import LockInfo
from veza_canary.log import get_logger, redact_text
from veza_canary.notify import RunFacts
from veza_canary.procedure import Binary, NodeProcedure, Policy, why
from veza_canary.report import Report, now_iso
from veza_canary.status import read_shas

if TYPE_CHECKING:
    from veza_canary.fleet import Fleet
    from veza_canary.liveview import Observer

log = get_logger(__name__)

PREVIOUS = "previous"


@dataclass(frozen=True, slots=True)
class Target:
    """What to roll back to: each node's ``veza-api.previous``, or one local binary."""

    kind: str  # previous | local
    artifact: Artifact | None = None

    def describe(self) -> str:
        if self.kind == "local" and self.artifact:
            return f"{self.artifact.original} ({self.artifact.sha256[:12]})"
        return "veza-api.previous on each node"

    @property
    def spec(self) -> str:
        return str(self.artifact.original) if self.kind == "local" and self.artifact else PREVIOUS


@dataclass(slots=True)
class NodePlan:
    name: str
    current_sha: str | None
    target_sha: str
    admin: str
    status: str
    action: str  # roll | skip
    note: str = ""

    def line(self) -> str:
        arrow = f"{(self.current_sha or 'missing')[:12]} -> {self.target_sha[:12]}"
        what = "skip (already on the target and in rotation)" if self.action == "skip" else \
            "drain, restore, restart, health, ready, LB check"
        return f"  {self.name:<20} {arrow}  [{self.status}/{self.admin}]  {what}" + \
            (f"  -- {self.note}" if self.note else "")


@dataclass(slots=True)
class Outcome:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: str | None = None
    current: str | None = None  # the node being rolled right now
    untouched: list[str] = field(default_factory=list)


class ManualRollback:
    def __init__(
        self,
        fleet: Fleet,
        nodes: list[str],
        to: str | Path = PREVIOUS,
        *,
        workdir: Path,
        report: Report | None = None,
        confirm: Callable[[str], bool] | None = None,
        observer: Observer | None = None,
        guard: InterruptGuard | None = None,
        command_line: str = "veza-canary rollback",
        say: Callable[[str], None] | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        self.fleet = fleet
        self.s = fleet.settings
        self.nodes = nodes
        self.to = to
        self.workdir = workdir
        self.report = report or Report(command="rollback")
        self._confirm = confirm
        self.observer = observer
        self.guard = guard or InterruptGuard()
        self.command_line = command_line
        self.say = say or (lambda _line: None)
        self.target: Target | None = None
        self.plans: list[NodePlan] = []
        self.warnings: list[str] = []
        self.outcome = Outcome()
        self.lock = fleet.lock()
        #: Webhooks, hooks and the history entry (quiet when none is given).
        self.ann = announcer or Announcer(RunFacts(command="rollback", nodes=tuple(nodes)))
        policy = replace(Policy.from_settings(self.s), finish_on_interrupt=True)
        self.proc = NodeProcedure(fleet, policy, report=self.report, lb_url=self.s.service.lb_health_url,
                                  on_poll=observer.on_poll if observer else None)

    # -- plan (reads only) ---------------------------------------------------------------------
    def plan(self) -> list[NodePlan]:
        """Resolve nodes and target; decide per node. Changes nothing; raises PreflightError/ConfigError."""
        f, s = self.fleet, self.s
        if str(self.to) == PREVIOUS:
            self.target = Target(PREVIOUS)
        else:
            check_binary(Path(self.to), "--to")  # errors name the flag
            self.target = Target("local", snapshot(Path(self.to), "rollback-target", self.workdir))
        states, stats = f.haproxy.states(), f.haproxy.stats()
        unknown = [n for n in self.nodes if n not in states or n not in stats]
        if unknown:
            raise PreflightError(f"unknown node(s) {', '.join(unknown)}: not servers of HAProxy backend "
                                 f"{s.haproxy.backend!r} (it has: {', '.join(sorted(states)) or 'none'})")
        plans, missing = [], []
        for name in self.nodes:
            current, previous = read_shas(f.nodes[name])
            if self.target.kind == PREVIOUS:
                if previous is None:
                    missing.append(name)
                    continue
                want = previous
            else:
                assert self.target.artifact is not None
                want = self.target.artifact.sha256
            st, stat = states[name], stats[name]
            in_rotation = st.admin == "ready" and stat.is_up
            action = "skip" if current == want and in_rotation else "roll"
            note = "already on the target; restart and re-enable" if current == want and not in_rotation else ""
            plans.append(NodePlan(name, current, want, st.admin, stat.status, action, note))
        if missing:
            raise PreflightError(
                f"{', '.join(missing)}: {s.service.previous_path} does not exist; nothing was changed",
                hint="roll back to a local binary instead: veza-canary rollback --to /path/to/veza-api")
        targets = {p.target_sha for p in plans}
        if len(targets) > 1:
            self.warnings.append("the nodes' veza-api.previous differ: the fleet will end MIXED ("
                                 + ", ".join(f"{p.name}={p.target_sha[:12]}" for p in plans) + ")")
        rolling = {p.name for p in plans if p.action == "roll"}
        for p in plans:
            if p.action != "roll":
                continue
            others = [n for n in stats if n != p.name and states.get(n) is not None
                      and states[n].admin == "ready" and stats[n].is_up]
            if not others:
                self.warnings.append(f"while {p.name} is drained no other server is in rotation: "
                                     "the service is down for that node's rollback")
        if not rolling:
            log.info("rollback.nothing_to_do", nodes=self.nodes)
        self.plans = plans
        return plans

    def plan_lines(self) -> list[str]:
        assert self.target is not None
        lines = [f"Rollback to {self.target.describe()}, one node at a time:"]
        lines += [p.line() for p in self.plans]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return lines

    # -- run ------------------------------------------------------------------------------------
    def run(self) -> Report:
        """Plan, lock, confirm, roll each node. Returns the report; raises VezaError on failure."""
        rep = self.report
        rep.tool_version = __version__
        rep.settings = self.s.public_dict()
        error: VezaError | None = None
        with self.guard.armed():
            try:
                try:
                    with rep.step("plan"):
                        self.plan()
                    assert self.target is not None
                    rep.rollback_source = {"kind": self.target.kind, "describe": self.target.describe(),
                                           "per_node": {p.name: p.target_sha for p in self.plans}}
                    if self.target.artifact:
                        rep.artifact = self.target.artifact.to_dict()
                    for w in self.warnings:
                        log.warning("rollback.plan_warning", warning=w)
                        rep.event("warning", message=w)
                    for line in self.plan_lines():
                        self.say(line)
                    with rep.step("lock"):
                        sha = self.target.artifact.sha256 if self.target.artifact else PREVIOUS
                        self.lock.acquire(LockInfo.mine(sha, redact_text(self.command_line)), wait=self.s.safety.lock_wait)
                    with rep.step("confirm"):
                        if self._confirm is not None and any(p.action == "roll" for p in self.plans):
                            names = ", ".join(p.name for p in self.plans if p.action == "roll")
                            if not self._confirm(f"Roll back {names} to {self.target.describe()}?"):
                                raise PreflightError("not confirmed; nothing was changed")
                    if any(p.action == "roll" for p in self.plans):
                        self.ann.started(f"manual rollback of {', '.join(self.nodes)} to {self.target.describe()}")
                except DeployInterrupt as exc:
                    raise Interrupted(f"interrupted ({exc.signame}) before any change; nothing was changed") from None
                for i, p in enumerate(self.plans):
                    self.outcome.untouched = [q.name for q in self.plans[i + 1:] if q.action == "roll"]
                    self._node(p)
                    self.outcome.untouched = [q.name for q in self.plans[i + 1:] if q.action == "roll"]
                    if self.guard.received:
                        raise Interrupted(
                            f"interrupted ({self.guard.received[0]}) after finishing {p.name}; "
                            f"not rolled: {', '.join(self.outcome.untouched) or 'none'}", hint=self._resume_hint())
                rep.outcome, rep.exit_code = "success", 0
                rep.message = (f"rolled back {len(self.outcome.done)} node(s) to {self.target.describe()}"
                               + (f", {len(self.outcome.skipped)} already there" if self.outcome.skipped else ""))
            except VezaError as exc:
                error = exc
            except DeployInterrupt as exc:  # between two nodes: nothing is half-done
                error = Interrupted(f"interrupted ({exc.signame}) between nodes; rolled back: "
                                    f"{', '.join(self.outcome.done) or 'none'}; not rolled: "
                                    f"{', '.join(self._remaining()) or 'none'}", hint=self._resume_hint())
            finally:
                with self.guard.cleanup():
                    self._finish(error)
                    self.ann.conclude(rep)  # the outcome event and the history entry, still under the lock
                    self.lock.release()
        if error is not None:
            error.report = rep  # type: ignore[attr-defined]
            raise error
        return rep

    def _binary(self, p: NodePlan) -> Binary:
        assert self.target is not None
        if self.target.kind == PREVIOUS:
            return Binary(p.target_sha, "veza-api.previous", remote=self.s.service.previous_path)
        assert self.target.artifact is not None
        return Binary(p.target_sha, f"{self.target.artifact.original}", local=self.target.artifact.path)

    def _node(self, p: NodePlan) -> None:
        node = self.fleet.nodes[p.name]
        if p.action == "skip":
            with self.report.step("rollback", node=p.name) as rec:
                rec.outcome, rec.detail = "skipped", "already on the target and in rotation"
            self.outcome.skipped.append(p.name)
            return
        self.outcome.current = p.name
        stages: list[str] = []
        with self.report.step("rollback", node=p.name) as rec:
            log.warning("rollback.node.start", node=p.name, current=(p.current_sha or "missing")[:12],
                        target=p.target_sha[:12])
            self.report.event("rollback_start", node=p.name, current=p.current_sha, target=p.target_sha)
            # The drain is interruptible (the binary has not changed: on any problem the node goes back); once
            # the binary changes, the node is finished whatever arrives, and a signal stops the run after it.
            try:
                self.proc.roll(node, self._binary(p), cleanup=self.guard.cleanup, on_stage=stages.append)
            except DeployInterrupt as exc:
                with self.guard.cleanup():
                    where = self.proc.put_back(node)
                rec.detail = where
                raise Interrupted(f"interrupted ({exc.signame}) while draining {p.name}; {where}",
                                  hint=self._resume_hint()) from None
            except (VezaError, WaitTimedOut, Exception) as exc:  # noqa: BLE001
                self.outcome.failed = p.name
                if "drained" not in stages:
                    with self.guard.cleanup():
                        where = self.proc.put_back(node)
                    raise RollbackFailed(f"rollback stopped: {p.name} could not be drained ({why(exc)}); {where}",
                                         hint=self._resume_hint()) from exc
                self.proc.leave_drained(node)
                msg = (f"ROLLBACK FAILED on {p.name}: {why(exc)}; {p.name} is left DRAINED (out of rotation). "
                       f"Not rolled: {', '.join(self.outcome.untouched) or 'none'}")
                log.error("rollback.node.failed", node=p.name, error=why(exc))
                raise RollbackFailed(msg, hint=f"inspect it (veza-canary status; veza-canary health "
                                               f"{p.name}), then: {self._resume_cmd()}") from exc
            rec.detail = f"{(p.current_sha or 'missing')[:12]} -> {p.target_sha[:12]}"
        self.outcome.done.append(p.name)
        self.outcome.current = None
        self.report.event("rollback_done", node=p.name, sha256=p.target_sha)
        log.warning("rollback.node.done", node=p.name, sha256=p.target_sha[:12])

    # -- the end --------------------------------------------------------------------------------
    def _remaining(self) -> list[str]:
        """Nodes still to roll: the one in progress (or failed), then those after it."""
        o = self.outcome
        first = [o.current] if o.current else []
        return first + [n for n in o.untouched if n not in first]

    def _resume_cmd(self) -> str:
        spec = self.target.spec if self.target else str(self.to)
        nodes = ",".join(self._remaining()) or ",".join(self.nodes) or "all"
        return shlex.join(["veza-canary", "rollback", "--nodes", nodes, "--to", spec])

    def _resume_hint(self) -> str:
        return f"fix the cause, then: {self._resume_cmd()}"

    def _finish(self, error: VezaError | None) -> None:
        rep = self.report
        try:
            rep.final_state = self.fleet_state()
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never mask the outcome
            rep.final_state = {"nodes": {}, "error": why(exc)}
        rep.ended_at = now_iso()
        rep.events.append({"at": now_iso(), "kind": "outcome", "done": self.outcome.done,
                           "skipped": self.outcome.skipped, "failed": self.outcome.failed,
                           "not_rolled": self._remaining() if error is not None else []})
        if error is not None:
            rep.outcome = type(error).__name__
            rep.exit_code = int(error.exit_code)
            rep.message = redact_text(error.message)
            if error.resumable or self.outcome.done:
                rep.resume = self._resume_cmd()

    def fleet_state(self) -> dict:
        targets = {p.name: p.target_sha for p in self.plans}

        def classify(node: str, sha: str | None) -> str:
            if node not in targets:
                return "not requested"
            return "target" if sha == targets[node] else "other"

        return self.fleet.snapshot(dict.fromkeys([*self.nodes, *self.s.pool.nodes]), classify)


