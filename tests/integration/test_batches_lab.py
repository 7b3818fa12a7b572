"""Peer batches with a capacity floor on a 5-node lab (issue 18 §1): a canary and four peers behind HAProxy.

The module reshapes the lab to five nodes (``lab up --nodes 5``: canary ``backend-api-2``, peers 1, 3, 4, 5)
and puts it back to its default shape (three nodes) at the end, whatever happened. During every deploy a
thread reads HAProxy's runtime API every 0.2 s -- through its own socket and its own parse of the raw
replies, not through the deploy's code -- and every poll is checked: never fewer than MIN_IN_ROTATION
servers ready *and* UP.

* PEER_BATCH=2, MIN_IN_ROTATION=3: the peers go two at a time (two batches, seen out of rotation together,
  never three at once), the backend never drops below three servers, every node ends on the new build;
* PEER_BATCH=3, MIN_IN_ROTATION=3: five minus three is two, below the floor -- refused by preflight (exit 3)
  with nothing changed at any moment;
* a peer whose unit cannot start, in the first batch: the roll stops after its batch-mate is settled (in
  rotation on the new build), the failed peer is left drained, the second batch is untouched, the report
  says which node runs which binary and how to resume.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import exclusive_lab
from tests.integration.deploy_helpers import (
    DeployRun,
    deploy_env,
    reset_state_dir,
    run_deploy,
    wait_sli_green,
)
from veza_canary.haproxy import IncusSocat
from veza_canary.lab import Faults, build_standin
from veza_canary.transport import IncusTransport

# Last: reshaping the lab (two more nodes, then back) restarts HAProxy and Prometheus; the tests that judge
# the SLI must not see that burst in their baseline history.
pytestmark = [pytest.mark.integration, pytest.mark.lab, pytest.mark.lab_last]

NODES = 5
FLOOR = 3
#: The minimal SLI window the other lab deploy tests use.
FAST = {"SLI_WINDOW": "9", "SLI_PROBE_INTERVAL": "3"}
INSTALL_DIR = "/opt/veza/backend-api"
UNIT = "veza-backend-api"
FORCED_DRAIN = 0x08  # srv_admin_state's SRV_ADMF_FDRAIN (HAProxy src/server.h): `set server ... state drain`
DROP_IN = f"/etc/systemd/system/{UNIT}.service.d/broken.conf"


# --- HAProxy, read directly ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    admin_state: int  # show servers state: srv_admin_state (0 = no maintenance or drain flag: ready)
    status: str  # show stat: UP, UP 1/2, DRAIN, MAINT, DOWN, ...

    @property
    def in_rotation(self) -> bool:
        return self.admin_state == 0 and self.status.startswith("UP")


def read_backend(sock: IncusSocat, backend: str) -> dict[str, Server]:
    """Both reads in one runtime-API exchange, parsed here from the raw text (not by veza_canary.haproxy)."""
    reply = sock.send(f"show servers state {backend}; show stat {backend} 4 -1")
    lines = reply.splitlines()
    state_hdr = next(i for i, ln in enumerate(lines) if ln.startswith("# be_id"))
    stat_hdr = next(i for i, ln in enumerate(lines) if ln.startswith("# pxname"))
    cols = lines[state_hdr][2:].split()
    admin = {}
    for ln in lines[state_hdr + 1:stat_hdr]:
        if ln.strip():
            row = dict(zip(cols, ln.split(), strict=False))
            if row.get("be_name") == backend:
                admin[row["srv_name"]] = int(row["srv_admin_state"])
    stat_text = "\n".join(ln for ln in lines[stat_hdr:] if ln.strip())[2:]
    status = {r["svname"]: r["status"] for r in csv.DictReader(io.StringIO(stat_text))
              if r["pxname"] == backend and r["svname"] in admin}
    assert set(status) == set(admin), (sorted(admin), sorted(status))
    return {n: Server(admin[n], status[n]) for n in admin}


class Rotation:
    """Polls HAProxy every 0.2 s while a deploy runs; keeps every poll (server -> Server)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.sock = IncusSocat(IncusTransport(env["HAPROXY_CONTAINER"]), env["HAPROXY_SOCKET"])
        self.backend = env["POOL_BACKEND"]
        self.polls: list[dict[str, Server]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Rotation:
        self._t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._t.join(10)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.polls.append(read_backend(self.sock, self.backend))
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on: HAProxy is never down here
                self.errors.append(repr(exc))
            self._stop.wait(0.2)

    def out_of_rotation(self) -> list[frozenset[str]]:
        return [frozenset(n for n, s in p.items() if not s.in_rotation) for p in self.polls]

    def assert_floor_held(self, nodes: list[str]) -> None:
        """Every poll saw every node, and at least FLOOR of them ready and UP."""
        assert not self.errors, f"HAProxy reads failed during the deploy: {self.errors[:3]}"
        assert len(self.polls) >= 20, f"only {len(self.polls)} polls: the watch did not run"
        assert all(set(p) == set(nodes) for p in self.polls)
        low = [(i, sorted(n for n, s in p.items() if s.in_rotation)) for i, p in enumerate(self.polls)
               if sum(s.in_rotation for s in p.values()) < FLOOR]
        assert not low, f"below MIN_IN_ROTATION={FLOOR} at {len(low)} poll(s) of {len(self.polls)}: {low[:3]}"


# --- the lab: five nodes for the module --------------------------------------------------------------------


def sha_of(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def sha_on(node: str) -> str:
    return IncusTransport(node).run(("sha256sum", f"{INSTALL_DIR}/veza-api")).stdout.split()[0]


def main_pid(node: str) -> str:
    return IncusTransport(node).run(("systemctl", "show", "-p", "MainPID", "--value", UNIT)).stdout.strip()


@pytest.fixture(scope="module")
def five_nodes(lab) -> Iterator[dict[str, str]]:
    """The lab with five nodes, held exclusively for the module; back to three nodes afterwards."""
    from veza_canary.lab import LabConfig, lab_up

    def progress(line: str) -> None:
        print(f"lab: {line}", flush=True)

    with exclusive_lab():
        try:
            info = lab_up(LabConfig.with_nodes(NODES), progress=progress)
            env = dict(info.env)
            assert env["CANARY_NODE"] == "backend-api-2"
            assert env["PEER_NODES"].split() == ["backend-api-1", "backend-api-3", "backend-api-4", "backend-api-5"]
            yield env
        finally:
            lab_up(LabConfig(), progress=progress)


@dataclass
class Fleet:
    env: dict[str, str]
    tmp: Path
    canary: str
    peers: list[str]
    baseline: str  # sha256 every node runs at the start of each test
    undo: list = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        return [self.canary, *self.peers]

    def deploy(self, artifact: Path, **knobs: str) -> tuple[DeployRun, Rotation]:
        with Rotation(self.env) as rot:
            run = run_deploy(deploy_env(self.env, **{**FAST, **knobs}), artifact, self.tmp / f"{artifact.name}.json")
        return run, rot

    def live(self) -> dict[str, tuple[Server, str]]:
        """Each node's HAProxy state (read directly) and the sha256 of its binary."""
        st = read_backend(IncusSocat(IncusTransport(self.env["HAPROXY_CONTAINER"]), self.env["HAPROXY_SOCKET"]),
                          self.env["POOL_BACKEND"])
        return {n: (st[n], sha_on(n)) for n in self.nodes}

    def wait_all_in_rotation(self, timeout: float = 60) -> dict[str, tuple[Server, str]]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.live()
            if all(s.in_rotation for s, _sha in st.values()):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"not every node ready and UP: {st}")
            time.sleep(0.5)


@pytest.fixture
def fleet(five_nodes, tmp_path) -> Iterator[Fleet]:
    from veza_canary.lab import restore_node

    env = dict(five_nodes)
    canary, peers = env["CANARY_NODE"], env["PEER_NODES"].split()
    baseline = tmp_path / "veza-api-baseline"
    IncusTransport(canary).pull(f"{INSTALL_DIR}/veza-api", baseline)
    baseline.chmod(0o755)
    env["ROLLBACK_BINARY"] = str(baseline)
    reset_state_dir(env)
    fl = Fleet(env=env, tmp=tmp_path, canary=canary, peers=peers, baseline=sha_of(baseline))
    st = fl.wait_all_in_rotation()
    assert {sha for _s, sha in st.values()} == {fl.baseline}, "every node on the lab's build at the start"
    wait_sli_green(env)
    try:
        yield fl
    finally:
        for fn in reversed(fl.undo):
            fn()
        reset_state_dir(env)
        for n in fl.nodes:
            restore_node(n)


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("batch-builds")
    return {k: build_standin(v, Faults(), d / f"veza-api-{v}") for k, v in
            {"good": "4.1.0", "refused": "4.2.0", "stopped": "4.3.0"}.items()}


# --- the tests --------------------------------------------------------------------------------------------


def test_a_batch_too_big_for_the_floor_is_refused_before_anything_changes(fleet, builds):
    """PEER_BATCH=3 of 4 peers with MIN_IN_ROTATION=3 of 5 servers: 5 - 3 = 2 < 3, refused by preflight."""
    fl = fleet
    before, pids = fl.live(), {n: main_pid(n) for n in fl.nodes}
    run, rot = fl.deploy(builds["refused"], PEER_BATCH="3", MIN_IN_ROTATION=str(FLOOR))
    assert run.code == 3, run.stderr[-3000:]
    assert "MIN_IN_ROTATION" in run.report["message"] and "PEER_BATCH=3" in run.report["message"]
    assert not [s for s in run.report["steps"] if s["name"] in ("drain-canary", "peer") and s["outcome"] != "skipped"]
    assert fl.live() == before, "HAProxy state or a binary changed"
    assert {n: main_pid(n) for n in fl.nodes} == pids, "a service was restarted"
    assert all(not out for out in rot.out_of_rotation()), "a node left rotation during a refused deploy"


def test_a_batch_of_two_on_five_nodes_never_takes_the_backend_below_min_in_rotation(fleet, builds):
    fl = fleet
    run, rot = fl.deploy(builds["good"], PEER_BATCH="2", MIN_IN_ROTATION=str(FLOOR))
    assert run.code == 0, run.stderr[-3000:]
    rot.assert_floor_held(fl.nodes)
    first, second = frozenset(fl.peers[:2]), frozenset(fl.peers[2:])
    out_peers = [out & set(fl.peers) for out in rot.out_of_rotation()]
    assert max(len(o) for o in out_peers) == 2, "never more than one batch (two peers) out of rotation at once"
    assert first in out_peers and second in out_peers, "each batch's two peers were seen out of rotation together"
    assert not [o for o in out_peers if o and not (o <= first or o <= second)], "a batch mixed with another's peer"
    assert not [o for o in rot.out_of_rotation() if fl.canary in o and o - {fl.canary}], "canary out with a peer"
    assert [s["node"] for s in run.report["steps"] if s["name"] == "peer"] == [",".join(fl.peers[:2]),
                                                                                ",".join(fl.peers[2:])]
    st = fl.wait_all_in_rotation(timeout=10)
    assert {n: sha for n, (_s, sha) in st.items()} == dict.fromkeys(fl.nodes, sha_of(builds["good"]))
    print(f"batch of 2 on 5 nodes: {len(rot.polls)} polls, fewest in rotation "
          f"{min(sum(s.in_rotation for s in p.values()) for p in rot.polls)}")


def test_a_peer_failing_in_a_batch_stops_the_roll_after_its_batch_mate_is_settled(fleet, builds):
    """The first batch's first peer cannot start (its unit's ExecStart is /bin/false): its batch-mate ends in
    rotation on the new build, the failed peer drained, the second batch untouched, exit 6 with a resume hint."""
    fl = fleet
    bad, mate = fl.peers[0], fl.peers[1]
    t = IncusTransport(bad)
    t.run(("mkdir", "-p", str(Path(DROP_IN).parent)))
    t.run(("sh", "-c", f"printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > {DROP_IN}"))
    t.run(("systemctl", "daemon-reload"))

    def unbreak() -> None:
        t.run(("rm", "-f", DROP_IN))
        t.run(("systemctl", "daemon-reload"))

    fl.undo.append(unbreak)
    new = sha_of(builds["stopped"])
    run, rot = fl.deploy(builds["stopped"], PEER_BATCH="2", MIN_IN_ROTATION=str(FLOOR), NODE_HEALTH_TIMEOUT="6")
    assert run.code == 6, run.stderr[-3000:]
    rot.assert_floor_held(fl.nodes)
    assert f"peer {bad} failed" in run.report["message"] and f"{bad} left DRAINED" in run.report["message"]
    assert "re-run" in run.report["resume"]
    st = fl.live()
    assert st[fl.canary][0].in_rotation and st[fl.canary][1] == new
    assert st[mate][0].in_rotation and st[mate][1] == new, "the batch-mate settled in rotation on the new build"
    assert st[bad][0].admin_state & FORCED_DRAIN and st[bad][1] == new, "the failed peer left drained"
    for p in fl.peers[2:]:
        assert st[p][0].in_rotation and st[p][1] == fl.baseline, f"{p} (second batch) untouched"
    binaries = {n: s["binary"] for n, s in run.report["final_state"]["nodes"].items()}
    assert binaries == {fl.canary: "artifact", bad: "artifact", mate: "artifact",
                        fl.peers[2]: "rollback", fl.peers[3]: "rollback"}, binaries
    assert [s["node"] for s in run.report["steps"] if s["name"] == "peer"] == [f"{bad},{mate}"]
