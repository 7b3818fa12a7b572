"""Peer batches with a capacity floor on the real lab: both peers change together, and HAProxy itself never
shows fewer servers in rotation than MIN_IN_ROTATION -- read directly from HAProxy every 0.2 s."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.integration.conftest import exclusive_lab
from tests.integration.deploy_helpers import (
    deploy_env,
    haproxy,
    reset_state_dir,
    run_deploy,
    wait_all_up,
    wait_sli_green,
)
from veza_canary.lab import Faults, build_standin

pytestmark = [pytest.mark.integration, pytest.mark.lab]


@pytest.fixture
def fleet(lab, tmp_path):
    with exclusive_lab():
        from veza_canary.lab import restore_node

        env = dict(lab.env)
        reset_state_dir(env)
        wait_all_up(env)
        wait_sli_green(env)
        yield env, tmp_path
        reset_state_dir(env)
        for n in [env["CANARY_NODE"], *env["PEER_NODES"].split()]:
            restore_node(n)
        wait_all_up(env)


def test_a_batch_of_two_peers_never_takes_the_backend_below_min_in_rotation(fleet, tmp_path: Path):
    env, tmp = fleet
    peers = env["PEER_NODES"].split()
    assert len(peers) == 2, "the lab's default shape: a canary and two peers"
    build = build_standin("4.1.0", Faults(), tmp / "veza-api-4.1.0")
    h = haproxy(env)
    seen: list[set[str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(h.in_rotation())
            except Exception:  # noqa: BLE001 - a read that fails is not a data point
                pass
            stop.wait(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        run = run_deploy(deploy_env(env, SLI_WINDOW="9", SLI_PROBE_INTERVAL="3", PEER_BATCH="2",
                                    MIN_IN_ROTATION="1"), build, tmp / "r.json")
    finally:
        stop.set()
        t.join(5)
    assert run.code == 0, run.stderr[-3000:]
    assert seen and min(len(s) for s in seen) >= 1, "never below MIN_IN_ROTATION=1"
    assert any(not (set(peers) & s) for s in seen), "both peers were out of rotation together (one batch)"
    assert [s["node"] for s in run.report["steps"] if s["name"] == "peer"] == [",".join(peers)]
    refused = run_deploy(deploy_env(env, SLI_WINDOW="9", SLI_PROBE_INTERVAL="3", PEER_BATCH="2",
                                    MIN_IN_ROTATION="2"), build_standin("4.2.0", Faults(), tmp / "b"), tmp / "x.json")
    assert refused.code == 3 and "MIN_IN_ROTATION" in refused.stderr
