"""Fleet scale: a full roll of 10, 100 and 500 simulated nodes, with realistic I/O latencies.

    .venv/bin/python bench/fleet_scale.py [--sizes 10,100,500] [--runs 5]

The deploy is the real one (``pipeline.execute``: preflight, migration gate, lock,
canary, SLI watch, peers, report), in-process, against ``tests.fakes``'s
simulated fleet. Waits and I/O latencies run on the simulator's ``FakeClock``, so the
*simulated* time is what a real roll would spend in I/O and waits; the tool's own work
(parsing, logging, the report, the pipeline) runs in real time and is what the wall clock
of the process measures. Latencies come from the lab (docs/benchmarks.md, LAB-NOTES):
``incus exec`` 35 ms, ``incus file push`` 70 ms, HAProxy runtime API through incus exec
40 ms, a Prometheus query 10 ms, an LB request 5 ms, ``systemctl restart`` 0.3 s, then the
service needs 0.35 s before its health endpoint answers (HAProxy sees it DOWN meanwhile).

Each (size, run) is a fresh process, sizes interleaved so machine load hits them alike:

* ``wall``: the deploy's wall time; ``in fakes``: real time spent inside the simulator's
  fakes (measured at their I/O events, subtracted); ``tool``: wall - in fakes, the tool's
  own cost; per node: tool / N.
* memory: tracemalloc's peak of Python allocations during the deploy (a separate run, since
  tracing slows everything), and the process's max RSS.

Linearity is judged by the ratio of medians t(500)/t(100) (5.0 = linear) and by a
least-squares fit t = a + b*N. Logs are rendered as JSON (as a non-TTY deploy does) to
/dev/null. Results: ``$BENCH_OUT/fleet_scale.json`` (default /tmp/veza-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, load, median, provenance, save, table  # noqa: E402

sys.path.insert(0, str(REPO))  # tests.settings_helper builds the settings

# Latencies (s) of one call, measured on the lab (see the module docstring).
EXEC = 0.035
PUSH = 0.070
HAPROXY = 0.040
PROM = 0.010
LB = 0.005
STATE = 0.035
RESTART = 0.30
STARTUP = 0.35
POLL_INTERVAL = 0.5


class Latency:
    """A SimFleet observer: advances the FakeClock by each call's latency; times the fakes' own work.

    A restarted node's service answers its health check (and HAProxy's) only ``STARTUP`` s
    after ``systemctl restart`` returned, as a real service does.
    """

    def __init__(self, sim) -> None:  # noqa: ANN001 - SimFleet, imported in the child only
        self.sim = sim
        self.clock = sim.clock
        self.inside = 0.0  # real seconds spent inside the fakes
        self.inside_cpu = 0.0  # CPU seconds spent inside the fakes
        self._entered_cpu = 0.0
        self.calls = 0
        self._entered: float | None = None
        self.starting: dict[str, float] = {}  # node -> simulated time its service answers
        sim.observers.append(self)
        for n in sim.nodes:
            sim.hooks[f"restart:{n}"] = self._restart_hook(n)

    def _restart_hook(self, node: str):  # noqa: ANN202
        def hook(sim) -> None:  # noqa: ANN001
            self.clock.advance(RESTART - EXEC)  # systemctl restart blocks until the unit started
            sim.broken_nodes.add(node)
            self.starting[node] = self.clock.t + STARTUP
        return hook

    def __call__(self, event: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if event.startswith("done:"):
            if self._entered is not None:
                self.inside += now - self._entered
                self.inside_cpu += cpu - self._entered_cpu
                self._entered = None
            return
        self.calls += 1
        kind = event.split(":", 1)[0]
        self.clock.advance({"node": EXEC, "push": PUSH, "haproxy": HAPROXY, "prom": PROM, "lb": LB,
                            "state": STATE}.get(kind, 0.0))
        if self.starting:
            for n in [n for n, t in self.starting.items() if t <= self.clock.t]:
                del self.starting[n]
                self.sim.broken_nodes.discard(n)
        self._entered, self._entered_cpu = time.perf_counter(), time.process_time()


class _Discard(list):
    """The simulator's command log, not kept: it is the fake's memory, not the tool's."""

    def append(self, _item: object) -> None:
        pass


def _time_haproxy_reads(lat: Latency) -> tuple[list[float], object]:
    """Time the tool's handling of HAProxy replies (``HAProxy.stat/state/view/stats/states``: building the
    command, finding and parsing the server's row or line) minus the time spent in the fake HAProxy.
    Only the outermost call counts (``view`` may call ``stat``, ``stat`` may call ``states``)."""
    from veza_canary.haproxy import HAProxy

    acc = [0.0, 0]
    depth = [0]
    originals = {name: getattr(HAProxy, name) for name in ("stat", "state", "view", "stats", "states")}
    for name, real in originals.items():

        def timed(self, *a, _real=real, **kw):  # noqa: ANN001,ANN002,ANN003,ANN202
            depth[0] += 1
            t0, f0 = time.perf_counter(), lat.inside
            try:
                return _real(self, *a, **kw)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    acc[0] += (time.perf_counter() - t0) - (lat.inside - f0)
                    acc[1] += 1
        setattr(HAProxy, name, timed)

    def undo() -> None:
        for name, real in originals.items():
            setattr(HAProxy, name, real)
    return acc, undo


def _time_gc() -> tuple[list[float], object]:
    """Total time in the garbage collector (its cost grows with the live heap)."""
    import gc

    acc, t = [0.0], [0.0]

    def cb(phase: str, _info: dict) -> None:
        if phase == "start":
            t[0] = time.perf_counter()
        else:
            acc[0] += time.perf_counter() - t[0]
    gc.callbacks.append(cb)
    return acc, lambda: gc.callbacks.remove(cb)


def _reset_peak_rss() -> int:
    """Reset the kernel's RSS high-water mark (clear_refs 5); return the RSS now (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(n: int, trace: bool) -> dict:
    from veza_canary.log import configure

    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    configure("json", stream=devnull)
    tmp = Path(tempfile.mkdtemp(prefix="veza-bench-scale-"))
    os.chdir(tmp)  # the migration gate finds no migrations directory here: nothing to lint
    # A 3-node warm-up roll first: one-off costs (lazy imports, first-use caches) are start-up, not scale.
    one_roll(3, False, tmp / "warmup", devnull)
    return one_roll(n, trace, tmp / "run", devnull)


def one_roll(n: int, trace: bool, tmp: Path, devnull) -> dict:  # noqa: ANN001
    import tracemalloc

    from tests.fakes import SimFleet, sha, sim_fleet
    from tests.settings_helper import make_settings
    from veza_canary.pipeline import execute as run_deploy

    tmp.mkdir(parents=True)
    artifact = tmp / "veza-api-new"
    # Small on purpose: the simulator keeps every node's copy of it in memory, which tracemalloc would count
    # as the tool's (11 KB a node with the 11 KB artifact this used to be). The tool's work does not depend on it.
    artifact.write_bytes(b"new-binary " * 6)
    artifact.chmod(0o755)
    names = [f"backend-api-{i}" for i in range(1, n + 1)]
    canary, peers = names[1], [x for x in names if x != names[1]]
    s = make_settings(artifact=artifact, canary_node=canary, peer_nodes=tuple(peers), sli_window=1.0,
                           sli_probe_interval=1.0, allow_short_window=True, state_dir=tmp / "state",
                           poll_interval=POLL_INTERVAL)
    sim = SimFleet(names, install_dir=s.service.install_dir)
    sim.commands = _Discard()
    lat = Latency(sim)
    fleet, sim = sim_fleet(s, sim, argv=True)  # the real Node over argv-level fakes: node.py is the tool too
    parse, undo_parse = _time_haproxy_reads(lat)
    gc_time, undo_gc = _time_gc()
    if trace:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    rss0 = _reset_peak_rss()
    t_sim0 = sim.clock.t
    c0, t0 = time.process_time(), time.perf_counter()
    code, error = 0, None
    try:
        run_deploy(s, fleet=fleet, stream=devnull)
    except Exception as exc:  # noqa: BLE001 - report the outcome, don't hide it
        code, error = int(getattr(exc, "exit_code", 1)), str(exc)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_peak = _peak_rss() - rss0
    undo_parse()  # type: ignore[operator]
    undo_gc()  # type: ignore[operator]
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    new = sha(artifact.read_bytes())
    done = all(sim.nodes[x].running_sha == new for x in names)
    return {"n": n, "code": code, "error": error, "all_on_artifact": done, "wall": wall, "cpu": cpu, "inside_fakes": lat.inside,
            "inside_fakes_cpu": lat.inside_cpu,
            "io_calls": lat.calls, "sim_s": sim.clock.t - t_sim0, "parse_s": parse[0], "parses": parse[1], "gc_s": gc_time[0],
            "peak_bytes": peak, "rss_growth_bytes": rss_peak,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def run_child(n: int, trace: bool) -> dict:
    argv = [sys.executable, __file__, "--child", str(n)] + (["--trace"] if trace else [])
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"child N={n} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--trace-runs", type=int, default=1, help="runs under tracemalloc per size (slow at N=500)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.trace)))
        return

    sizes = [int(x) for x in args.sizes.split(",")]
    load0 = load()
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    mem: dict[int, list[dict]] = {n: [] for n in sizes}
    for i in range(args.runs):
        for n in sizes:
            runs[n].append(run_child(n, trace=False))
        print(f"round {i + 1}/{args.runs} done", file=sys.stderr)
    for _ in range(args.trace_runs):
        for n in sizes:
            mem[n].append(run_child(n, trace=True))

    def m(n: int, key: str) -> float:
        return median([r[key] for r in runs[n]])

    def tool(n: int) -> float:
        return median([r["wall"] - r["inside_fakes"] for r in runs[n]])

    def cpu(n: int) -> float:
        return median([r["cpu"] - r["inside_fakes_cpu"] for r in runs[n]])

    def heap(n: int) -> float:
        return median([r["peak_bytes"] for r in mem[n]]) if mem[n] else float("nan")

    def marginal(n: int) -> str:
        """Peak heap per node past the smallest size (the fixed part of the heap left out)."""
        return "-" if n == sizes[0] else f"{(heap(n) - heap(sizes[0])) / (n - sizes[0]) / 1024:.1f}"

    rows = []
    for n in sizes:
        outcomes = {(r["code"], r["all_on_artifact"]) for r in runs[n] + mem[n]}
        if outcomes != {(0, True)}:
            sys.exit(f"N={n}: a deploy did not succeed on every node: {outcomes} "
                     f"{[r['error'] for r in runs[n] if r['error']][:1]}")
        sim_s = m(n, "sim_s")
        rows.append([n, f"{sim_s:.0f}", f"{sim_s / n:.2f}", f"{m(n, 'wall'):.2f}", f"{m(n, 'inside_fakes'):.2f}",
                     f"{tool(n):.3f}", f"{tool(n) / n * 1000:.2f}", f"{cpu(n):.3f}", f"{cpu(n) / n * 1000:.2f}",
                     f"{m(n, 'parse_s') / n * 1000:.3f}", f"{m(n, 'gc_s'):.3f}", f"{m(n, 'io_calls') / n:.0f}",
                     f"{m(n, 'rss_growth_bytes') / 2**20:.1f}", f"{heap(n) / 2**20:.2f}",
                     marginal(n)])
    header = ["nodes", "simulated roll (s)", "simulated s/node", "wall (s)", "in fakes (s)", "tool (s)",
              "tool ms/node", "tool CPU (s)", "tool CPU ms/node", "of which HAProxy reads, ms/node", "GC (s)",
              "I/O calls/node", "peak RSS growth (MiB)", "peak heap (MiB)", f"peak heap KiB per node past N={sizes[0]}"]
    md = [f"Measured: {provenance(load0)}. {args.runs} runs per size (medians), sizes interleaved, each run a "
          f"fresh process; peak heap (tracemalloc) from {args.trace_runs} traced run(s) per size.", "",
          table(header, rows), ""]
    lo, hi = (100, 500) if {100, 500} <= set(sizes) else (sizes[-2], sizes[-1])
    small = sizes[0]
    ns = [float(n) for n in sizes]
    a, b = fit(ns, [tool(n) for n in sizes])
    ac, bc = fit(ns, [cpu(n) for n in sizes])
    ah, bh = fit(ns, [heap(n) for n in sizes]) if all(mem[n] for n in sizes) else (float("nan"),) * 2
    result = {"runs": runs, "mem": mem, "fit_tool_s": [a, b], "fit_tool_cpu_s": [ac, bc],
              "fit_heap_bytes": [ah, bh],
              "ratio_tool": tool(hi) / tool(lo), "ratio_tool_cpu": cpu(hi) / cpu(lo),
              "per_node_cpu_ratio": (cpu(hi) / hi) / (cpu(small) / small),
              "ratio_sim": m(hi, "sim_s") / m(lo, "sim_s"),
              "ratio_rss": m(hi, "rss_growth_bytes") / m(lo, "rss_growth_bytes"),
              "ratio_heap": heap(hi) / heap(lo) if mem[hi] else None,
              "latencies": {"exec": EXEC, "push": PUSH, "haproxy": HAPROXY, "prom": PROM, "lb": LB, "state": STATE,
                            "restart": RESTART, "startup": STARTUP, "poll_interval": POLL_INTERVAL}}
    heap_ratio = f"{result['ratio_heap']:.2f}" if result["ratio_heap"] else "n/a"
    md.append(f"Ratios N={hi} / N={lo} (linear = {hi / lo:g}): simulated roll time {result['ratio_sim']:.2f}; "
              f"tool time {result['ratio_tool']:.2f}, tool CPU {result['ratio_tool_cpu']:.2f}; peak heap {heap_ratio}; "
              f"peak RSS growth {result['ratio_rss']:.2f}. CPU per node at N={hi} / at N={small}: "
              f"{result['per_node_cpu_ratio']:.2f} (flat = 1). Least-squares fits: the tool's CPU "
              f"{ac * 1000:.0f} ms + {bc * 1000:.2f} ms x N; the peak heap "
              f"{ah / 2**20:.2f} MiB + "
              f"{bh / 1024:.1f} KiB x N.")
    text = "\n".join(md)
    print(text)
    save("fleet_scale", result, text)


if __name__ == "__main__":
    main()
