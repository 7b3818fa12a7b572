"""Time to rollback on the lab: fault onset -> first red probe -> rollback start -> canary back and UP.

    sudo .venv/bin/python bench/rollback_time.py [--runs 3] [--only NAME,...]

Needs root and the lab; holds ``exclusive_lab()`` throughout and restores the lab after.

Each run is a real ``veza-canary deploy`` of a stand-in build whose fault starts ``onset`` seconds
after its process starts (so the canary passes its health checks and the first SLI probes, then goes
bad mid-watch, at a random phase of the probe schedule). While it runs, the benchmark reads the
canary service's start time (``systemctl show ExecMainStartTimestampMonotonic``; the container
shares the host's monotonic clock) and polls, every 0.1 s, what the tool's probe looks at: the same
PromQL probe (5xx and latency faults) or HAProxy's view of the canary (health and crash faults).
That splits the time into:

* onset -> visible: the fault reaches what the probe reads (Prometheus scrape interval and rate
  window; or HAProxy's health checks: ``inter``/``fastinter`` x ``fall``; systemd's ``RestartSec``);
* visible -> red probe: waiting for the next probe (``SLI_PROBE_INTERVAL``) plus the probe itself;
* red probe -> rollback start: the tool deciding;
* rollback start -> canary on the old binary and UP in HAProxy (``rollback.done``), cut into drain,
  restore, restart, health, ready/UP, verify.

The rollback restores ``veza-api.previous`` on the canary (ROLLBACK_BINARY unset: the runbook's
default). Results: ``$BENCH_OUT/rollback_time.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VEZA, LabSession, LabSkipped, median, provenance, q, save, table, wait_quiet  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    fault: str  # 5xx | latency | health | crash
    probe_interval: float
    rate_window: int  # seconds
    what: str


CASES = (
    Case("5xx-P1-R10", "5xx", 1, 10, "30% of requests answer 500"),
    Case("5xx-P3-R10", "5xx", 3, 10, "same, probe every 3 s"),
    Case("5xx-P1-R30", "5xx", 1, 30, "same, 30 s rate window"),
    Case("latency-P1-R10", "latency", 1, 10, "API requests take 0.9 s (p95 threshold 0.5 s)"),
    Case("latency-P1-R30", "latency", 1, 30, "same, 30 s rate window"),
    Case("health-P1", "health", 1, 10, "health endpoint answers 500 (HAProxy marks it DOWN)"),
    Case("health-P3", "health", 3, 10, "same, probe every 3 s"),
    Case("crash-P1", "crash", 1, 10, "the process exits (systemd restarts it after 2 s)"),
)
POLL_INTERVAL = 0.5


def faults(case: Case, onset: float):  # noqa: ANN201
    from veza_canary.lab import Faults

    return {"5xx": Faults(error_rate=0.3, onset=onset), "latency": Faults(latency=0.9, onset=onset),
            "health": Faults(health_status=500, onset=onset),
            "crash": Faults(crash_after=0.0, onset=onset)}[case.fault]


class SidePoller(threading.Thread):
    """Polls what the tool's probe reads, every 0.1 s, and records when it first shows the fault."""

    def __init__(self, case: Case, env: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.case, self.env = case, env
        self.visible: float | None = None
        self.stop = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        import httpx

        from tests.integration.deploy_helpers import haproxy
        from veza_canary.prometheus import Prometheus
        from veza_canary.settings import load_settings
        from veza_canary.sli import Queries, Verdict, probe, thresholds_from_settings

        s = load_settings({}, self.env, config={})
        prom = Prometheus(httpx.Client(timeout=5), s.prometheus.url)
        hap = haproxy(self.env)
        qs, th = Queries.from_settings(s), thresholds_from_settings(s)
        while not self.stop.is_set():
            t0 = time.time()
            try:
                if self.case.fault in ("5xx", "latency"):
                    red = probe(prom, qs, th).verdict is Verdict.FAIL
                else:
                    red = not hap.stat(s.pool.canary).is_up
            except Exception as exc:  # noqa: BLE001 - a failed read is not "visible"
                self.error, red = str(exc), False
            if red:
                self.visible = (t0 + time.time()) / 2
                return
            time.sleep(max(0.0, 0.1 - (time.time() - t0)))


def run_case(case: Case, onset: float, artifact: Path, env: dict[str, str], canary: str, tmp: Path,
             i: int) -> dict[str, Any]:
    from common import parse_ts

    from veza_canary.transport import IncusTransport

    report = tmp / f"report-{case.name}-{i}.json"
    argv = [VEZA, "--log-format", "json", "--verbose", "deploy", "--yes", "--artifact", str(artifact),
            "--report", str(report)]
    proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    poller = SidePoller(case, env)
    svc_start: list[float] = []
    assert proc.stderr is not None
    for raw in proc.stderr:
        try:
            d = json.loads(raw)
        except ValueError:
            continue
        d["t"] = parse_ts(d["timestamp"]) if "timestamp" in d else time.time()
        lines.append(d)
        if d.get("event") == "sli.watch.start" and not svc_start:
            r = IncusTransport(canary).run(("systemctl", "show", "-p", "ExecMainStartTimestampMonotonic", "--value",
                                            "veza-backend-api"))
            # Same kernel, same CLOCK_MONOTONIC: convert the container's monotonic time to wall time here.
            svc_start.append(int(r.stdout.strip()) / 1e6 + (time.time() - time.monotonic()))
            poller.start()
        if d.get("event") == "rollback.start":
            poller.stop.set()
    proc.wait()
    poller.stop.set()
    rep = json.loads(report.read_text()) if report.exists() else {}

    def first(event: str, **match: Any) -> dict | None:
        return next((x for x in lines if x.get("event") == event and all(x.get(k) == v for k, v in match.items())),
                    None)

    red = first("sli.probe", verdict="fail")
    rb0, rb1 = first("rollback.start"), first("rollback.done")
    out: dict[str, Any] = {"case": case.name, "code": proc.returncode, "onset_after_start": onset,
                           "message": rep.get("message", "")[:300], "poller_error": poller.error}
    if not (svc_start and red and rb0 and rb1):
        out["error"] = "incomplete timeline (no red probe or no rollback)"
        return out
    t_onset = svc_start[0] + onset
    out.update({
        "onset_to_visible": (poller.visible - t_onset) if poller.visible else None,
        "visible_to_red": (red["t"] - poller.visible) if poller.visible else None,
        "onset_to_red": red["t"] - t_onset,
        "red_to_rollback_start": rb0["t"] - red["t"],
        "onset_to_rollback_start": rb0["t"] - t_onset,
        "rollback": rb1["t"] - rb0["t"],
        "red_to_back_up": rb1["t"] - red["t"],
        "red_reason": red.get("reason", ""),
        "rollback_steps": rollback_steps(lines, canary, rb0["t"], rb1["t"]),
    })
    return out


def rollback_steps(lines: list[dict], node: str, t0: float, t1: float) -> dict[str, float]:
    """Cut [rollback.start, rollback.done] into drain, restore, restart, health, ready/UP, verify."""
    seg = [x for x in lines if t0 <= x["t"] <= t1]

    def t_of(pred, after: float) -> float:  # noqa: ANN001
        return next((x["t"] for x in seg if x["t"] >= after and pred(x)), after)

    def done(event: str):  # noqa: ANN202
        return lambda x: x.get("event") == event and x.get("node") == node and x.get("done")

    drained = t_of(done("drain.poll"), t0)
    restart = next((x for x in seg if x.get("event") == "ran" and x.get("where") == "local"
                    and node in (x.get("argv") or []) and "restart" in (x.get("argv") or []) and x["t"] >= drained),
                   None)
    r_end = restart["t"] if restart else drained
    r_start = r_end - float(restart["duration"]) if restart else drained
    healthy = t_of(done("health.poll"), r_end)
    up = t_of(done("up.poll"), healthy)
    return {"drain": drained - t0, "restore": r_start - drained, "restart": r_end - r_start,
            "health": healthy - r_end, "ready/UP": up - healthy, "verify": t1 - up}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--quiet-load", type=float, default=1.5)
    ap.add_argument("--quiet-wait", type=float, default=300)
    args = ap.parse_args()
    cases = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    try:
        lab = LabSession()
    except LabSkipped as exc:
        print(f"rollback_time: skipped: {exc}")
        return
    from tests.integration.deploy_helpers import deploy_env
    from veza_canary.lab import build_standin, restore_node

    tmp = Path(tempfile.mkdtemp(prefix="veza-bench-rollback-"))
    results: list[dict] = []
    try:
        with lab:
            canary = lab.info.canary
            load0 = wait_quiet(args.quiet_wait, args.quiet_load)
            for i in range(args.runs):
                for case in cases:
                    # Onset 1 + P..1 + 2P s after start: after the first probes, at a different phase each run.
                    u = ((i + 0.5) / args.runs + 0.37 * cases.index(case)) % 1.0
                    onset = round(1.0 + case.probe_interval * (1.0 + u), 2)
                    artifact = build_standin(f"1.9.{i}-{case.name}", faults(case, onset), tmp / f"veza-api-{case.name}-{i}")
                    knobs = {"SLI_WINDOW": "60", "SLI_PROBE_INTERVAL": f"{case.probe_interval:g}",
                             "SLI_RATE_WINDOW": f"{case.rate_window}s", "POLL_INTERVAL": f"{POLL_INTERVAL:g}"}
                    restore_node(canary)  # its restart is cleared from systemd's start limit by between_runs
                    lab.between_runs(**knobs)
                    r = run_case(case, onset, artifact, deploy_env(lab.env, **knobs), canary, tmp, i)
                    results.append(r)
                    print(f"{case.name} run {i + 1}: exit {r['code']}, onset->red {r.get('onset_to_red', float('nan')):.2f} s,"
                          f" red->back UP {r.get('red_to_back_up', float('nan')):.2f} s {r.get('error', '')}",
                          file=sys.stderr)
    except LabSkipped as exc:
        print(f"rollback_time: skipped: {exc}")
        return
    md = render(cases, results, args.runs, load0)
    print(md)
    save("rollback_time", {"cases": [c.__dict__ for c in cases], "runs": results, "poll_interval": POLL_INTERVAL},
         md)


def render(cases: list[Case], results: list[dict], runs: int, load0: float) -> str:
    def vals(case: Case, key: str) -> list[float]:
        return [r[key] for r in results if r["case"] == case.name and r.get(key) is not None]

    def cell(case: Case, key: str) -> str:
        v = vals(case, key)
        if not v:
            return "n/a"
        return f"{median(v):.2f}" + (f" ({min(v):.2f}-{max(v):.2f})" if len(v) > 1 else "")

    rows = []
    for c in cases:
        codes = sorted({r["code"] for r in results if r["case"] == c.name})
        rows.append([f"{c.name}: {c.what}", f"{c.probe_interval:g}", f"{c.rate_window}s",
                     cell(c, "onset_to_visible"), cell(c, "visible_to_red"), cell(c, "onset_to_red"),
                     cell(c, "red_to_rollback_start"), cell(c, "red_to_back_up"), ",".join(map(str, codes))])
    header = ["fault", "probe interval P (s)", "rate window", "onset -> visible (s)", "visible -> red probe (s)",
              "onset -> red probe (s)", "red -> rollback start (s)", "red probe -> back on old binary, UP (s)",
              "exit"]
    steps = ("drain", "restore", "restart", "health", "ready/UP", "verify")
    srows = []
    for c in cases:
        rs = [r["rollback_steps"] for r in results if r["case"] == c.name and "rollback_steps" in r]
        if rs:
            srows.append([c.name] + [f"{median([x[s] for x in rs]):.2f}" for s in steps]
                         + [f"{median(vals(c, 'rollback')):.2f}"])
    all_red_up = [r["red_to_back_up"] for r in results if "red_to_back_up" in r]
    return "\n".join([
        f"Measured: {provenance(load0)}. {runs} runs per fault (median, min-max); Prometheus scrape interval 1 s; "
        f"HAProxy `inter 1s fastinter 500ms downinter 1s rise 2 fall 2`; POLL_INTERVAL {POLL_INTERVAL:g} s; "
        "rollback to `veza-api.previous`.", "",
        table(header, rows, "lrrrrrrrl"), "",
        "Rollback (from `rollback.start` to `rollback.done`), by step (medians, s):", "",
        table(["fault", *steps, "total"], srows), "",
        f"Red probe -> canary back on the old binary and UP, all runs: median {median(all_red_up):.2f} s, "
        f"p90 {q(all_red_up, 0.9):.2f} s, max {max(all_red_up, default=float('nan')):.2f} s.",
    ])


if __name__ == "__main__":
    main()
