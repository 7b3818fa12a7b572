"""Shared helpers of the benchmarks: statistics, where the figures came from, where results go.

Every benchmark writes ``OUT/<name>.json`` (``OUT`` is ``$BENCH_OUT`` or ``/tmp/veza-bench``,
outside the repository) holding its raw samples, its summary and a rendered Markdown block;
``bench/report.py`` copies the Markdown blocks into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
VEZA = str(VENV_BIN / "veza-canary")


def out_dir() -> Path:
    d = Path(os.environ.get("BENCH_OUT") or "/tmp/veza-bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def q(xs: list[float], p: float) -> float:
    """The p-quantile (0..1) by linear interpolation; NaN for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def commit() -> str:
    """HEAD's short hash, with ``+dirty`` when a file the benchmarks exercise differs from it.

    ``$BENCH_COMMIT`` names it instead, for a run from an exported snapshot (``git archive HEAD``, no
    .git): the shared working tree changes under a long benchmark, a snapshot does not.
    """
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"] + " (snapshot)"
    try:
        h = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "veza_canary", "bench"], cwd=REPO,
                               capture_output=True, text=True, check=False).stdout.splitlines()
        # The tree is shared with other engineers: say which files differed from the commit.
        return h + (f"+dirty: {', '.join(line[3:] for line in dirty)}" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem": mem, "kernel": platform.release(),
            "python": platform.python_version(), "os": _os_name()}


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def load() -> float:
    return os.getloadavg()[0]


def provenance(load_before: float) -> str:
    """One line: commit, date, machine, load before and after (these machines are shared and noisy)."""
    m = machine()
    return (f"commit `{commit()}`, {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC; {m['cpus']} x {m['cpu']}, "
            f"{m['mem']}, {m['os']}, Python {m['python']}; 1-min load {load_before:.2f} before, {load():.2f} after")


def save(name: str, data: dict[str, Any], markdown: str) -> Path:
    path = out_dir() / f"{name}.json"
    data = {**data, "name": name, "commit": commit(), "machine": machine(), "markdown": markdown}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nresults: {path}")
    return path


def table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one char per column, l or r (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def knob_env() -> set[str]:
    """Every env var the tool reads as a knob (stripped from child environments)."""
    from veza_canary.settings import KNOBS

    return {k.env for k in KNOBS} | {"VEZA_CANARY_CONFIG"}


def clean_env(**extra: str) -> dict[str, str]:
    drop = knob_env()
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


# --- the lab (root only) ------------------------------------------------------------------------


class LabSkipped(Exception):
    """The lab parts cannot run here (not root, a component missing, ...)."""


def wait_quiet(max_wait: float, threshold: float) -> float:
    """Wait (up to ``max_wait`` s) for the 1-minute load to drop under ``threshold``; return the load."""
    import time

    deadline = time.monotonic() + max_wait
    while load() >= threshold and time.monotonic() < deadline:
        print(f"waiting for a quieter machine: 1-min load {load():.2f} >= {threshold:g}", file=sys.stderr)
        time.sleep(15)
    return load()


class LabSession:
    """Hold the shared lab for a benchmark: users lock (shared) + ``exclusive_lab()``; restore it after.

    Enter: bring the lab up or reconcile it (``lab_up``: back to its baseline), reset its state dir,
    wait until every node is ready, UP and green. Exit: reset the state dir, ``restore_node`` every
    node, wait until all are ready and UP; take the lab down only if this session brought it up and
    no other session uses it (unless ``BENCH_LAB_KEEP`` is set).
    """

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise LabSkipped("the lab needs root")
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from veza_canary.lab import missing_components

        missing = missing_components()
        if missing and not (REPO / "scripts" / "install-system-deps.sh").exists():
            raise LabSkipped(f"missing for the lab: {', '.join(missing)}")

    def __enter__(self) -> LabSession:
        import fcntl

        from tests.integration.conftest import USERS_LOCK_PATH, exclusive_lab
        from tests.integration.deploy_helpers import reset_state_dir, wait_all_up, wait_sli_green
        from veza_canary.lab import LabConfig, LabUnavailable, lab_status, lab_up
        from veza_canary.log import configure

        configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - the lab API logs; not here
        self._users = open(USERS_LOCK_PATH, "w")  # noqa: SIM115 - held for the session
        fcntl.flock(self._users, fcntl.LOCK_SH)
        self._excl = exclusive_lab()
        print("waiting for the lab (exclusive_lab) ...", file=sys.stderr)
        self._excl.__enter__()
        try:
            self.was_up = bool(lab_status().containers)
            try:
                info = lab_up(LabConfig(), progress=lambda line: print(f"lab: {line}", file=sys.stderr))
            except LabUnavailable as exc:
                raise LabSkipped(f"{exc} ({exc.hint})") from exc
            self.info = info
            self.env = dict(info.env)
            self.nodes = list(info.nodes)
            reset_state_dir(self.env)
            wait_all_up(self.env)
            wait_sli_green(self.env)
        except BaseException:
            self._excl.__exit__(*sys.exc_info())
            self._users.close()
            raise
        return self

    def between_runs(self, **knobs: str) -> None:
        """Back to a clean start: no lock or blocked release, every node ready, UP and green (judged
        with ``knobs`` over the lab's env, e.g. the next run's SLI_RATE_WINDOW)."""
        from tests.integration.deploy_helpers import reset_state_dir, wait_all_up, wait_sli_green
        from veza_canary.transport import IncusTransport

        reset_state_dir(self.env)
        # The lab's unit allows 3 starts in 20 s; back-to-back benchmark runs restart every node every few
        # seconds, which no real fleet does: clear systemd's start-limit counter, as 20 s of quiet would.
        for n in self.nodes:
            IncusTransport(n).run(("systemctl", "reset-failed", self.env.get("SERVICE_NAME", "veza-backend-api")),
                                  check=False)
        wait_all_up(self.env)
        wait_sli_green({**self.env, **knobs}, timeout=180)

    def __exit__(self, *exc: object) -> None:
        import fcntl

        from tests.integration.deploy_helpers import reset_state_dir, wait_all_up
        from veza_canary.lab import lab_down, restore_node

        try:
            reset_state_dir(self.env)
            for n in self.nodes:
                restore_node(n)
            wait_all_up(self.env)
            print("lab restored: 1.0.0 on every node, all ready and UP", file=sys.stderr)
            if not self.was_up and not os.environ.get("BENCH_LAB_KEEP"):
                try:
                    fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print("lab left up: another session uses it", file=sys.stderr)
                else:  # we brought it up and nobody else uses it; we hold the users lock ourselves
                    lab_down(force=True, progress=lambda line: print(f"lab: {line}", file=sys.stderr))
        finally:
            self._excl.__exit__(None, None, None)
            self._users.close()


def parse_ts(s: str) -> float:
    """An ISO timestamp (log line or report) as POSIX seconds."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def log_lines(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a ``--log-format json`` run, each with ``t`` (POSIX seconds) added."""
    out = []
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "timestamp" in d:
            d["t"] = parse_ts(d["timestamp"])
            out.append(d)
    return out
