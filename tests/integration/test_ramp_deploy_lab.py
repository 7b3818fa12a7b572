"""The deploy's weighted ramp and pinned stage end to end on the real lab.

A good build ramps 5 -> 25 -> 100 and every node ends at its configured weight; a bad build is rolled back
at the first step while its measured share stayed near it; an HAProxy reload mid-ramp is detected (weight
re-applied) and never leaves a skew; SIGINT mid-ramp restores the weight; pinned requests reach the canary.
Every end state is read from HAProxy itself.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import exclusive_lab
from tests.integration.deploy_helpers import (
    deploy_env,
    extra_load,
    finish,
    haproxy,
    reset_state_dir,
    run_deploy,
    signal_when,
    start_deploy,
    wait_all_up,
    wait_preflight_sli_clear,
    wait_sli_green,
)
from veza_canary import traffic
from veza_canary.lab import Faults, build_standin
from veza_canary.lab.configs import PIN_HEADER, PIN_MAP
from veza_canary.transport import IncusTransport

pytestmark = [pytest.mark.integration, pytest.mark.lab]

# The lab's loadgen sends ~20 requests/s to three nodes: at 5 % of its weight the canary gets ~0.5/s, so a
# 10 s rate window holds a handful of requests (SLI_MIN_REQUESTS 2) and a step needs a few probes of evidence.
RAMP = {"SLI_WINDOW": "9", "SLI_PROBE_INTERVAL": "3", "CANARY_STEPS": "5,25,100", "CANARY_STEP_HOLD": "15",
        "SLI_MIN_REQUESTS": "2"}
#: With a second load generator (``extra_load``, twice the rate: ~1 req/s at 5 %) a 9 s hold ends with ~9 requests
#: in its last rate window -- more than a 15 s hold saw at the lab's own rate.
LOADED_HOLD = "9"


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ramp-builds")
    specs = {"good": ("3.1.0", Faults()), "good2": ("3.2.0", Faults()), "good3": ("3.3.0", Faults()),
             "erroring": ("3.1.3", Faults(error_rate=0.5))}
    return {k: build_standin(v, f, d / f"veza-api-{v}") for k, (v, f) in specs.items()}


@pytest.fixture
def fleet(lab, tmp_path):
    with exclusive_lab():
        from veza_canary.lab import restore_node

        env = dict(lab.env)
        reset_state_dir(env)
        traffic.restore_all(haproxy(env), PIN_MAP)
        wait_all_up(env)
        wait_sli_green(env)
        wait_preflight_sli_clear(env, **RAMP)  # after the erroring build's test, its 5xx outlast the rate window
        yield env, tmp_path
        traffic.restore_all(haproxy(env), PIN_MAP)
        reset_state_dir(env)
        for n in [env["CANARY_NODE"], *env["PEER_NODES"].split()]:
            restore_node(n)
        wait_all_up(env)


def skew(env: dict[str, str]) -> list[str]:
    return traffic.traffic_skew(haproxy(env), PIN_MAP).lines()


def stages(report: dict) -> dict[str, dict]:
    return {e["stage"]: e for e in report["events"] if e["kind"] == "stage_verdict"}


def test_a_good_build_ramps_5_25_100_and_every_node_ends_at_its_configured_weight(fleet, builds):
    env, tmp = fleet
    with extra_load(env, 20.0):
        run = run_deploy(deploy_env(env, **{**RAMP, "CANARY_STEP_HOLD": LOADED_HOLD}), builds["good"], tmp / "r.json")
    assert run.code == 0, run.stderr[-3000:]
    st = stages(run.report)
    assert list(st) == ["5%", "25%", "100%"] and all(s["outcome"] == "green" for s in st.values())
    assert skew(env) == [], "no weight left reduced, no pin"
    shares = {k: (v.get("measured_share") or {}).get("share") for k, v in st.items()}
    assert shares["5%"] is not None and shares["5%"] < shares["100%"], shares


def test_a_bad_build_is_rolled_back_at_the_first_step_with_its_share_near_that_step(fleet, builds):
    env, tmp = fleet
    with extra_load(env, 20.0):  # twice the errors a second at 5 %: the rules see them sooner
        run = run_deploy(deploy_env(env, **{**RAMP, "CANARY_STEP_HOLD": "30"}), builds["erroring"], tmp / "r.json")
    assert run.code == 5, run.stderr[-3000:]
    st = stages(run.report)
    assert list(st) == ["5%"], f"rolled back at the first step: {list(st)}"
    share = (st["5%"].get("measured_share") or {}).get("share")
    assert share is not None and share < 0.15, f"the canary served {share} of the requests at 5 %"
    wait_all_up(env)
    assert skew(env) == []


def test_an_haproxy_reload_mid_ramp_never_leaves_a_skewed_weight(fleet, builds):
    env, tmp = fleet
    proc = start_deploy(deploy_env(env, **{**RAMP, "CANARY_STEPS": "25,100", "CANARY_STEP_HOLD": "20"}),
                        builds["good2"], tmp / "r.json")
    signal_when(proc, '"stage": "25%"', 0)  # the 25 % stage has begun
    IncusTransport(env["HAPROXY_CONTAINER"]).run(("systemctl", "reload", "haproxy"))
    run = finish(proc, tmp / "r.json")
    assert run.code in (0, 5), run.stderr[-3000:]
    reapplied = [e for e in run.report["events"] if e["kind"] == "weight_reapplied"]
    assert run.code == 5 or reapplied, "the lost weight was seen and re-applied (or the canary rolled back)"
    wait_all_up(env)
    assert skew(env) == []


def test_sigint_mid_ramp_restores_the_weight(fleet, builds):
    env, tmp = fleet
    proc = start_deploy(deploy_env(env, **{**RAMP, "CANARY_STEP_HOLD": "60"}), builds["good3"], tmp / "r.json")
    signal_when(proc, '"stage": "5%"', signal.SIGINT)
    run = finish(proc, tmp / "r.json")
    assert run.code == 130, run.stderr[-3000:]
    wait_all_up(env)
    assert skew(env) == []


def test_pinned_requests_reach_the_canary_during_the_pinned_stage(fleet, builds, lab):
    env, tmp = fleet
    stop = threading.Event()
    sent = [0]

    def pinned_client() -> None:
        with httpx.Client(timeout=3) as c:
            while not stop.is_set():
                try:
                    c.get(f"{env['LB_URL']}/api/v1/tracks", headers={PIN_HEADER: "team-veza"})
                    sent[0] += 1
                except httpx.HTTPError:
                    pass
                stop.wait(0.1)

    t = threading.Thread(target=pinned_client, daemon=True)
    t.start()
    try:
        run = run_deploy(deploy_env(env, SLI_WINDOW="9", SLI_PROBE_INTERVAL="3", CANARY_PINS="team-veza",
                                    CANARY_PIN_HOLD="9", SLI_MIN_REQUESTS="1"), builds["good"], tmp / "r.json")
    finally:
        stop.set()
        t.join(5)
    assert run.code == 0, run.stderr[-3000:]
    st = stages(run.report)
    assert list(st) == ["pinned", "100%"], list(st)
    assert skew(env) == [], "the pin is removed at the end"
    assert sent[0] > 20
