"""Soak: many consecutive deploys on the lab, good and faulty builds alternating, in ONE process.

    .venv/bin/python bench/soak.py [--deploys 30] [--window 10] [--json out.json]
    (or: make soak / bash scripts/soak.sh)

Each deploy runs through the same code as ``veza-canary deploy`` (``pipeline.execute``
with the real fleet: incus, HAProxy runtime API, Prometheus), so anything the tool leaks
piles up in this one process where it can be measured. Even deploys ship a healthy build
(a new version each time); odd deploys ship a faulty one, cycling through a health check
answering 500, a service that never starts, a p95 breach, a 5xx breach and a crash after
start. After every deploy it checks, from live state:

* the verdict: a good build exits 0 and runs on every node; a faulty one exits 5 and the
  whole fleet is still on the last good build, every node ready and UP;
* leaks: child processes of this process (none may survive a deploy), open file
  descriptors and threads (flat), ``/tmp/veza-canary-*`` work dirs, temp files in every
  node's install dir, staged files in the fleet state dir, a lock left behind;
* memory: RSS after each deploy (after a GC); the growth between the 5th deploy and the
  last must stay under ``--max-rss-growth-mb``.

It holds the lab's test lock for the whole run and puts the lab back to its baseline at
the end. Exit status 0 when every check passed, 1 otherwise. Figures: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.deploy_helpers import exclusive_lab  # noqa: E402
from veza_canary.errors import VezaError  # noqa: E402
from veza_canary.haproxy import HAProxy, IncusSocat  # noqa: E402
from veza_canary.lab import Faults, build_standin, lab_env, restore_node  # noqa: E402
from veza_canary.log import configure  # noqa: E402
from veza_canary.node import Node  # noqa: E402
from veza_canary.pipeline import execute as run_deploy  # noqa: E402
from veza_canary.settings import load_settings  # noqa: E402
from veza_canary.transport import IncusTransport  # noqa: E402

INSTALL_DIR = "/opt/veza/backend-api"
STATE_DIR = "/var/lib/veza-canary"
FAULTS = [
    ("health-500", Faults(health_status=500)),
    ("never-starts", Faults(fail_start=True)),
    ("p95-breach", Faults(latency=0.9)),
    ("5xx-breach", Faults(error_rate=0.3)),
    ("crash-after-start", Faults(crash_after=2.0)),
]


@dataclass
class Sample:
    n: int
    build: str
    expected: int
    code: int
    seconds: float
    verdict_ok: bool
    rss_kb: int
    fds: int
    threads: int
    children: list[int]
    objects: int
    workdirs: int
    node_temps: dict[str, list[str]]
    state_dir_extras: list[str]
    lock_left: bool
    problems: list[str] = field(default_factory=list)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def children() -> list[int]:
    """Live (or zombie) children of this process."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                out.append(int(entry))
    return out


_WORKDIRS_BEFORE: set[Path] = set()


def workdirs() -> int:
    """/tmp/veza-canary-* work dirs that appeared during the soak and are still there."""
    return len(set(Path(tempfile.gettempdir()).glob("veza-canary-*")) - _WORKDIRS_BEFORE)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class Live:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
        self.h = HAProxy(IncusSocat(IncusTransport(env["HAPROXY_CONTAINER"]), env["HAPROXY_SOCKET"]),
                         env["POOL_BACKEND"])

    def fleet(self) -> dict[str, tuple[str, str, str | None]]:
        states, stats = self.h.states(), self.h.stats()
        return {n: (states[n].admin, stats[n].status,
                    Node(n, IncusTransport(n), install_dir=INSTALL_DIR, restart_argv=("true",),
                         health_url="http://127.0.0.1:8080").sha256()) for n in self.nodes}

    def temps(self) -> dict[str, list[str]]:
        out = {}
        for n in self.nodes:
            r = IncusTransport(n).run(("ls", "-1A", "--", INSTALL_DIR), check=False)
            extra = sorted(set(r.stdout.split()) - {"veza-api", "veza-api.previous"}) if r.stdout.strip() else []
            if extra:
                out[n] = extra
        return out

    def state_dir(self) -> tuple[list[str], bool]:
        r = IncusTransport(self.env["HAPROXY_CONTAINER"]).run(("ls", "-1A", "--", STATE_DIR), check=False)
        names = r.stdout.split()
        return [x for x in names if x not in ("blocked", "lock.json")], "lock.json" in names

    def wait_sli_green(self, timeout: float = 90) -> None:
        import httpx

        from veza_canary.prometheus import Prometheus
        from veza_canary.sli import Queries, Verdict, probe, thresholds_from_settings

        s = load_settings({}, self.env, None, config={})
        t = thresholds_from_settings(s)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as c:
            prom = Prometheus(c, s.prometheus.url)
            while time.monotonic() < deadline:
                if all(probe(prom, Queries.from_settings(s, n), t).verdict is Verdict.PASS for n in self.nodes):
                    return
                time.sleep(1)

    def wait_all_up(self, sha256: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.fleet()
            if all(a == "ready" and s.startswith("UP") and h == sha256 for a, s, h in st.values()):
                return st
            if time.monotonic() > deadline:
                return st
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deploys", type=int, default=30)
    ap.add_argument("--window", type=float, default=10.0, help="SLI_WINDOW of each deploy (s)")
    ap.add_argument("--max-rss-growth-mb", type=float, default=8.0)
    ap.add_argument("--json", type=Path, default=None, help="write every sample here")
    ap.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "veza-soak.log.jsonl")
    a = ap.parse_args(argv)
    if a.deploys < 2:
        ap.error("--deploys must be at least 2")

    env = lab_env()
    build_dir = Path(tempfile.mkdtemp(prefix="soak-builds-"))
    state_dir = Path(tempfile.mkdtemp(prefix="soak-state-"))
    live = Live(env)
    log_file = open(a.log, "w")  # noqa: SIM115 - closed at the end
    configure("json", stream=log_file)
    samples: list[Sample] = []
    started = time.monotonic()
    with exclusive_lab():
        try:
            baseline = build_dir / "baseline"
            IncusTransport(env["CANARY_NODE"]).pull(f"{INSTALL_DIR}/veza-api", baseline)
            baseline.chmod(0o755)
            current = baseline  # the build the whole fleet runs
            IncusTransport(env["HAPROXY_CONTAINER"]).run(
                ("rm", "-rf", "--", f"{STATE_DIR}/lock.json", f"{STATE_DIR}/blocked"), check=False)
            fd0, th0 = len(os.listdir("/proc/self/fd")), threading.active_count()
            _WORKDIRS_BEFORE.update(Path(tempfile.gettempdir()).glob("veza-canary-*"))
            for i in range(1, a.deploys + 1):
                good = i % 2 == 1
                if good:
                    name, faults = f"good-{i}", Faults()
                else:
                    name, faults = FAULTS[(i // 2 - 1) % len(FAULTS)][0], FAULTS[(i // 2 - 1) % len(FAULTS)][1]
                artifact = build_standin(f"7.{i}.0", faults, build_dir / f"veza-api-7.{i}.0")
                knobs = dict(env)
                knobs.update({"SLI_WINDOW": f"{a.window:g}", "SLI_PROBE_INTERVAL": "2", "NODE_HEALTH_TIMEOUT": "8",
                              "UP_TIMEOUT": "15", "DRAIN_TIMEOUT": "15", "POLL_INTERVAL": "0.25",
                              "ROLLBACK_BINARY": str(current), "STATE_DIR": str(state_dir),
                              "ARTIFACT": str(artifact), "MIGRATIONS_DIR": str(build_dir / "no-migrations")})
                settings = load_settings({}, knobs, None, config={})
                t0 = time.monotonic()
                code = 0
                try:
                    run_deploy(settings, stream=io.StringIO(), command_line=f"soak deploy #{i}")
                except VezaError as exc:
                    code = int(exc.exit_code)
                if code == 130:  # Ctrl-C lands in the deploy's own guard: the deploy cleaned up; stop here
                    print(f"#{i:02d} interrupted: the deploy brought the fleet to a safe state; stopping the soak")
                    break
                seconds = time.monotonic() - t0
                expected = 0 if good else 5
                want = sha(artifact) if good else sha(current)
                st = live.wait_all_up(want)
                problems = []
                if code != expected:
                    problems.append(f"exit {code}, expected {expected}")
                for n, (adm, status, h) in st.items():
                    if adm != "ready" or not status.startswith("UP"):
                        problems.append(f"{n} {adm} {status}")
                    if h != want:
                        problems.append(f"{n} runs {str(h)[:12]}, expected {want[:12]}")
                if good and code == 0:
                    current = artifact
                if not good:
                    # As an operator would: the next deploy starts when the SLI is green again (the rolled-back
                    # canary's bad samples must leave the rate window; preflight refuses a red SLI, exit 3).
                    live.wait_sli_green()
                gc.collect()
                extras, lock_left = live.state_dir()
                s = Sample(n=i, build=name, expected=expected, code=code, seconds=round(seconds, 2),
                           verdict_ok=not problems, rss_kb=rss_kb(), fds=len(os.listdir("/proc/self/fd")),
                           threads=threading.active_count(), children=children(), objects=len(gc.get_objects()),
                           workdirs=workdirs(), node_temps=live.temps(), state_dir_extras=extras,
                           lock_left=lock_left)
                if s.children:
                    problems.append(f"child processes alive: {s.children}")
                if s.fds > fd0 + 3:
                    problems.append(f"{s.fds} open fds (started with {fd0})")
                if s.threads > th0 + 1:
                    problems.append(f"{s.threads} threads (started with {th0})")
                if s.workdirs:
                    problems.append(f"{s.workdirs} /tmp/veza-canary-* left")
                if s.node_temps:
                    problems.append(f"temp files: {s.node_temps}")
                if s.state_dir_extras or s.lock_left:
                    problems.append(f"state dir: {s.state_dir_extras} lock={s.lock_left}")
                s.problems = problems
                samples.append(s)
                print(f"#{i:02d} {name:<18} exit {code} (want {expected}) {seconds:5.1f}s  rss {s.rss_kb / 1024:6.1f} MiB "
                      f"fds {s.fds} thr {s.threads} obj {s.objects}  {'OK' if not problems else 'FAIL: ' + '; '.join(problems)}",
                      flush=True)
        finally:
            IncusTransport(env["HAPROXY_CONTAINER"]).run(
                ("rm", "-rf", "--", f"{STATE_DIR}/lock.json", f"{STATE_DIR}/blocked"), check=False)
            for n in live.nodes:
                restore_node(n)
            log_file.close()

    if not samples:
        print("no deploy completed")
        return 1
    wrong = [s for s in samples if s.code != s.expected]
    failed = [s for s in samples if s.problems]
    ref = samples[min(4, len(samples) - 1)]
    growth_mb = (samples[-1].rss_kb - ref.rss_kb) / 1024
    summary = {
        "deploys": len(samples), "good": sum(1 for s in samples if s.expected == 0),
        "faulty": sum(1 for s in samples if s.expected == 5), "wrong_verdicts": len(wrong),
        "runs_with_problems": len(failed), "wall_s": round(time.monotonic() - started, 1),
        "deploy_s": {"good_mean": _mean([s.seconds for s in samples if s.expected == 0]),
                     "faulty_mean": _mean([s.seconds for s in samples if s.expected == 5])},
        "rss_mib": {"first": round(samples[0].rss_kb / 1024, 1), "at_5": round(ref.rss_kb / 1024, 1),
                    "last": round(samples[-1].rss_kb / 1024, 1), "max": round(max(s.rss_kb for s in samples) / 1024, 1),
                    "growth_5_to_last": round(growth_mb, 2)},
        "fds": {"min": min(s.fds for s in samples), "max": max(s.fds for s in samples)},
        "threads": {"min": min(s.threads for s in samples), "max": max(s.threads for s in samples)},
        "objects": {"at_5": ref.objects, "last": samples[-1].objects},
        "leaked_children": sum(len(s.children) for s in samples),
        "leaked_workdirs": max(s.workdirs for s in samples),
        "leaked_node_temps": sum(len(v) for s in samples for v in s.node_temps.values()),
        "log": str(a.log),
    }
    if growth_mb > a.max_rss_growth_mb:
        failed.append(samples[-1])
        summary["rss_verdict"] = f"grew {growth_mb:.1f} MiB > {a.max_rss_growth_mb} MiB"
    print(json.dumps(summary, indent=2))
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "samples": [asdict(s) for s in samples]}, indent=2))
    return 0 if not wrong and not failed else 1


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 1) if xs else 0.0


if __name__ == "__main__":
    sys.exit(main())
