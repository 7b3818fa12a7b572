"""Shared helpers for tests that run real deploys against the lab.

A deploy runs as a real subprocess (``veza-canary deploy``), so signals and
exit codes are the real ones. Every test ends by putting the lab back to its
baseline (1.0.0 on every node, all ready and UP, no lock, no blocked release).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import exclusive_lab  # noqa: F401 - re-exported for the lab test modules
from veza_canary.haproxy import HAProxy, IncusSocat
from veza_canary.node import Node
from veza_canary.transport import IncusTransport

VC = [sys.executable, "-m", "veza_canary"]


@dataclass
class DeployRun:
    code: int
    stdout: str
    stderr: str
    report: dict

    def node(self, name: str) -> dict:
        return self.report["final_state"]["nodes"][name]


def deploy_env(lab_env: dict[str, str], **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _KNOB_ENV}
    env.update(lab_env)
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _knob_envs() -> set[str]:
    from veza_canary.settings import KNOBS

    return {k.env for k in KNOBS}


_KNOB_ENV = _knob_envs()


def start_deploy(env: dict[str, str], artifact: Path, report: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*VC, "--log-format", "json", "deploy", "--yes", "--artifact", str(artifact), "--report", str(report), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc: subprocess.Popen, report: Path, timeout: float = 300) -> DeployRun:
    out, err = proc.communicate(timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else {}
    return DeployRun(proc.returncode, out, err, data)


def run_deploy(env: dict[str, str], artifact: Path, report: Path, *extra: str, timeout: float = 300) -> DeployRun:
    return finish(start_deploy(env, artifact, report, *extra), report, timeout)


def wait_for_log(proc_stderr_lines: list[str], needle: str) -> bool:
    return any(needle in ln for ln in proc_stderr_lines)


def signal_when(proc: subprocess.Popen, needle: str, sig: int, timeout: float = 120) -> list[str]:
    """Read the deploy's JSON log lines until one contains ``needle``, then send ``sig``. Returns lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            proc.send_signal(sig)
            return lines
    raise AssertionError(f"never saw {needle!r} in the deploy's log; last lines: {lines[-5:]}")


def haproxy(lab_env: dict[str, str]) -> HAProxy:
    t = IncusTransport(lab_env["HAPROXY_CONTAINER"])
    return HAProxy(IncusSocat(t, lab_env.get("HAPROXY_SOCKET", "/run/haproxy/admin.sock")),
                   lab_env.get("POOL_BACKEND", "api_pool"))


def live_state(lab_env: dict[str, str]) -> dict[str, dict]:
    """Each node's admin state, HAProxy status and binary sha256, read live."""
    h = haproxy(lab_env)
    states, stats = h.states(), h.stats()
    nodes = [lab_env["CANARY_NODE"], *lab_env["PEER_NODES"].split()]
    out = {}
    for n in nodes:
        node = Node(n, IncusTransport(n), install_dir="/opt/veza/backend-api", restart_argv=("true",),
                    health_url="http://127.0.0.1:8080/api/v1/health")
        out[n] = {"admin": states[n].admin, "status": stats[n].status, "sha256": node.sha256()}
    return out


def wait_all_up(lab_env: dict[str, str], timeout: float = 60) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        st = live_state(lab_env)
        if all(s["admin"] == "ready" and s["status"].startswith("UP") for s in st.values()):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"fleet not all ready and UP: {st}")
        time.sleep(0.5)


def temp_files_in_install_dir(node: str) -> list[str]:
    r = IncusTransport(node).run(("find", "/opt/veza/backend-api", "-maxdepth", "1", "-name", ".veza-api.new-*"))
    return r.stdout.split()


def reset_state_dir(lab_env: dict[str, str]) -> None:
    """Remove the fleet lock and the blocked releases from the HAProxy container."""
    IncusTransport(lab_env["HAPROXY_CONTAINER"]).run(
        ("rm", "-rf", "--", "/var/lib/veza-canary/lock.json", "/var/lib/veza-canary/blocked"), check=False)


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def wait_sli_green(lab_env: dict[str, str], timeout: float = 90) -> None:
    """Wait until every node's SLI probe passes, and stays green long enough to trust.

    A single passing probe right after a red one is not enough: a fault rolled back
    seconds ago stays in the rate window, and the restarts of rollback and restore reset
    the histogram counters, so ``rate()`` can read green for a probe and red again on the
    next one (seen in CI: pass, then the deploy's preflight read p95 0.86s). So once any
    probe was red, only a whole rate window of green probes will do; when the very first
    probe is green (the common case, nothing failed recently), two in a row a second apart.
    """
    import httpx

    from veza_canary.prometheus import Prometheus
    from veza_canary.settings import load_settings
    from veza_canary.sli import Queries, Verdict, probe, thresholds_from_settings

    s = load_settings({}, lab_env, config={})
    prom = Prometheus(httpx.Client(timeout=5), s.prometheus.url)
    settle = 1.0
    deadline = time.monotonic() + timeout
    green_since: float | None = None
    while True:
        verdicts = {n: probe(prom, Queries.from_settings(s, n), thresholds_from_settings(s)).verdict for n in s.pool.nodes}
        now = time.monotonic()
        if all(v is Verdict.PASS for v in verdicts.values()):
            green_since = now if green_since is None else green_since
            if now - green_since >= settle:
                return
        else:
            green_since = None
            settle = s.sli.rate_window_s + 2.0  # + two scrapes of the lab's 1 s interval
        if now > deadline:
            raise AssertionError(f"SLI not green on every node for {settle:g}s within {timeout}s: {verdicts}")
        time.sleep(1.0)


#: The transient unit ``extra_load`` runs in the HAProxy container (stopped by name: only the one it started).
EXTRA_LOAD_UNIT = "veza-test-extra-load"


@contextmanager
def extra_load(lab_env: dict[str, str], rate: float = 20.0, max_seconds: float = 600.0) -> Iterator[None]:
    """A second copy of the lab's own load generator (same paths, same new-connection-per-request pattern)
    sending ``rate`` more requests/s through HAProxy while the block runs.

    For tests whose judgement is over request *counts* (the SLI judge): more requests a second gather the same
    evidence in less time. Bounded twice: the generator stops by itself after ``max_seconds``, and the unit is
    stopped when the block ends, whatever happened.
    """
    t = IncusTransport(lab_env["HAPROXY_CONTAINER"])
    for leftover in (("stop",), ("reset-failed",)):  # one a killed session may have left
        t.run(("systemctl", *leftover, f"{EXTRA_LOAD_UNIT}.service"), check=False, timeout=30)
    t.run(("systemd-run", f"--unit={EXTRA_LOAD_UNIT}", "--collect", "--quiet", "/usr/bin/python3",
           "/usr/local/bin/veza-loadgen", "--url", "http://127.0.0.1:80", "--rate", f"{rate:g}",
           "--duration", f"{max_seconds:g}"))
    try:
        yield
    finally:
        t.run(("systemctl", "stop", f"{EXTRA_LOAD_UNIT}.service"), check=False, timeout=30)


def wait_preflight_sli_clear(lab_env: dict[str, str], timeout: float = 60, **knobs: str) -> None:
    """Wait until no node's SLI is red *as a deploy's preflight judges it* with these knobs.

    ``wait_sli_green`` reads each node's last rate window (10 s on the lab); the preflight judges a longer span
    (``Policy.recent_s``: two rate windows, each node alone, with the judge's rules), so a test right after one
    that rolled back an erroring build could see green there and be refused here.
    """
    import httpx

    from veza_canary.evidence import PromEvidence, queries_from_settings
    from veza_canary.prometheus import Prometheus
    from veza_canary.settings import load_settings
    from veza_canary.verdict import Policy, Verdict, snapshot

    s = load_settings({}, {**lab_env, **knobs}, config={})
    prom = Prometheus(httpx.Client(timeout=5), s.prometheus.url)
    policy = Policy.from_settings(s)
    deadline = time.monotonic() + timeout
    while True:
        red = {n: smp.reason for n in s.pool.nodes
               if (smp := snapshot(PromEvidence(prom, queries_from_settings(s, n)[0], None), policy, policy.recent_s)).verdict
               is Verdict.FAIL}
        if not red:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"SLI still red for a preflight after {timeout}s: {red}")
        time.sleep(1.0)
