"""node.py's own reads and copies, on the argv-level fake (the commands it emits, as a node would answer them)."""

from __future__ import annotations

import pytest

from tests.fakes import SimFleet, SimNodeTransport, sha
from veza_canary.errors import PushError
from veza_canary.node import LAST_GOOD_NAME, Node

BIN = "/opt/veza/backend-api/veza-api"


def node(sim: SimFleet, name: str = "n1") -> Node:
    return Node(name, SimNodeTransport(sim, name), install_dir="/opt/veza/backend-api",
                restart_argv=("systemctl", "restart", "veza-backend-api"), health_url="http://127.0.0.1:8080/h",
                service="veza-backend-api")


def test_a_service_started_after_its_binary_changed_runs_the_installed_binary():
    sim = SimFleet(["n1"])
    assert node(sim).runs_installed() is True


def test_a_binary_renamed_into_place_after_the_service_started_is_not_what_it_runs():
    sim = SimFleet(["n1"])
    sim.nodes["n1"].write(BIN, b"new", sim.tick())
    n = node(sim)
    assert n.runs_installed() is False
    n.restart()
    assert n.runs_installed() is True


def test_a_failed_service_runs_nothing_and_says_so():
    sim = SimFleet(["n1"])
    sim.nodes["n1"].running_sha = None
    sim.nodes["n1"].start_limited = True
    state = node(sim).service_state()
    assert state is not None and state.dead() and not state.running
    assert node(sim).runs_installed() is False


def test_copy_verified_lands_the_exact_bytes_under_the_new_name_and_leaves_no_temp():
    sim = SimFleet(["n1"], binary=b"build-a")
    n = node(sim)
    n.copy_verified(BIN, n.last_good_path, sha(b"build-a"))
    assert sim.nodes["n1"].files[n.last_good_path] == b"build-a"
    assert n.last_good_path.endswith(LAST_GOOD_NAME) and not sim.temp_files("n1")


def test_copy_verified_refuses_bytes_that_are_not_the_expected_build():
    sim = SimFleet(["n1"], binary=b"build-a")
    n = node(sim)
    with pytest.raises(PushError, match="sha256"):
        n.copy_verified(BIN, n.last_good_path, sha(b"build-b"))
    assert n.last_good_path not in sim.nodes["n1"].files and not sim.temp_files("n1")


def test_health_failure_is_described_in_words_with_the_body():
    from veza_canary.node import HealthResult

    h = HealthResult(False, 500, 0.0644, body='{"error": "db down"}')
    assert h.describe() == 'answered HTTP 500 in 64 ms (body: {"error": "db down"})'
    assert "HealthResult(" not in h.describe()
