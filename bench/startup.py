"""Start-up: how long a command takes from exec to exit, and what it imports.

    .venv/bin/python bench/startup.py [--runs 15] [--no-lab]

Commands (whole processes through the installed ``veza-canary`` entry point), run in
interleaved rounds so machine load hits each alike:

* ``python -c pass``: the interpreter's own floor on this machine;
* ``veza-canary --help``;
* ``veza-canary lint-migrations <one file>``: warm (analysis cache filled) and cold (``--no-cache``);
* ``veza-canary status`` against the lab (read-only; skipped when the lab is not up).

Wall time (median, min) and CPU time of the child (user + sys; machine load inflates it
far less than wall time). Then one ``python -X importtime`` run per command: the time spent
importing and whether the heavy optional modules were imported (paramiko, sqlglot, rich;
httpx and structlog for reference). Results: ``$BENCH_OUT/startup.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VEZA, clean_env, load, median, provenance, save, table  # noqa: E402

HEAVY = ("paramiko", "sqlglot", "rich", "httpx", "structlog")
MIGRATION = """-- a typical small migration
CREATE TABLE track_plays (
    id bigserial PRIMARY KEY,
    track_id bigint NOT NULL REFERENCES tracks (id),
    user_id bigint NOT NULL,
    played_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX CONCURRENTLY track_plays_track ON track_plays (track_id);
"""


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        check=False).returncode
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), rc


def imports(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, list[str], list[tuple[str, float]]]:
    """(total import seconds, heavy modules imported, the 5 costliest top-level imports) of one run."""
    script = argv[1:] if argv[0] == sys.executable else argv
    r = subprocess.run([sys.executable, "-X", "importtime", *script], env=env, cwd=cwd, capture_output=True,
                       text=True, check=False)
    total, heavy, top = 0.0, set(), []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _self, cum, name = line.split("|")
        indent = len(name) - len(name.lstrip())
        name = name.strip()
        if name.split(".")[0] in HEAVY:
            heavy.add(name.split(".")[0])
        if indent == 1:  # a top-level import (of the program itself)
            total += int(cum) / 1e6
            top.append((name, int(cum) / 1e6))
    top.sort(key=lambda x: -x[1])
    return total, sorted(heavy), top[:5]


def lab_env() -> dict[str, str] | None:
    try:
        from veza_canary.lab import lab_env as env
        from veza_canary.log import configure

        configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - the lab API logs; not here
        from veza_canary.lab import lab_status

        st = lab_status()
        if not st.containers or not st.servers:
            print(f"status: lab not up ({'; '.join(st.problems)}); skipped", file=sys.stderr)
            return None
        return env()
    except Exception as exc:  # noqa: BLE001 - any reason the lab is not there means "skip"
        print(f"status: lab not available ({exc}); skipped", file=sys.stderr)
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--no-lab", action="store_true", help="skip `status` against the lab")
    args = ap.parse_args()
    load0 = load()
    tmp = Path(tempfile.mkdtemp(prefix="veza-bench-startup-"))
    (tmp / "migrations").mkdir()
    mig = tmp / "migrations" / "000001_track_plays.up.sql"
    mig.write_text(MIGRATION)
    base = clean_env(XDG_CACHE_HOME=str(tmp / "cache"), XDG_STATE_HOME=str(tmp / "state"))
    lint = [VEZA, "lint-migrations", "--dir", "migrations", str(mig.relative_to(tmp))]
    cmds: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass (interpreter floor)": ([sys.executable, "-c", "pass"], base),
        "veza-canary --help": ([VEZA, "--help"], base),
        "veza-canary lint-migrations <1 file>, warm cache": (lint, base),
        "veza-canary lint-migrations <1 file>, cold (--no-cache)": ([*lint, "--no-cache"], base),
    }
    lab = None if args.no_lab else lab_env()
    if lab is not None:
        cmds["veza-canary status (lab: 3 nodes)"] = ([VEZA, "status"], {**base, **lab})
    subprocess.run(lint, env=base, cwd=tmp, capture_output=True, check=False)  # fill the cache for "warm"

    wall: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    codes: dict[str, set[int]] = {k: set() for k in cmds}
    for _ in range(args.runs):
        for name, (argv, env) in cmds.items():
            w, c, rc = timed(argv, env, tmp)
            wall[name].append(w)
            cpu[name].append(c)
            codes[name].add(rc)
    imp = {name: imports(argv, env, tmp) for name, (argv, env) in cmds.items()}

    rows = []
    for name in cmds:
        total, heavy, _ = imp[name]
        rows.append([name, f"{median(wall[name]):.3f}", f"{min(wall[name]):.3f}", f"{median(cpu[name]):.3f}",
                     f"{total:.3f}", ", ".join(heavy) or "none", ",".join(map(str, sorted(codes[name])))])
    header = ["command", "wall median (s)", "wall min (s)", "CPU median (s)", "imports (s, one run)",
              "heavy modules imported", "exit"]
    help_med = median(wall["veza-canary --help"])
    help_cpu = median(cpu["veza-canary --help"])
    verdict = "met" if help_med < 0.25 else ("met on CPU time, not on wall time (load)" if help_cpu < 0.25
                                              else "NOT met")
    top = "; ".join(f"{n} {t * 1000:.0f} ms" for n, t in imp["veza-canary --help"][2])
    md = [f"Measured: {provenance(load0)}. {args.runs} interleaved rounds.", "",
          table(header, rows, "lrrrrll"), "",
          f"`--help` target (< 0.25 s): {verdict} (median wall {help_med:.3f} s, CPU {help_cpu:.3f} s). "
          f"Costliest top-level imports of `--help` in one run: {top}."]
    text = "\n".join(md)
    print(text)
    save("startup", {"runs": args.runs, "wall": wall, "cpu": cpu, "codes": {k: sorted(v) for k, v in codes.items()},
                     "imports": imp, "help_target_met": help_med < 0.25}, text)


if __name__ == "__main__":
    os.environ.pop("VEZA_CANARY_CONFIG", None)
    main()
