"""The fault suite on the real lab: each fault injected for real, each outcome read back from live state.

Every test runs ``veza-canary deploy`` as a subprocess (real signals, real exit codes)
against the Incus lab, injects one fault (or a few that one deploy can prove together),
and then asserts, from HAProxy's runtime API and each node's files (never only from the
tool's own report):

* the documented exit code (README / errors.py);
* which node runs which binary, and that every node is ready and UP, unless the
  documented outcome says a node stays drained (exit 7, a failed peer) -- and then the
  report and the one-line message say so;
* no temp file in any install dir, no fleet lock left behind;
* the report names what happened.

Faults that need a precise moment (mid-push) use a fault-injecting ``incus`` wrapper put
first on the tool's PATH (and on the SSH session's PATH for the SSH test): it can pause a
push before or after the real ``incus file push``, or push corrupted bytes. Everything
else is the real thing: Prometheus stopped with systemctl, HAProxy restarted, the admin
socket moved away, the canary container stopped, a tmpfs mounted over the install dir, a
connection held open through HAProxy, SIGINT/SIGTERM/SIGKILL sent to the tool.

The exhaustive "every step" matrices run on the simulator (tests/unit/test_faults_sim.py);
here is a representative subset. Each test holds ``exclusive_lab()`` and puts the lab
back to its baseline (1.0.0 everywhere, ready and UP, no lock, no blocked release).
Results and timings: docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.deploy_helpers import (
    VC,
    DeployRun,
    deploy_env,
    exclusive_lab,
    reset_state_dir,
    wait_all_up,
    wait_sli_green,
)
from veza_canary.haproxy import HAProxy, IncusSocat
from veza_canary.lab import Faults, build_standin, restore_node
from veza_canary.node import Node
from veza_canary.transport import IncusTransport

pytestmark = [pytest.mark.integration, pytest.mark.lab]

INSTALL_DIR = "/opt/veza/backend-api"
KEEP = {"veza-api", "veza-api.previous", ".veza-api.last-good"}
STATE_DIR = "/var/lib/veza-canary"
#: Short windows: a good deploy takes ~13 s on the lab.
FAST = {"SLI_WINDOW": "6", "SLI_PROBE_INTERVAL": "2", "NODE_HEALTH_TIMEOUT": "8", "UP_TIMEOUT": "15",
        "DRAIN_TIMEOUT": "15", "POLL_INTERVAL": "0.25"}

WRAPPER = r"""#!/bin/bash
# Fault-injecting stand-in for incus (tests/integration/test_faults_lab.py only).
# $VEZA_FAULT_DIR/push holds one instruction for the next push into NODE's install dir:
#   NODE pause-before SECONDS | NODE pause-after SECONDS | NODE corrupt
real=@REAL@
dir=${VEZA_FAULT_DIR:-}
if [ -n "$dir" ] && [ "$1" = -q ] && [ "$2" = file ] && [ "$3" = push ] && [ -f "$dir/push" ]; then
  target=${@: -1}
  src=${@: -2:1}
  read -r node action secs < "$dir/push"
  case "$target" in
    "$node"/opt/veza/backend-api/*)
      rm -f "$dir/push"
      case "$action" in
        pause-before) touch "$dir/pushing"; sleep "$secs" ;;
        pause-after) "$real" "$@"; rc=$?; touch "$dir/pushed"; sleep "$secs"; exit $rc ;;
        corrupt) cp -- "$src" "$dir/corrupt.bin"; printf 'X' >> "$dir/corrupt.bin"
                 set -- "${@:1:$(($# - 2))}" "$dir/corrupt.bin" "$target" ;;
      esac ;;
  esac
fi
exec "$real" "$@"
"""


# --- live state ---------------------------------------------------------------------------------------


def _haproxy(env: dict[str, str]) -> HAProxy:
    return HAProxy(IncusSocat(IncusTransport(env["HAPROXY_CONTAINER"]), env["HAPROXY_SOCKET"]), env["POOL_BACKEND"])


def _node(name: str) -> Node:
    return Node(name, IncusTransport(name), install_dir=INSTALL_DIR, restart_argv=("true",),
                health_url="http://127.0.0.1:8080/api/v1/health")


def install_dir_extras(node: str) -> list[str]:
    """Anything in the install dir but the binary and veza-api.previous (temp files, partial pushes)."""
    for _ in range(3):  # incus exec drops stdout now and then; ls of a non-empty dir never prints nothing
        r = IncusTransport(node).run(("ls", "-1A", "--", INSTALL_DIR), check=False)
        if r.stdout.strip() or not r.ok:
            break
    return sorted(set(r.stdout.split()) - KEEP)


@dataclass(frozen=True)
class NodeState:
    admin: str  # ready | drain | maint | unknown
    status: str  # UP, DOWN, DRAIN, MAINT, ... (HAProxy's show stat)
    sha256: str | None
    extras: tuple[str, ...]

    @property
    def in_rotation(self) -> bool:
        return self.admin == "ready" and self.status.startswith("UP")


def live(env: dict[str, str], nodes: list[str]) -> dict[str, NodeState]:
    h = _haproxy(env)
    states, stats = h.states(), h.stats()
    return {n: NodeState(states[n].admin, stats[n].status, _node(n).sha256(), tuple(install_dir_extras(n)))
            for n in nodes}


def lock_present(env: dict[str, str]) -> bool:
    r = IncusTransport(env["HAPROXY_CONTAINER"]).run(("test", "-e", f"{STATE_DIR}/lock.json"), check=False)
    return r.exit_code == 0


def blocked_releases(env: dict[str, str]) -> list[str]:
    r = IncusTransport(env["HAPROXY_CONTAINER"]).run(("ls", "-1", f"{STATE_DIR}/blocked"), check=False)
    return [ln.removesuffix(".json") for ln in r.stdout.split() if ln.endswith(".json")]


def sha_of(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def wait_until(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll ``pred`` (errors count as "not yet": HAProxy restarting, a container booting)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            if pred():
                return
        except Exception as exc:  # noqa: BLE001
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last})")
        time.sleep(interval)


# --- a deploy running in the background ------------------------------------------------------------------


class Running:
    """A deploy subprocess whose JSON log lines are collected by a thread (so the pipe never fills)."""

    def __init__(self, env: dict[str, str], artifact: Path, report: Path, *extra: str) -> None:
        self.report_path = report
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*VC, "--log-format", "json", "deploy", "--yes", "--artifact", str(artifact), "--report", str(report),
             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._out: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def saw(self, needle: str) -> bool:
        return any(needle in ln for ln in list(self.lines))

    def wait_log(self, needle: str, timeout: float = 60) -> None:
        wait_until(lambda: self.saw(needle) or self.proc.poll() is not None, timeout, f"log line {needle!r}")
        assert self.saw(needle), f"deploy ended (exit {self.proc.returncode}) before {needle!r}: {self.tail()}"

    def events(self) -> list[dict]:
        out = []
        for ln in list(self.lines):
            try:
                out.append(json.loads(ln))
            except ValueError:
                continue
        return out

    def wait_event(self, pred: Callable[[dict], bool], what: str, timeout: float = 60) -> None:
        wait_until(lambda: any(pred(e) for e in self.events()) or self.proc.poll() is not None, timeout, what)
        assert any(pred(e) for e in self.events()), f"deploy ended (exit {self.proc.returncode}) before {what}"

    def wait_file(self, path: Path, timeout: float = 60) -> None:
        wait_until(lambda: path.exists() or self.proc.poll() is not None, timeout, str(path))
        assert path.exists(), f"deploy ended (exit {self.proc.returncode}) before {path.name}: {self.tail()}"

    def tail(self, n: int = 8) -> str:
        return "".join(self.lines[-n:])[-3000:]

    def finish(self, timeout: float = 240) -> DeployRun:
        self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=10)
        report = json.loads(self.report_path.read_text()) if self.report_path.exists() else {}
        return DeployRun(self.proc.returncode, "".join(self._out), "".join(self.lines), report)


# --- the fixture ------------------------------------------------------------------------------------------


@dataclass
class FaultLab:
    env: dict[str, str]
    tmp: Path
    nodes: list[str]
    canary: str
    peers: list[str]
    baseline: Path
    fault_dir: Path
    wrapper_dir: Path
    undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    runs: int = 0

    def deploy_env(self, **overrides: str) -> dict[str, str]:
        e = deploy_env(self.env, **{**FAST, **overrides})
        e["PATH"] = f"{self.wrapper_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        # The faults are injected by an `incus` wrapper on PATH: the Incus CLI, not the REST API on the socket.
        e["VEZA_CANARY_INCUS_CLI"] = "1"
        e["VEZA_FAULT_DIR"] = str(self.fault_dir)
        e["STATE_DIR"] = str(self.tmp / "state")
        return e

    def start(self, artifact: Path, *extra: str, env: dict[str, str] | None = None, **overrides: str) -> Running:
        self.runs += 1
        return Running(env or self.deploy_env(**overrides), artifact, self.tmp / f"report-{self.runs}.json", *extra)

    def deploy(self, artifact: Path, *extra: str, **overrides: str) -> DeployRun:
        return self.start(artifact, *extra, **overrides).finish()

    def push_fault(self, node: str, action: str, seconds: float = 0) -> None:
        (self.fault_dir / "push").write_text(f"{node} {action} {seconds:g}\n")

    def on_teardown(self, what: str, fn: Callable[[], None]) -> None:
        self.undo.append((what, fn))

    def state(self) -> dict[str, NodeState]:
        return live(self.env, self.nodes)

    def assert_consistent(self, run: DeployRun, *, code: int, shas: dict[str, str],
                          drained: tuple[str, ...] = (), needle: str = "") -> dict[str, NodeState]:
        """The invariants of docs/reliability.md, from live state; ``drained`` = documented exceptions."""
        assert run.code == code, f"exit {run.code}, expected {code}: {run.stderr[-3000:]}"
        assert run.report.get("exit_code") == code, run.report.get("exit_code")
        if needle:
            assert needle in run.report.get("message", ""), run.report.get("message")
            errs = [ln for ln in run.stderr.splitlines() if ln.startswith("veza-canary: error:")]
            assert code == 0 or (len(errs) == 1 and needle in errs[0]), errs
        st = self.state()
        for n in self.nodes:
            assert not st[n].extras, f"{n}: left in {INSTALL_DIR}: {st[n].extras}"
            assert st[n].sha256 == shas[n], f"{n} runs {st[n].sha256}, expected {shas[n]}"
            if n in drained:
                assert st[n].admin == "drain", f"{n} should be left drained: {st[n]}"
                assert n in run.report["message"] and "DRAIN" in run.report["message"].upper()
            else:
                assert st[n].admin == "ready", f"{n} left out of rotation: {st[n]}"
        if not drained:
            wait_until(lambda: all(s.in_rotation for s in self.state().values()), 20, "every node UP")
        assert not lock_present(self.env), "fleet lock left behind"
        reported = run.report["final_state"]
        for n in self.nodes:
            r = reported["nodes"][n]
            assert r["sha256"] == st[n].sha256, (n, r)
            # HAProxy unreachable at the end (the fault itself): "unknown" is the truthful answer.
            assert r["admin"] == st[n].admin or (r["admin"] == "unknown" and "haproxy_error" in reported), (n, r)
        return st


def _wrapper_dir(tmp: Path) -> Path:
    d = tmp / "wrapper-bin"
    d.mkdir(exist_ok=True)
    real = shutil.which("incus")
    assert real, "incus not on PATH"
    w = d / "incus"
    w.write_text(WRAPPER.replace("@REAL@", real))
    w.chmod(0o755)
    return d


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fault-builds")
    specs = {
        "good": ("1.5.0", Faults()),
        "good2": ("1.5.1", Faults()),
        "good3": ("1.5.2", Faults()),
        "good4": ("1.5.3", Faults()),
        "good5": ("1.5.4", Faults()),
        "health500": ("1.5.8", Faults(health_status=500)),
        "fail_start": ("1.5.9", Faults(fail_start=True)),
        "rollback_broken": ("0.8.0", Faults(fail_start=True)),
    }
    out = {k: build_standin(v, f, d / f"veza-api-{v}") for k, (v, f) in specs.items()}
    big = d / "veza-api-1.5.5-big"  # a healthy build of 96 KiB: more than the tiny disk has free
    big.write_text(out["good"].read_text().replace("1.5.0", "1.5.5") + "#" + "x" * 96 * 1024 + "\n")
    big.chmod(0o755)
    out["big"] = big
    return out


@pytest.fixture
def flab(lab, tmp_path) -> Iterator[FaultLab]:
    with exclusive_lab():
        from veza_canary.lab import restore_node

        env = dict(lab.env)
        nodes = [env["CANARY_NODE"], *env["PEER_NODES"].split()]
        reset_state_dir(env)
        for n in nodes:
            for x in install_dir_extras(n):
                IncusTransport(n).run(("rm", "-f", "--", f"{INSTALL_DIR}/{x}"))
        baseline = tmp_path / "veza-api-baseline"
        IncusTransport(env["CANARY_NODE"]).pull(f"{INSTALL_DIR}/veza-api", baseline)
        baseline.chmod(0o755)
        env["ROLLBACK_BINARY"] = str(baseline)
        fault_dir = tmp_path / "faults"
        fault_dir.mkdir()
        fl = FaultLab(env=env, tmp=tmp_path, nodes=nodes, canary=nodes[0], peers=nodes[1:], baseline=baseline,
                      fault_dir=fault_dir, wrapper_dir=_wrapper_dir(tmp_path))
        wait_until(lambda: all(s.in_rotation and s.sha256 == sha_of(baseline) for s in fl.state().values()),
                   60, "the lab at its baseline")
        wait_sli_green(fl.env)  # a test before may have left a red SLI in the rate window: preflight would refuse
        try:
            yield fl
        finally:
            problems = []
            for what, fn in reversed(fl.undo):
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - undo everything, then report
                    problems.append(f"{what}: {exc}")
            reset_state_dir(env)
            for n in nodes:
                for x in install_dir_extras(n):
                    IncusTransport(n).run(("rm", "-f", "--", f"{INSTALL_DIR}/{x}"))
                restore_node(n)
            wait_until(lambda: all(s.in_rotation and s.sha256 == sha_of(baseline) for s in fl.state().values()),
                       60, "the lab back at its baseline")
            assert not problems, problems


def baseline_shas(fl: FaultLab) -> dict[str, str]:
    return dict.fromkeys(fl.nodes, sha_of(fl.baseline))


def _systemctl(ct: str, *args: str) -> None:
    IncusTransport(ct).run(("systemctl", *args), timeout=60)


def _watch_probe_passed() -> Callable[[dict], bool]:
    """A predicate: a probe of the deploy's watch that did not fail. The preflight's snapshot logs probes too,
    so only probes logged after the watch's first ``sli.stage`` line count (by timestamp: the predicate is
    asked about every event again on each scan)."""
    stage_at: list[str] = []

    def pred(e: dict) -> bool:
        if e.get("event") == "sli.stage" and not stage_at:
            stage_at.append(str(e.get("timestamp")))
        return bool(stage_at) and e.get("event") == "sli.probe" and str(e.get("timestamp")) > stage_at[0] \
            and e.get("verdict") in ("pass", "watch")

    return pred


# --- Prometheus -------------------------------------------------------------------------------------------


def test_prometheus_stopped_during_the_watch_rolls_back_then_before_a_deploy_refuses(flab, builds):
    """Stopped mid-watch: blind, so exit 5 and the canary back on 1.0.0, the build NOT blocked.
    Still stopped at the next deploy: exit 3, nothing touched."""
    fl = flab
    fl.on_teardown("start prometheus", lambda: (_systemctl("prom", "start", "prometheus"), wait_sli_green(fl.env)))
    r = fl.start(builds["good"])
    r.wait_event(_watch_probe_passed(), "a passing probe of the watch")  # now Prometheus goes away
    _systemctl("prom", "stop", "prometheus")
    run = r.finish()
    fl.assert_consistent(run, code=5, shas=baseline_shas(fl), needle="Prometheus")
    verdicts = [s["verdict"] for s in run.report["sli_samples"]]
    assert verdicts[-4:] == ["error"] * 4 and {"pass", "watch"} & set(verdicts), verdicts
    assert sha_of(builds["good"]) not in blocked_releases(fl.env), "a Prometheus outage blocked a good build"

    again = fl.deploy(builds["good"])
    fl.assert_consistent(again, code=3, shas=baseline_shas(fl), needle="Prometheus")
    assert not [s for s in again.report["steps"] if s["name"] == "drain-canary"]


class _PromProxy:
    """Prometheus seen through a proxy on 127.0.0.1 that can start answering garbage or an error status."""

    def __init__(self, upstream: str) -> None:
        self.mode = "pass"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if proxy.mode == "garbage":
                    body, code, ctype = b"\x00\xff<html>proxy error</html>", 200, "text/html"
                elif proxy.mode == "error":
                    body, code, ctype = b'{"status":"error","error":"overloaded"}', 503, "application/json"
                else:
                    import urllib.request

                    with urllib.request.urlopen(upstream + self.path, timeout=5) as resp:  # noqa: S310
                        body, code, ctype = resp.read(), resp.status, resp.headers.get("content-type", "")
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_prometheus_answering_garbage_mid_watch_rolls_back_and_an_error_status_refuses(flab, builds):
    fl = flab
    proxy = _PromProxy(fl.env["PROM_URL"])
    fl.on_teardown("stop the Prometheus proxy", proxy.close)
    r = fl.start(builds["good"], PROM_URL=proxy.url)
    r.wait_event(_watch_probe_passed(), "a passing probe of the watch")
    proxy.mode = "garbage"
    run = r.finish()
    fl.assert_consistent(run, code=5, shas=baseline_shas(fl), needle="non-JSON")
    assert sha_of(builds["good"]) not in blocked_releases(fl.env)

    proxy.mode = "error"
    again = fl.deploy(builds["good"], PROM_URL=proxy.url)
    fl.assert_consistent(again, code=3, shas=baseline_shas(fl), needle="HTTP 503")


# --- HAProxy -------------------------------------------------------------------------------------------


def test_haproxy_admin_socket_missing_is_a_preflight_refusal(flab, builds):
    fl = flab
    sock = fl.env["HAPROXY_SOCKET"]
    hap = IncusTransport(fl.env["HAPROXY_CONTAINER"])
    hap.run(("mv", "--", sock, sock + ".hidden"))
    fl.on_teardown("put the admin socket back", lambda: hap.run(("mv", "--", sock + ".hidden", sock)))
    run = fl.deploy(builds["good"])
    assert run.code == 3 and sock in run.report["message"], run.stderr[-2000:]
    hap.run(("mv", "--", sock + ".hidden", sock))
    fl.undo.clear()
    fl.assert_consistent(run, code=3, shas=baseline_shas(fl), needle=sock)


def test_haproxy_restarted_mid_deploy_loses_the_drain_and_the_tool_drains_again(flab, builds):
    """The canary is drained, its push paused; HAProxy restarts (runtime state lost: the canary is back in
    rotation). Before restarting the service the tool sees it, drains again, and the deploy completes."""
    fl = flab
    fl.push_fault(fl.canary, "pause-before", 4)
    r = fl.start(builds["good"])
    r.wait_file(fl.fault_dir / "pushing")
    _systemctl(fl.env["HAPROXY_CONTAINER"], "restart", "haproxy")
    wait_until(lambda: _haproxy(fl.env).state(fl.canary).admin == "ready", 20, "HAProxy back, canary ready")
    run = r.finish()
    fl.assert_consistent(run, code=0, shas=dict.fromkeys(fl.nodes, sha_of(builds["good"])))
    assert any(e["kind"] == "haproxy_drain_lost" and e["node"] == fl.canary for e in run.report["events"])
    lines = run.stderr.splitlines()
    lost = next(i for i, ln in enumerate(lines) if '"haproxy.drain_lost"' in ln)
    restart = next(i for i, ln in enumerate(lines) if '"node.restart"' in ln and fl.canary in ln)
    assert lost < restart, "the canary's service restarted before it was drained again"


# --- the canary container, the SSH link, the disk, the bytes ----------------------------------------------


def test_canary_container_stopped_mid_push_is_exit_7_with_the_canary_left_drained(flab, builds):
    """The documented exception: the canary cannot be reached, so nothing can be verified; it stays drained."""
    fl = flab

    def start_canary() -> None:
        subprocess.run(["incus", "start", fl.canary], check=False, capture_output=True)
        wait_until(lambda: IncusTransport(fl.canary).run(("systemctl", "is-system-running"), check=False)
                   .stdout.strip() in ("running", "degraded"), 60, f"{fl.canary} running")

    fl.on_teardown(f"start {fl.canary}", start_canary)
    fl.push_fault(fl.canary, "pause-before", 4)
    r = fl.start(builds["good"])
    r.wait_file(fl.fault_dir / "pushing")
    subprocess.run(["incus", "stop", "--force", fl.canary], check=True, capture_output=True)
    run = r.finish()
    assert run.code == 7, run.stderr[-3000:]
    assert "DRAINED" in run.report["message"] and fl.canary in run.report["message"]
    st = _haproxy(fl.env).states()
    assert st[fl.canary].admin == "drain", "an unverifiable canary must stay out of rotation"
    assert all(st[p].admin == "ready" for p in fl.peers)
    assert run.report["final_state"]["nodes"][fl.canary]["binary"] == "unknown"
    assert not lock_present(fl.env)
    start_canary()
    fl.undo.clear()
    # Back up: its disk was never changed (the push never landed), no partial file anywhere.
    assert _node(fl.canary).sha256() == sha_of(fl.baseline)
    # A temp name may remain (the container stopped between two of its commands): never at the service's path,
    # and the next run removes it under the lock (test_sigkill_during_a_peer_push_...).
    assert all(x.startswith(".veza-api.new-") for x in install_dir_extras(fl.canary)), install_dir_extras(fl.canary)


def test_disk_full_on_the_canary_during_the_push(flab, builds):
    """A tmpfs with 8 KiB free mounted over the canary's install dir (inside its container only)."""
    fl = flab
    ct = IncusTransport(fl.canary)
    ct.run(("sh", "-c", f"mkdir -p /run/vzsave && cp -a {INSTALL_DIR}/. /run/vzsave/ && "
                        f"mount -t tmpfs -o size=24k,mode=0755 veza-tinydisk {INSTALL_DIR} && "
                        f"cp -a /run/vzsave/. {INSTALL_DIR}/"))
    fl.on_teardown("unmount the tiny disk", lambda: ct.run(("umount", INSTALL_DIR), check=False))
    assert "veza-tinydisk" in ct.run(("cat", "/proc/mounts")).stdout
    run = fl.deploy(builds["big"])
    fl.assert_consistent(run, code=5, shas=baseline_shas(fl), needle="no space left on device")
    assert "untouched" in run.report["message"]
    assert sha_of(builds["big"]) not in blocked_releases(fl.env), "a full disk is not a bad build"


def test_corrupted_push_is_caught_before_the_rename(flab, builds):
    fl = flab
    fl.push_fault(fl.canary, "corrupt")
    run = fl.deploy(builds["good"])
    fl.assert_consistent(run, code=5, shas=baseline_shas(fl), needle="corrupted")
    assert "untouched" in run.report["message"]
    assert not (fl.fault_dir / "push").exists(), "the wrapper never saw the push"


# --- the build itself ---------------------------------------------------------------------------------------


def test_service_that_fails_to_start_is_rolled_back_blocked_and_refused_next_time(flab, builds):
    fl = flab
    run = fl.deploy(builds["fail_start"])
    fl.assert_consistent(run, code=5, shas=baseline_shas(fl), needle="health")
    assert run.node(fl.canary)["binary"] == "rollback"
    assert sha_of(builds["fail_start"]) in blocked_releases(fl.env)
    again = fl.deploy(builds["fail_start"])
    fl.assert_consistent(again, code=9, shas=baseline_shas(fl), needle="rolled back")


def test_rollback_binary_itself_broken_leaves_the_canary_drained_exit_7(flab, builds):
    fl = flab
    run = fl.deploy(builds["health500"], ROLLBACK_BINARY=str(builds["rollback_broken"]))
    assert run.code == 7, run.stderr[-3000:]
    st = fl.state()
    assert st[fl.canary].admin == "drain" and "DRAINED" in run.report["message"]
    assert all(st[p].in_rotation and st[p].sha256 == sha_of(fl.baseline) for p in fl.peers)
    assert not any(s.extras for s in st.values()) and not lock_present(fl.env)
    errs = [ln for ln in run.stderr.splitlines() if ln.startswith("veza-canary: error:")]
    assert len(errs) == 1 and "ROLLBACK FAILED" in errs[0]


def test_no_last_known_good_binary_is_refused_before_anything_changes(flab, builds):
    """The canary already runs the artifact (installed by hand) and no copy of the build before it was kept:
    nothing to roll back to, so preflight refuses (the default rollback target is the running build)."""
    fl = flab
    ct = IncusTransport(fl.canary)
    ct.run(("rm", "-f", "--", f"{INSTALL_DIR}/.veza-api.last-good"))
    ct.push(builds["good"], f"{INSTALL_DIR}/veza-api", mode=0o755)
    ct.run(("systemctl", "restart", "veza-backend-api"))
    fl.on_teardown("put the canary back on its baseline", lambda: restore_node(fl.canary))
    wait_all_up(fl.env)
    run = fl.deploy(builds["good"], ROLLBACK_BINARY="")
    assert run.code == 3 and "last-known-good" in run.report["message"], run.stderr[-2000:]
    assert "no copy of the build before it was kept" in run.report["message"]
    assert not [s for s in run.report["steps"] if s["name"] == "drain-canary" and s["outcome"] != "skipped"]


# --- drains that never end -------------------------------------------------------------------------------


class HeldConnection:
    """A request through HAProxy pinned to one server, whose body trickles in forever (scur stays 1)."""

    def __init__(self, fl: FaultLab, node: str) -> None:
        h = _haproxy(fl.env)
        others = [n for n in fl.nodes if n != node]
        for n in others:  # for a moment, only ``node`` takes new sessions
            h.set_state(n, "drain")
        try:
            host = fl.env["LB_URL"].split("//", 1)[1].split(":")[0]
            self.sock = socket.create_connection((host, 80), timeout=5)
            self.sock.sendall(b"POST /api/v1/tracks HTTP/1.1\r\nHost: lb\r\nContent-Length: 100000000\r\n"
                              b"Content-Type: text/plain\r\n\r\nhello")
            wait_until(lambda: h.stat(node).scur >= 1, 10, f"a session on {node}")
        finally:
            for n in others:
                h.set_state(n, "ready")
        self.node, self.h = node, h
        self.stopped = threading.Event()
        threading.Thread(target=self._trickle, daemon=True).start()

    def _trickle(self) -> None:
        while not self.stopped.wait(1.0):
            try:
                self.sock.sendall(b"x")
            except OSError:
                return

    def alive(self) -> bool:
        try:
            self.sock.sendall(b"x")
        except OSError:
            return False
        return self.h.stat(self.node).scur >= 1

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def test_drain_that_never_completes_with_action_fail_restores_the_canary(flab, builds):
    fl = flab
    conn = HeldConnection(fl, fl.canary)
    fl.on_teardown("close the held connection", conn.close)
    run = fl.deploy(builds["good"], DRAIN_TIMEOUT="3", DRAIN_TIMEOUT_ACTION="fail")
    assert conn.alive(), "action=fail must not kill the session"
    conn.close()
    fl.assert_consistent(run, code=5, shas=baseline_shas(fl), needle="drain")
    assert "untouched" in run.report["message"]


def test_drain_that_never_completes_with_shutdown_sessions_goes_on(flab, builds):
    fl = flab
    conn = HeldConnection(fl, fl.canary)
    fl.on_teardown("close the held connection", conn.close)
    run = fl.deploy(builds["good"], DRAIN_TIMEOUT="3", DRAIN_TIMEOUT_ACTION="shutdown-sessions")
    assert not conn.alive(), "shutdown-sessions must kill the held session"
    fl.assert_consistent(run, code=0, shas=dict.fromkeys(fl.nodes, sha_of(builds["good"])))
    assert any(e["kind"] == "shutdown_sessions" and e["node"] == fl.canary for e in run.report["events"])


# --- signals -----------------------------------------------------------------------------------------------


def test_sigterm_during_the_drain_wait_restores_the_untouched_canary(flab, builds):
    fl = flab
    conn = HeldConnection(fl, fl.canary)
    fl.on_teardown("close the held connection", conn.close)
    r = fl.start(builds["good"], DRAIN_TIMEOUT="60")
    r.wait_log('"drain.poll"')
    r.proc.send_signal(signal.SIGTERM)
    run = r.finish()
    assert conn.alive(), "an interrupted drain must not kill sessions"
    conn.close()
    fl.assert_consistent(run, code=130, shas=baseline_shas(fl), needle="SIGTERM")
    assert "untouched" in run.report["message"]


def test_sigint_during_the_canary_push_restores_the_untouched_canary(flab, builds):
    fl = flab
    fl.push_fault(fl.canary, "pause-before", 5)
    r = fl.start(builds["good"])
    r.wait_file(fl.fault_dir / "pushing")
    r.proc.send_signal(signal.SIGINT)
    run = r.finish()
    fl.assert_consistent(run, code=130, shas=baseline_shas(fl), needle="SIGINT")


def test_sigkill_during_a_peer_push_then_the_rerun_reconciles_and_finishes(flab, builds):
    """Killed right after a peer's bytes landed under a temp name (drained, temp file on disk, lock held by a
    dead PID): the same command again takes the lock over, removes the temp file, and finishes."""
    fl = flab
    peer = fl.peers[0]
    fl.push_fault(peer, "pause-after", 3)
    r = fl.start(builds["good2"])
    r.wait_file(fl.fault_dir / "pushed")
    r.proc.kill()
    r.finish()
    workdirs = list(Path("/tmp").glob(f"veza-canary-{r.proc.pid}-*"))
    assert workdirs, "the killed run's private copy of the binaries should still be there"
    st = fl.state()
    assert st[peer].admin == "drain" and st[peer].extras, f"not the mess a SIGKILL leaves: {st[peer]}"
    assert lock_present(fl.env)
    time.sleep(3.5)  # the orphaned incus push ends by itself
    run = fl.deploy(builds["good2"])
    fl.assert_consistent(run, code=0, shas=dict.fromkeys(fl.nodes, sha_of(builds["good2"])))
    assert any(e["kind"] == "reconcile" and e["node"] == peer for e in run.report["events"])
    assert '"lock.takeover"' in run.stderr
    assert not any(d.exists() for d in workdirs), "the re-run did not remove the killed run's work dir"


# --- locks ---------------------------------------------------------------------------------------------------


def test_a_refused_concurrent_deploy_deletes_nothing_of_the_running_one(flab, builds):
    """The first deploy's canary push is in flight (bytes under a temp name); a second deploy is refused
    (exit 8, holder named) without touching that temp file, and the first completes."""
    fl = flab
    fl.push_fault(fl.canary, "pause-after", 6)
    first = fl.start(builds["good3"])
    first.wait_file(fl.fault_dir / "pushed")
    second = fl.deploy(builds["good3"])
    assert second.code == 8 and f"pid {first.proc.pid}" in second.stderr, second.stderr[-2000:]
    run = first.finish()
    fl.assert_consistent(run, code=0, shas=dict.fromkeys(fl.nodes, sha_of(builds["good3"])))


def test_a_stale_lock_from_another_host_is_refused_with_the_way_out(flab, builds):
    fl = flab
    started = (datetime.now(UTC) - timedelta(hours=3)).isoformat(timespec="seconds")
    lock = {"holder": "alice", "host": "laptop-of-alice", "pid": 4242, "started_at": started,
            "artifact_sha256": "ab" * 32, "command": "veza-canary deploy", "token": "t0"}
    hap = IncusTransport(fl.env["HAPROXY_CONTAINER"])
    hap.run(("sh", "-c", f"mkdir -p {STATE_DIR} && cat > {STATE_DIR}/lock.json"), input=json.dumps(lock))
    run = fl.deploy(builds["good"])
    assert run.code == 8, run.stderr[-2000:]
    assert "STALE" in run.report["message"] and "alice@laptop-of-alice" in run.report["message"]
    assert "unlock --force" in run.stderr
    assert lock_present(fl.env), "someone else's lock is never removed by a deploy"
    hap.run(("rm", "-f", f"{STATE_DIR}/lock.json"))
    fl.assert_consistent(run, code=8, shas=baseline_shas(fl), needle="STALE")


# --- SSH --------------------------------------------------------------------------------------------------------


def test_ssh_connection_to_the_incus_host_dropped_mid_push(flab, builds, tmp_path):
    """INCUS_HOST=ssh://...: every incus command goes over one SSH connection. It is cut (every sshd
    connection process killed) while the canary's push runs on the Incus host: the push fails, the tool
    reconnects for the cleanup, the canary is untouched and back in rotation, nothing staged is left."""
    from tests.integration.sshd_fixture import start_sshd

    fl = flab
    sshd = start_sshd(tmp_path / "sshd")
    fl.on_teardown("stop sshd", sshd.stop)
    # The SSH session's PATH starts with the fault wrapper, like the local runs.
    config = sshd.workdir / "sshd_config"
    config.write_text(config.read_text() + f"SetEnv PATH={fl.wrapper_dir}:/usr/sbin:/usr/bin:/sbin:/bin "
                                            f"VEZA_FAULT_DIR={fl.fault_dir}\n")
    assert sshd.proc is not None
    sshd.proc.send_signal(signal.SIGHUP)  # sshd re-execs itself with the new config
    time.sleep(0.5)
    staged_before = set(Path("/tmp").glob("veza-canary-*"))
    fl.push_fault(fl.canary, "pause-before", 5)
    r = fl.start(builds["good4"], INCUS_HOST=sshd.url, SSH_KEY_FILE=str(sshd.client_key),
                 SSH_KNOWN_HOSTS=str(sshd.known_hosts))
    r.wait_file(fl.fault_dir / "pushing")
    sshd.kill_connections()
    run = r.finish()
    fl.assert_consistent(run, code=5, shas=baseline_shas(fl), needle="untouched")
    assert "connection" in run.report["message"].lower() or "ssh" in run.report["message"].lower()
    assert not set(Path("/tmp").glob("veza-canary-*")) - staged_before, "staged copy left on the Incus host"
    assert sha_of(builds["good4"]) not in blocked_releases(fl.env)


if __name__ == "__main__":  # pragma: no cover - run one test by hand
    sys.exit(pytest.main([__file__, "-x", "-q", *sys.argv[1:]]))
