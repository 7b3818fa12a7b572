"""The staging acceptance job: the runbook's bar, run against a live environment.

Four scenarios, in order, each a real ``veza-canary deploy`` subprocess (so the
exit code is the real one), each checked from the live state afterwards:

1. normal deploy of build N+1            -> exit 0, every node on N+1, all ready and UP;
2. build whose health returns 500        -> exit 5, canary back on N+1 and UP, peers untouched;
3. normal deploy of build N+2            -> exit 0, every node on N+2;
4. healthy build that errors under load  -> exit 5, rolled back by the SLI watch (not a health
   check), canary back on N+2 and UP, peers untouched.

Against the lab the builds are made with the lab's stand-in (fresh versions on
every run, so blocked releases of earlier runs don't interfere). Against real
staging, pass the four builds with ``--build-next/--build-bad/--build-next2/--build-slo``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from veza_canary.artifact import sha256_file
from veza_canary.errors import ExitCode, VezaError
from veza_canary.log import get_logger

log = get_logger(__name__)


class AcceptanceFailed(VezaError):
    exit_code = ExitCode.CHECK_FAILED


@dataclass
class Builds:
    next: Path
    bad: Path
    next2: Path
    slo: Path

    @classmethod
    def for_lab(cls, directory: Path) -> Builds:
        from veza_canary.lab import Faults, build_standin

        stamp = int(time.time())
        directory.mkdir(parents=True, exist_ok=True)

        def b(version: str, faults: Faults) -> Path:
            return build_standin(version, faults, directory / f"veza-api-{version}")

        return cls(
            next=b(f"2.{stamp}.1", Faults()),
            bad=b(f"2.{stamp}.2-health500", Faults(health_status=500)),
            next2=b(f"2.{stamp}.3", Faults()),
            slo=b(f"2.{stamp}.4-erroring", Faults(error_rate=0.3)),
        )


@dataclass
class ScenarioResult:
    name: str
    ok: bool
    duration: float
    exit_code: int
    expected_exit: int
    problems: list[str] = field(default_factory=list)
    report_path: str = ""
    output: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    artifact: Callable[[Builds], Path]
    rollback: Callable[[Builds, Path], Path]  # (builds, baseline) -> ROLLBACK_BINARY
    expected_exit: int
    canary_on: Callable[[Builds, Path], Path]
    peers_on: Callable[[Builds, Path], Path]
    failed_step: str | None = None
    #: A webhook event this scenario must deliver to a receiver on 127.0.0.1 (WEBHOOK_URLS points at it).
    webhook_event: str | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("1-normal-deploy-N+1", lambda b: b.next, lambda b, base: base, 0,
             lambda b, base: b.next, lambda b, base: b.next),
    Scenario("2-deliberate-rollback-health-500", lambda b: b.bad, lambda b, base: b.next, 5,
             lambda b, base: b.next, lambda b, base: b.next, failed_step="canary-health"),
    Scenario("3-normal-deploy-N+2", lambda b: b.next2, lambda b, base: b.next, 0,
             lambda b, base: b.next2, lambda b, base: b.next2),
    Scenario("4-sli-breach-rolled-back-by-the-watch", lambda b: b.slo, lambda b, base: b.next2, 5,
             lambda b, base: b.next2, lambda b, base: b.next2, failed_step="sli-watch",
             webhook_event="rolled-back"),
)


def _cli() -> list[str]:
    return [sys.executable, "-m", "veza_canary"]


def read_live_state(env: dict[str, str]) -> dict[str, dict]:
    """``veza-canary status --format json`` -> {node: {"sha256", "admin", "status"}}."""
    r = subprocess.run([*_cli(), "--log-format", "json", "status", "--format", "json"], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    try:
        data = json.loads(r.stdout)
    except ValueError:
        raise AcceptanceFailed(f"status --format json did not print JSON (exit {r.returncode}): "
                               f"{r.stderr.strip()[-300:]}") from None
    nodes = data.get("nodes", [])
    out = {}
    for n in nodes:
        out[n["name"]] = {"sha256": n.get("sha256"), "admin": n.get("admin"), "status": n.get("status")}
    return out


def run_scenario(sc: Scenario, builds: Builds, baseline: Path, env: dict[str, str], reports: Path,
                 canary: str, peers: list[str], settle: float = 30.0) -> ScenarioResult:
    from veza_canary.notify import LocalSink

    report = reports / f"{sc.name}.json"
    e = dict(env)
    e["ROLLBACK_BINARY"] = str(sc.rollback(builds, baseline))
    t0 = time.monotonic()
    artifact = sc.artifact(builds)
    with LocalSink() as sink:
        if sc.webhook_event:
            e["WEBHOOK_URLS"] = sink.url
        p = subprocess.run([*_cli(), "--log-format", "json", "deploy", "--yes", "--artifact", str(artifact),
                            "--report", str(report)], env=e, capture_output=True, text=True, timeout=1800,
                           check=False)
        hook = sink.wait_for(sc.webhook_event, 30) if sc.webhook_event else None
    res = ScenarioResult(sc.name, True, 0.0, p.returncode, sc.expected_exit, report_path=str(report),
                         output=p.stdout + "\n" + p.stderr[-20000:])
    if sc.webhook_event:
        res.problems.extend(_webhook_problems(sc, hook, artifact))
    if p.returncode != sc.expected_exit:
        res.problems.append(f"exit {p.returncode}, expected {sc.expected_exit}")
    data = json.loads(report.read_text()) if report.exists() else {}
    if not data:
        res.problems.append("no report written")
    if sc.failed_step:
        failed = [s["name"] for s in data.get("steps", []) if s.get("outcome") == "failed"]
        if sc.failed_step not in failed:
            res.problems.append(f"expected step {sc.failed_step} to fail, failed steps: {failed}")
    want = {canary: sha256_file(sc.canary_on(builds, baseline))}
    want.update({n: sha256_file(sc.peers_on(builds, baseline)) for n in peers})
    deadline = time.monotonic() + settle
    while True:
        state = read_live_state(e)
        live = [f"{n}: sha {str(state.get(n, {}).get('sha256'))[:12]} want {w[:12]}, "
                f"{state.get(n, {}).get('admin')}/{state.get(n, {}).get('status')}"
                for n, w in want.items()
                if state.get(n, {}).get("sha256") != w or state.get(n, {}).get("admin") != "ready"
                or not str(state.get(n, {}).get("status", "")).startswith("UP")]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    res.problems.extend(live)
    res.duration = round(time.monotonic() - t0, 2)
    res.ok = not res.problems
    log.info("acceptance.scenario", name=sc.name, ok=res.ok, exit_code=p.returncode, duration=res.duration,
             problems=res.problems)
    return res


def _webhook_problems(sc: Scenario, body: dict | None, artifact: Path) -> list[str]:
    """What the webhook receiver should have seen for ``sc``: the event, its artifact and exit code, a summary."""
    if body is None:
        return [f"no {sc.webhook_event!r} webhook received"]
    problems = []
    if body.get("exit_code") != sc.expected_exit:
        problems.append(f"webhook exit_code {body.get('exit_code')}, expected {sc.expected_exit}")
    if (body.get("artifact") or {}).get("sha256") != sha256_file(artifact):
        problems.append("webhook names another artifact")
    if not (body.get("data") or {}).get("cause"):
        problems.append("webhook carries no cause")
    if "rolled back" not in str(body.get("text", "")):
        problems.append(f"webhook text does not say 'rolled back': {str(body.get('text'))[:120]!r}")
    return problems


def run_acceptance(env: dict[str, str], builds: Builds, reports: Path, *, baseline: Path) -> list[ScenarioResult]:
    reports.mkdir(parents=True, exist_ok=True)
    canary = env.get("CANARY_NODE", "backend-api-2")
    peers = [p for p in env.get("PEER_NODES", "backend-api-1").replace(",", " ").split() if p]
    results = []
    for sc in SCENARIOS:
        results.append(run_scenario(sc, builds, baseline, env, reports, canary, peers))
    return results


def junit_xml(results: list[ScenarioResult], suite: str = "staging-acceptance") -> str:
    failures = sum(1 for r in results if not r.ok)
    ts = ET.Element("testsuite", name=suite, tests=str(len(results)), failures=str(failures), errors="0",
                    time=f"{sum(r.duration for r in results):.2f}")
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=suite, name=r.name, time=f"{r.duration:.2f}")
        if not r.ok:
            f = ET.SubElement(tc, "failure", message="; ".join(r.problems)[:2000], type="AcceptanceFailure")
            f.text = "\n".join(r.problems)
        out = ET.SubElement(tc, "system-out")
        report = Path(r.report_path).read_text() if r.report_path and Path(r.report_path).exists() else ""
        out.text = f"exit {r.exit_code} (expected {r.expected_exit})\nreport: {r.report_path}\n{report}"
    return ET.tostring(ts, encoding="unicode", xml_declaration=True)


def baseline_binary(env: dict[str, str], workdir: Path) -> Path:
    """The canary's current binary, pulled, as the last-known-good for scenario 1 (unless ROLLBACK_BINARY is set)."""
    if env.get("ROLLBACK_BINARY"):
        return Path(env["ROLLBACK_BINARY"])
    from veza_canary.settings import load_settings
    from veza_canary.transport import IncusTransport, host_transport

    s = load_settings({}, env)
    dst = workdir / "veza-api-baseline"
    IncusTransport(s.pool.canary, host_transport(s)).pull(s.service.binary_path, dst)
    os.chmod(dst, 0o700)
    return dst
