"""Side-by-side benchmark: veza-canary lint-migrations vs squawk-cli on the same corpus.

    .venv/bin/pip install squawk-cli            # the `bench` extra
    .venv/bin/python bench/gen_corpus.py /tmp/veza-lint-corpus --files 2000
    .venv/bin/python bench/lint_bench.py /tmp/veza-lint-corpus --runs 7

Each round runs, interleaved so machine load hits every tool alike:

* squawk on every ``*.up.sql`` file (one process, all paths on the command line);
* veza-canary ``--all`` with an empty cache (cold: parses everything, writes the cache);
* veza-canary ``--all --no-cache`` (cold, no cache writes);
* veza-canary ``--all`` with the cache filled by the cold run (warm);
* veza-canary on the 3 newest files (a typical deploy), history = the rest, cold and warm.

Wall-clock times of whole processes, start-up included, and their CPU time (user +
sys, which machine load does not inflate the way it inflates wall time). Prints
medians and minimums as a Markdown table. Nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """Wall-clock and CPU (user+sys of the child) seconds, and the exit code."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, proc.returncode


def phases(corpus: Path) -> None:
    """CPU seconds per phase of a cold, single-process lint of the corpus (in this process)."""
    t0 = time.process_time()
    import sqlglot  # noqa: F401

    from veza_canary.migrations import engine
    from veza_canary.migrations.analyze import _dialect, _first_words, analyze_text
    from veza_canary.migrations.parse import lex_file, normalize_text
    from veza_canary.migrations.rules import load_rules

    load_rules()
    t_import = time.process_time() - t0
    files = engine.up_files(corpus)
    texts = [engine.read_sql(p).decode() for p in files]
    t = time.process_time()
    lexed = [lex_file(normalize_text(x)) for x in texts]
    t_lex = time.process_time() - t
    ddl = [st.code for lf in lexed for st in lf.statements
           if (_first_words(st.skeleton, 1) or [""])[0] in ("CREATE", "ALTER", "DROP")]
    glot = _dialect("postgres")
    t = time.process_time()
    for c in ddl:
        glot.parse(c)
    t_parse = time.process_time() - t
    wide = [c for c in ddl if c.lstrip()[:12].upper() == "CREATE TABLE"]
    t = time.process_time()
    for c in wide:
        glot.parse(c)
    t_wide = time.process_time() - t
    t = time.process_time()
    for x in texts:
        analyze_text(x, "postgres")
    t_analyze = time.process_time() - t
    t = time.process_time()
    engine.run(files, [], engine.LintOptions(cache=False), each_own_set=True)
    t_run = time.process_time() - t
    print("| phase (CPU, one process) | s |\n| --- | ---: |")
    print(f"| imports (sqlglot, linter, rules) | {t_import:.3f} |")
    print(f"| splitting {len(files)} files into statements | {t_lex:.3f} |")
    print(f"| sqlglot tokenize+parse of {len(ddl)} DDL statements | {t_parse:.3f} |")
    print(f"| ... of which {len(wide)} CREATE TABLE | {t_wide:.3f} |")
    print(f"| analysis (split + parse + AST to changes) | {t_analyze:.3f} |")
    print(f"| whole lint (read, analyse, replay, judge) | {t_run:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--phases", action="store_true", help="Print CPU time per phase instead.")
    args = ap.parse_args()
    corpus = args.corpus.resolve()
    if args.phases:
        phases(corpus)
        return
    files = sorted(str(p) for p in corpus.glob("*.up.sql"))
    if not files:
        sys.exit(f"no *.up.sql in {corpus}; run bench/gen_corpus.py first")
    squawk = shutil.which("squawk", path=str(VENV_BIN)) or shutil.which("squawk")
    veza = str(VENV_BIN / "veza-canary")
    if squawk is None:
        sys.exit("squawk not found: pip install squawk-cli (the `bench` extra)")
    version = subprocess.run([squawk, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    # As `make install` does: an editable install is never byte-compiled by pip, and with
    # PYTHONDONTWRITEBYTECODE set every run would compile the package from source.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "veza_canary")],
                   check=True, stdout=subprocess.DEVNULL)
    base_env = {k: v for k, v in os.environ.items() if k not in ("FORCE_MIGRATE", "VEZA_CANARY_CONFIG")}
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    codes: dict[str, set[int]] = {}
    newest = files[-3:]

    def rec(name: str, argv: list[str], env: dict[str, str]) -> None:
        dt, cpu, rc = timed(argv, env, corpus)
        times.setdefault(name, []).append(dt)
        cpus.setdefault(name, []).append(cpu)
        codes.setdefault(name, set()).add(rc)

    with tempfile.TemporaryDirectory(prefix="veza-bench-") as tmp:
        for i in range(args.runs):
            cache = Path(tmp) / f"cache-{i}"
            env = {**base_env, "XDG_CACHE_HOME": str(cache)}
            rec("squawk, all files", [squawk, *files], base_env)
            rec("veza-canary --all, cold (empty cache)", [veza, "lint-migrations", "--dir", str(corpus), "--all"], env)
            rec("veza-canary --all --no-cache", [veza, "lint-migrations", "--dir", str(corpus), "--all",
                                                 "--no-cache"], env)
            rec("veza-canary --all, warm cache", [veza, "lint-migrations", "--dir", str(corpus), "--all"], env)
            cache3 = Path(tmp) / f"cache3-{i}"
            env3 = {**base_env, "XDG_CACHE_HOME": str(cache3)}
            rec("veza-canary 3 new files, cold", [veza, "lint-migrations", "--dir", str(corpus), *newest], env3)
            rec("veza-canary 3 new files, warm", [veza, "lint-migrations", "--dir", str(corpus), *newest], env3)
            rec("squawk, 3 new files", [squawk, *newest], base_env)
            rec("veza-canary --help", [veza, "--help"], base_env)
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(cache3, ignore_errors=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"corpus: {len(files)} files, {sum(Path(f).stat().st_size for f in files) / 1e6:.1f} MB; "
          f"{args.runs} rounds; {version}; {os.cpu_count()} CPUs; load after run {load:.2f}\n")
    print("| run | wall median (s) | wall min (s) | CPU median (s) | exit codes |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} | {statistics.median(cpus[name]):.3f} "
              f"| {sorted(codes[name])} |")


if __name__ == "__main__":
    main()
