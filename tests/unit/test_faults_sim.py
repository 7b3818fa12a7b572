"""Faults on the simulated fleet: a signal at every I/O boundary of every step, and SIGKILL-then-re-run.

A good deploy (and a deploy of a build whose health is 500) is traced once: every
I/O event the pipeline causes (each command on a node, each HAProxy runtime-API
command, each Prometheus and LB request, each state-dir command, before and after
it runs) plus one event where each step starts. Then, for every event of the trace:

* SIGINT / SIGTERM: the real ``InterruptGuard`` handler is called at that event,
  exactly as if the signal arrived there (it raises ``DeployInterrupt``, or refuses
  while the fleet is being brought to a safe state);
* SIGINT, then again at every later event (an operator hammering Ctrl-C);
* SIGKILL: the fleet's state is snapshot at that event and the run abandoned (no
  cleanup runs on the snapshot), then the same deploy is run again on the snapshot.

After each, the invariants of docs/reliability.md are checked from the simulated
fleet's state (not from the report): the documented exit code, every node in
rotation running the binary on its disk (or the documented exception: a peer left
drained, said so in the message), no temp file in any install dir, no lock left,
and a report that says what happened. Then the same command is run once more and
must reconcile: exit 0 on every node (or 5/9 for the bad build, fleet on the old binary).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fakes import Behaviour, SimFleet, sha, sim_fleet
from tests.settings_helper import make_settings
from veza_canary.errors import ExitCode, VezaError
from veza_canary.log import configure
from veza_canary.pipeline import STEPS, Deploy, InterruptGuard
from veza_canary.report import Report

NODES = ["backend-api-2", "backend-api-1", "backend-api-3"]
CANARY, PEERS = NODES[0], NODES[1:]
OLD, NEW = b"#!/bin/sh\nveza-api 1.0.0\n", b"#!/bin/sh\nveza-api 1.1.0\n"
STATE = "/var/lib/veza-canary"
LOCK = f"{STATE}/lock.json"
BINARY = "/opt/veza/backend-api/veza-api"
DEAD_PID = 2**22 + 4321  # above the default pid_max: never a live process
PEER_SUBSTEPS = ("drain", "install", "restart", "health", "ready", "lb")
CHECK_STEPS = {s.name for s in STEPS if s.phase == "check"}
CANARY_STEPS = {s.name for s in STEPS if s.phase == "canary"}


class Killed(BaseException):
    """The simulated SIGKILL: nothing after this point runs on the snapshot."""


class TracingReport(Report):
    """A Report that announces each step to the simulator before it starts (a signal can land there)."""

    sim: SimFleet | None = None
    marks: list[str] | None = None

    @contextmanager
    def step(self, name: str, node: str | None = None) -> Iterator:
        if self.sim is not None:
            self.sim.io(f"step:{name}" + (f":{node}" if name == "peer" else ""))
        with super().step(name, node) as rec:
            yield rec
        if self.marks is not None and name == "peers":
            self.marks.append("finish")


@dataclass
class Run:
    sim: SimFleet
    report: TracingReport
    error: BaseException | None
    labels: list[tuple[str, str]] = field(default_factory=list)  # (event, label)

    @property
    def code(self) -> int:
        if self.error is None:
            return 0
        return int(self.error.exit_code) if isinstance(self.error, VezaError) else -1


def _settings(artifact: Path, tmp_path: Path, **knobs):
    return make_settings(
        artifact=artifact, canary_node=CANARY, peer_nodes=tuple(PEERS), sli_window=40.0, sli_probe_interval=20.0,
        allow_short_window=True, state_dir=tmp_path / "state", node_health_timeout=3.0, up_timeout=3.0,
        drain_timeout=3.0, poll_interval=1.0, **knobs,
    )


def new_sim(kind: str) -> SimFleet:
    sim = SimFleet(NODES, binary=OLD, previous=OLD)
    if kind == "bad":
        sim.behaviours[sha(NEW)] = Behaviour(health_status=500)
    return sim


def deploy(sim: SimFleet, artifact: Path, tmp_path: Path, *,
           observer: Callable[[str, Deploy], None] | None = None, argv: bool = False, **knobs) -> Run:
    """One deploy on ``sim``: node-level fakes, or (``argv``) the real Node over the argv-level fake."""
    fleet, _ = sim_fleet(_settings(artifact, tmp_path, **knobs), sim, argv=argv)
    report = TracingReport()
    report.sim, report.marks = sim, []
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    d = Deploy(fleet, workdir=work, report=report, repo_root=tmp_path, guard=InterruptGuard(),
               confirm=lambda _q: (sim.io("confirm"), True)[1])
    labels: list[tuple[str, str]] = []
    tracker = _Labeller(labels, report)
    sim.observers.append(tracker)
    if observer is not None:
        sim.observers.append(lambda e: observer(e, d))
    try:
        d.run()
        err: BaseException | None = None
    except (VezaError, Killed) as exc:
        err = exc
    finally:
        sim.observers.clear()
    return Run(sim, report, err, labels)


class _Labeller:
    """Names the step (and the peer sub-step) each event belongs to."""

    def __init__(self, out: list[tuple[str, str]], report: TracingReport) -> None:
        self.out, self.report = out, report
        self.step = "?"
        self.peer: str | None = None
        self.sub = "drain"

    def __call__(self, e: str) -> None:
        if self.report.marks:
            self.step = "finish"
        elif e.startswith("step:"):
            name = e.split(":")[1]
            if name == "peer":
                self.sub = "drain"
            else:
                self.step = name
        if self.step == "peers" and not e.startswith("step:"):
            p = self.peer
            drained = next((n for n in PEERS if e == f"haproxy:set server api_pool/{n} state drain"), None)
            if drained and drained != p:  # a peer's roll starts with its drain
                self.peer, self.sub = drained, "drain"
            elif p and self.sub == "drain" and e in (f"node:{p}:sha256sum", f"push:{p}"):
                self.sub = "install"
            elif p and e == f"node:{p}:systemctl":
                self.sub = "restart"
            elif p and e == f"node:{p}:curl":
                self.sub = "health"
            elif p and e == f"haproxy:set server api_pool/{p} state ready":
                self.sub = "ready"
            elif p and e == "lb" and self.sub == "ready":
                self.sub = "lb"
        label = f"peers/{self.sub}" if self.step == "peers" else self.step
        self.out.append((e, label))


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stderr():
    """CLI tests bind structlog to CliRunner's stream, closed once they end: log to ours instead."""
    configure("json", stream=sys.stderr)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    p = tmp_path / "veza-api-new"
    p.write_bytes(NEW)
    p.chmod(0o755)
    return p


_TRACES: dict[str, list[tuple[str, str]]] = {}


def trace(kind: str, artifact: Path, tmp_path: Path, *, argv: bool = False) -> list[tuple[str, str]]:
    key = f"{kind}:{argv}"
    if key not in _TRACES:
        run = deploy(new_sim(kind), artifact, tmp_path / f"trace-{key}", argv=argv)
        assert run.code == (0 if kind == "good" else 5), run.error
        _TRACES[key] = run.labels
    return _TRACES[key]


# --- invariants ------------------------------------------------------------------------


def problems(run: Run, *, allowed_codes: set[int]) -> list[str]:
    """Everything that is wrong with the fleet and the report after a run."""
    sim, rep, out = run.sim, run.report, []
    if run.code not in allowed_codes:
        out.append(f"exit {run.code} not in {sorted(allowed_codes)}: {run.error!r}")
    if rep.exit_code != run.code:
        out.append(f"report exit_code {rep.exit_code} != {run.code}")
    if run.code and not rep.message:
        out.append("report has no message")
    if set(rep.final_state.get("nodes", {})) != set(NODES):
        out.append(f"report final_state lists {sorted(rep.final_state.get('nodes', {}))}")
    if LOCK in sim.state_files:
        holder = json.loads(sim.state_files[LOCK])
        # Documented: a refused run (3, 9) does not touch a lock; one of a dead process on this host is
        # taken over by the next deploy from this host (or released with veza-canary unlock --force).
        if not (holder.get("pid") == DEAD_PID and run.code in (3, 9)):
            out.append(f"fleet lock left behind (pid {holder.get('pid')})")
    staged = [p for p in sim.state_files if "/.staged-" in p]
    if staged:
        out.append(f"staged state files left behind: {staged}")
    for n in NODES:
        temps = sim.temp_files(n)
        if temps:
            out.append(f"{n}: temp files left in the install dir: {temps}")
        node = sim.nodes[n]
        disk = sha(node.files.get(BINARY, b""))
        drained = sim.admin[n] != 0
        if drained:
            documented = (n in PEERS and run.code in (int(ExitCode.INTERRUPTED), int(ExitCode.PEER_FAILED))
                          and "DRAINED" in rep.message and n in rep.message)
            if not documented:
                out.append(f"{n}: left out of rotation (admin {sim.admin[n]:#x}) without saying so: {rep.message!r}")
        elif node.running_sha != disk:
            out.append(f"{n}: in rotation but runs {node.running_sha[:8] if node.running_sha else None}"
                       f" while its disk has {disk[:8]}")
    if run.code == int(ExitCode.INTERRUPTED) and "SIG" not in rep.message:
        out.append(f"an interrupted run's report does not name the signal: {rep.message!r}")
    return out


def running(sim: SimFleet) -> dict[str, bytes]:
    by_sha = {sha(OLD): OLD, sha(NEW): NEW}
    return {n: by_sha.get(sim.nodes[n].running_sha or "", b"?") for n in NODES}


def check_rerun(sim: SimFleet, kind: str, artifact: Path, tmp_path: Path) -> list[str]:
    """Run the same deploy again (a new process: a lock it finds is from a dead PID); it must reconcile."""
    if LOCK in sim.state_files:
        data = json.loads(sim.state_files[LOCK])
        data["pid"] = DEAD_PID
        sim.state_files[LOCK] = json.dumps(data).encode()
    for p in [p for p in sim.state_files if "/.staged-" in p]:
        del sim.state_files[p]  # a SIGKILL between staging and linking leaves one; harmless, not reconciled
    run = deploy(sim, artifact, tmp_path)
    if kind == "good":
        out = problems(run, allowed_codes={0})
        if running(sim) != dict.fromkeys(NODES, NEW):
            out.append(f"re-run did not finish the deploy: {running(sim)}")
    else:
        out = problems(run, allowed_codes={int(ExitCode.ROLLED_BACK), int(ExitCode.RELEASE_BLOCKED)})
        if running(sim) != dict.fromkeys(NODES, OLD):
            out.append(f"re-run did not leave the fleet on the old binary: {running(sim)}")
    if any(a != 0 for a in sim.admin.values()):
        out.append(f"re-run left a node out of rotation: {sim.admin}")
    return [f"re-run: {p}" for p in out]


def expected_codes(kind: str, label: str, how: str) -> set[int]:
    """The documented exit codes for a signal that lands in ``label`` (SIGINT/SIGTERM runs)."""
    intr, rb, peer = int(ExitCode.INTERRUPTED), int(ExitCode.ROLLED_BACK), int(ExitCode.PEER_FAILED)
    if label == "finish":
        return {0} if kind == "good" else {rb}  # refused: the fleet is already being reported
    if kind == "bad" and label not in CHECK_STEPS:
        return {intr, rb}  # before the health failure: 130; during the rollback (refused): 5
    return {intr} if how != "hammer" or label in CHECK_STEPS or label in CANARY_STEPS else {intr, peer}


def _indices(kind: str, label: str, artifact: Path, tmp_path: Path) -> list[int]:
    t = trace(kind, artifact, tmp_path)
    idx = [i for i, (_e, lab) in enumerate(t) if lab == label]
    assert idx, f"no event of the trace falls in {label!r}: {sorted({lab for _, lab in t})}"
    return idx


def _signal_at(index: int, how: str, signum: int) -> Callable[[str, Deploy], None]:
    seen = [0]

    def observer(_e: str, d: Deploy) -> None:
        seen[0] += 1
        if seen[0] - 1 == index or (how == "hammer" and seen[0] - 1 > index):
            d.guard._handler(signum, None)

    return observer


def _kill_at(index: int, sim: SimFleet, box: list[SimFleet]) -> Callable[[str, Deploy], None]:
    seen = [0]

    def observer(_e: str, _d: Deploy) -> None:
        seen[0] += 1
        if seen[0] - 1 == index and not box:
            box.append(sim.snapshot())
            raise Killed()

    return observer


LABELS = [s.name for s in STEPS if s.name != "peers"] + [f"peers/{s}" for s in PEER_SUBSTEPS] + ["finish"]
#: A build whose health is 500 fails at canary-health: it never reaches the later steps.
BAD_LABELS = [lab for lab in LABELS if lab in CHECK_STEPS or lab in ("drain-canary", "install-canary", "canary-health")]
KIND_LABELS = [("good", lab) for lab in LABELS] + [("bad", lab) for lab in BAD_LABELS]


@pytest.mark.parametrize("kind,label", KIND_LABELS)
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "hammer"])
def test_a_signal_at_every_event_of_every_step_ends_consistent(kind, label, how, artifact, tmp_path, capsys):
    """SIGINT/SIGTERM (or Ctrl-C hammered) anywhere: documented code, fleet consistent, re-run reconciles."""
    signum = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
    failures = []
    for i in _indices(kind, label, artifact, tmp_path):
        event = trace(kind, artifact, tmp_path)[i][0]
        run = deploy(new_sim(kind), artifact, tmp_path / f"{i}", observer=_signal_at(i, how, signum))
        found = problems(run, allowed_codes=expected_codes(kind, label, how))
        if label in CHECK_STEPS and run.code == 130:
            if "nothing was changed" not in run.report.message:
                found.append(f"check-phase interrupt does not say nothing changed: {run.report.message!r}")
            if any(c[1].startswith("set server") for c in run.sim.commands if c[0] == "haproxy"):
                found.append("check-phase interrupt changed HAProxy state")
        if label in CANARY_STEPS and running(run.sim)[CANARY] != OLD:
            found.append(f"canary not back on the old binary: {running(run.sim)}")
        found += check_rerun(run.sim, kind, artifact, tmp_path / f"{i}r")
        failures += [f"#{i} {event} [{label}]: {p}" for p in found]
    capsys.readouterr()
    assert not failures, "\n".join(failures[:25])


@pytest.mark.parametrize("kind,label", KIND_LABELS)
def test_sigkill_at_every_event_then_a_rerun_reconciles_and_finishes(kind, label, artifact, tmp_path):
    """SIGKILL anywhere (nothing cleans up), then the same command again: it finishes from live state."""
    failures = []
    for i in _indices(kind, label, artifact, tmp_path):
        event = trace(kind, artifact, tmp_path)[i][0]
        box: list[SimFleet] = []
        sim = new_sim(kind)
        run = deploy(sim, artifact, tmp_path / f"{i}", observer=_kill_at(i, sim, box))
        assert isinstance(run.error, Killed) and box, f"#{i}: the kill never happened ({run.error!r})"
        found = check_rerun(box[0], kind, artifact, tmp_path / f"{i}r")
        failures += [f"#{i} {event} [{label}]: {p}" for p in found]
    assert not failures, "\n".join(failures[:25])


def test_the_trace_covers_every_step_and_peer_substep(artifact, tmp_path):
    labels = {lab for _e, lab in trace("good", artifact, tmp_path)}
    missing = set(LABELS) - labels
    assert not missing, f"steps with no event to interrupt: {missing}"


def test_lost_stdout_at_any_command_never_changes_the_verdict(artifact, tmp_path):
    """``incus exec`` sometimes loses a command's stdout (exit 0, nothing printed): no wrong outcome from it."""
    failures = []
    for i, (event, label) in enumerate(trace("good", artifact, tmp_path, argv=True)):
        if event.startswith(("done:", "step:", "prom", "lb", "confirm", "state:push", "push:")):
            continue

        def lose(e: str, _d: Deploy, i: int = i) -> None:
            if lose.seen == i:  # type: ignore[attr-defined]
                sim.lose_stdout = 1
            lose.seen += 1  # type: ignore[attr-defined]

        lose.seen = 0  # type: ignore[attr-defined]
        sim = new_sim("good")
        run = deploy(sim, artifact, tmp_path / f"{i}", observer=lose, argv=True)
        found = problems(run, allowed_codes={0})
        if running(sim) != dict.fromkeys(NODES, NEW):
            found.append(f"not deployed everywhere: {running(sim)}")
        failures += [f"#{i} {event} [{label}]: {p}" for p in found]
    assert not failures, "\n".join(failures[:25])


@pytest.mark.parametrize("fault", ["down", "garbage", "http-error", "wrong-shape", "multi-series"])
def test_prometheus_failing_during_the_watch_rolls_back_without_blocking_the_release(fault, artifact, tmp_path):
    """Blind is not red: the canary is rolled back (exit 5), the build is not blocked, a re-run ships it."""
    sim = new_sim("good")

    def break_prom(e: str, _d: Deploy) -> None:
        if e == "step:sli-watch":
            if fault == "down":
                sim.prom_down = True
            else:
                sim.prom_fault = fault

    run = deploy(sim, artifact, tmp_path / "a", observer=break_prom)
    assert not problems(run, allowed_codes={int(ExitCode.ROLLED_BACK)}), problems(run, allowed_codes={5})
    assert running(sim) == dict.fromkeys(NODES, OLD)
    assert "Prometheus" in run.report.message and "rolled back" in run.report.message
    assert not [p for p in sim.state_files if "/blocked/" in p], "a Prometheus outage blocked a good build"
    verdicts = [s["verdict"] for s in run.report.sli_samples]
    assert "pass" not in verdicts[-4:] and verdicts[-1] == "error"
    sim.prom_down, sim.prom_fault = False, None
    again = deploy(sim, artifact, tmp_path / "b")
    assert again.code == 0 and running(sim) == dict.fromkeys(NODES, NEW)


@pytest.mark.parametrize("fault", ["down", "garbage", "http-error", "wrong-shape", "multi-series"])
def test_prometheus_failing_before_the_deploy_is_a_preflight_refusal(fault, artifact, tmp_path):
    sim = new_sim("good")
    if fault == "down":
        sim.prom_down = True
    else:
        sim.prom_fault = fault
    run = deploy(sim, artifact, tmp_path)
    assert run.code == int(ExitCode.PREFLIGHT) and "Prometheus" in run.report.message
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]
    assert not problems(run, allowed_codes={3})


def _haproxy_restart(sim: SimFleet) -> None:
    """HAProxy restarted: every runtime change (drain, maint) is gone, every connection cut."""
    for n in NODES:
        sim.admin[n] = 0
        sim.sessions[n] = 0
    sim.sticky_sessions.clear()


def test_haproxy_restarting_at_any_event_never_leaves_a_node_inconsistent(artifact, tmp_path):
    """Runtime state lost mid-deploy (drain flags gone): the run notices, ends consistent, says what happened."""
    failures = []
    for i, (event, label) in enumerate(trace("good", artifact, tmp_path)):
        if not event.startswith("haproxy:") or label == "finish":
            continue
        sim = new_sim("good")
        restarted_while_out: list[str] = []

        def restart_at(e: str, _d: Deploy, i: int = i, sim: SimFleet = sim,
                       out: list[str] = restarted_while_out) -> None:
            restart_at.seen += 1  # type: ignore[attr-defined]
            if restart_at.seen - 1 == i:  # type: ignore[attr-defined]
                out.extend(n for n in NODES if sim.admin[n])
                _haproxy_restart(sim)

        restart_at.seen = 0  # type: ignore[attr-defined]
        sim.observers.append(lambda e, sim=sim, i=i: _no_restart_in_rotation(e, sim, failures, i))
        run = deploy(sim, artifact, tmp_path / f"{i}", observer=restart_at)
        found = problems(run, allowed_codes={0})
        if running(sim) != dict.fromkeys(NODES, NEW):
            found.append(f"not deployed everywhere: {running(sim)}")
        failures += [f"#{i} {event} [{label}]: {p}" for p in found]
    assert not failures, "\n".join(failures[:25])


def _no_restart_in_rotation(e: str, sim: SimFleet, failures: list[str], i: int) -> None:
    """A service restart must only ever happen on a node HAProxy has out of rotation."""
    parts = e.split(":")
    if (parts[:1] == ["done"] and parts[1] == "node" and sim.commands[-1][1].startswith("systemctl restart")
            and sim.admin[parts[2]] == 0):
        parts = parts[1:]
        failures.append(f"#{i}: {parts[1]} restarted while in rotation (HAProxy lost its drain flag)")


# --- one fault, one run: the documented outcome of each --------------------------------------------


def _at(event: str, action: Callable[[SimFleet], None], sim: SimFleet) -> Callable[[str, Deploy], None]:
    def observer(e: str, _d: Deploy) -> None:
        if e == event:
            action(sim)

    return observer


@pytest.mark.parametrize("node", [CANARY, PEERS[0]])
def test_disk_full_during_the_push_leaves_no_partial_file_and_the_node_in_rotation(node, artifact, tmp_path):
    sim = new_sim("good")
    sim.partial_push_on.add(node)
    run = deploy(sim, artifact, tmp_path, argv=True)  # node.py's own cleanup of the transport's partial file
    code = int(ExitCode.ROLLED_BACK) if node == CANARY else int(ExitCode.PEER_FAILED)
    assert not problems(run, allowed_codes={code}), problems(run, allowed_codes={code})
    assert "no space left on device" in run.report.message
    assert running(sim)[node] == OLD and sim.admin[node] == 0
    assert not [p for p in sim.state_files if "/blocked/" in p], "a full disk is not a bad build"


@pytest.mark.parametrize("node", [CANARY, PEERS[0]])
def test_corrupted_push_is_caught_before_the_rename(node, artifact, tmp_path):
    sim = new_sim("good")
    run = deploy(sim, artifact, tmp_path, observer=_at(f"push:{node}", lambda s: setattr(s, "corrupt_next_push", True),
                                                     sim), argv=True)  # node.py verifies the sha256 on the node
    code = int(ExitCode.ROLLED_BACK) if node == CANARY else int(ExitCode.PEER_FAILED)
    assert not problems(run, allowed_codes={code})
    assert "corrupted" in run.report.message
    assert sim.nodes[node].files[BINARY] == OLD and running(sim)[node] == OLD and sim.admin[node] == 0


@pytest.mark.parametrize("action", ["fail", "shutdown-sessions"])
@pytest.mark.parametrize("node", [CANARY, PEERS[0]])
def test_a_drain_that_never_completes_obeys_drain_timeout_action(action, node, artifact, tmp_path):
    sim = new_sim("good")
    sim.sticky_sessions[node] = 2  # a long-lived connection that never ends by itself
    fleet, _ = sim_fleet(_settings(artifact, tmp_path), sim)

    settings = _settings(artifact, tmp_path).replace(drain_timeout_action=action)
    fleet.settings = settings
    report = TracingReport()
    work = tmp_path / "work"
    work.mkdir()
    err = None
    try:
        Deploy(fleet, workdir=work, report=report, repo_root=tmp_path).run()
    except VezaError as exc:
        err = exc
    run = Run(sim, report, err)
    if action == "shutdown-sessions":
        assert not problems(run, allowed_codes={0})
        assert ("haproxy", f"shutdown sessions server api_pool/{node}") in sim.commands
        assert running(sim) == dict.fromkeys(NODES, NEW)
    else:
        code = int(ExitCode.ROLLED_BACK) if node == CANARY else int(ExitCode.PEER_FAILED)
        assert not problems(run, allowed_codes={code})
        assert "drain" in run.report.message and running(sim)[node] == OLD and sim.admin[node] == 0
        assert not [c for c in sim.commands if c[1].startswith("shutdown sessions")]


def test_canary_container_stopped_mid_push_is_rollback_failed_and_left_drained(artifact, tmp_path):
    """Exit 7, the documented exception: the canary cannot be reached, so it stays out of rotation."""
    sim = new_sim("good")
    run = deploy(sim, artifact, tmp_path, observer=_at(f"push:{CANARY}",
                                                     lambda s: setattr(s.nodes[CANARY], "stopped", True), sim))
    assert run.code == int(ExitCode.ROLLBACK_FAILED), run.error
    assert sim.admin[CANARY] != 0 and "DRAINED" in run.report.message
    assert all(sim.admin[p] == 0 and running(sim)[p] == OLD for p in PEERS)
    assert LOCK not in sim.state_files
    assert run.report.final_state["nodes"][CANARY]["binary"] == "unknown"


def test_rollback_binary_broken_too_is_rollback_failed_and_left_drained(artifact, tmp_path):
    broken = tmp_path / "veza-api-0.9.0-broken"
    broken.write_bytes(b"#!/bin/sh\nveza-api 0.9.0 (broken)\n")
    broken.chmod(0o755)
    sim = SimFleet(NODES, binary=OLD, previous=OLD)
    sim.behaviours[sha(NEW)] = Behaviour(health_status=500)
    sim.behaviours[sha(broken.read_bytes())] = Behaviour(starts=False)  # the rollback binary does not start either
    run = deploy(sim, artifact, tmp_path, rollback_binary=broken)
    assert run.code == int(ExitCode.ROLLBACK_FAILED)
    assert sim.admin[CANARY] != 0 and "DRAINED" in run.report.message
    assert all(sim.admin[p] == 0 for p in PEERS)
    assert not sim.temp_files(CANARY)


def test_no_last_good_binary_is_refused_before_any_change(artifact, tmp_path):
    """The canary already has the artifact and no run kept the build before it: nothing to roll back to."""
    sim = new_sim("good")
    sim.nodes[CANARY].files[BINARY] = NEW
    sim.nodes[CANARY].running_sha = sha(NEW)
    run = deploy(sim, artifact, tmp_path)
    assert run.code == int(ExitCode.PREFLIGHT) and "last-known-good" in run.report.message
    assert not [c for c in sim.commands if c[0] == "haproxy" and c[1].startswith("set ")]


@pytest.mark.parametrize("event", ["step:peers", "step:sli-watch"])
def test_haproxy_unreachable_between_peers_stops_the_roll_with_exit_6(event, artifact, tmp_path):
    """The fleet is mixed (canary on the new build, peers on the old): that is exit 6 and a resume hint."""
    sim = new_sim("good")
    run = deploy(sim, artifact, tmp_path, observer=_at(event, lambda s: setattr(s, "haproxy_down", True), sim))
    assert run.code == int(ExitCode.PEER_FAILED), run.error
    assert ("peer roll stopped" in run.report.message or f"{PEERS[0]} unchanged" in run.report.message) \
        and run.report.resume
    assert running(sim) == {CANARY: NEW, **dict.fromkeys(PEERS, OLD)} and all(a == 0 for a in sim.admin.values())
