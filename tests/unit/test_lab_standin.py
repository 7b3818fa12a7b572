"""The veza-api stand-in, run as a real local subprocess on a loopback port (no lab needed)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from veza_canary.lab.standin import Faults, build_standin, render_standin


@contextmanager
def running(tmp_path: Path, faults: Faults | None = None, version: str = "1.2.3") -> Iterator[tuple[str, subprocess.Popen]]:
    """Start a build on 127.0.0.1 (port picked by the OS); yield its base URL and process."""
    exe = build_standin(version, faults, tmp_path / f"veza-api-{version}")
    proc = subprocess.Popen([str(exe), "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, f"no listening line: {line!r}"
        yield f"http://127.0.0.1:{m.group(1)}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        proc.stderr.close()


def metric_lines(base: str) -> list[str]:
    return httpx.get(f"{base}/metrics", timeout=5).text.splitlines()


def count_of(lines: list[str], path: str, status: str) -> int:
    for ln in lines:
        if ln.startswith("veza_gin_http_request_duration_seconds_count{") and f'path="{path}"' in ln \
                and f'status="{status}"' in ln:
            return int(ln.rsplit(" ", 1)[1])
    return 0


# --- the file ---------------------------------------------------------------------------------------

def test_build_writes_one_executable_python3_file(tmp_path: Path) -> None:
    exe = build_standin("1.0.0", None, tmp_path / "veza-api")
    assert exe.read_text().startswith("#!/usr/bin/python3\n")
    assert exe.stat().st_mode & 0o777 == 0o755
    assert list(tmp_path.iterdir()) == [exe]


def test_different_versions_or_faults_give_different_bytes_and_same_inputs_the_same() -> None:
    a = render_standin("1.0.0")
    assert a == render_standin("1.0.0", Faults())
    assert a != render_standin("1.0.1")
    assert a != render_standin("1.0.0", Faults(latency=0.1))
    assert render_standin("1.0.0", Faults(error_rate=0.1)) != render_standin("1.0.0", Faults(error_rate=0.2))


def test_version_flag_prints_the_version_and_exits_0(tmp_path: Path) -> None:
    exe = build_standin("2.3.4-rc1", Faults(fail_start=True), tmp_path / "veza-api")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=10)
    assert (r.returncode, r.stdout) == (0, "2.3.4-rc1\n")


@pytest.mark.parametrize("kwargs", [
    {"health_status": 99}, {"health_status": 600}, {"latency": -1}, {"latency": float("nan")},
    {"error_rate": 1.5}, {"error_rate": -0.1}, {"crash_after": -1}, {"onset": float("inf")},
])
def test_invalid_faults_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Faults(**kwargs)


@pytest.mark.parametrize("version", ["", "1.0 0", "1.0.0\n", "a" * 65, "../x", '1"0'])
def test_invalid_versions_are_refused(version: str) -> None:
    with pytest.raises(ValueError):
        render_standin(version)


# --- a healthy build --------------------------------------------------------------------------------------

def test_health_answers_200_with_the_version(tmp_path: Path) -> None:
    with running(tmp_path) as (base, _):
        r = httpx.get(f"{base}/api/v1/health", timeout=5)
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "version": "1.2.3"}


def test_api_routes_answer_200_and_unknown_paths_404(tmp_path: Path) -> None:
    with running(tmp_path) as (base, _):
        for path in ("/api/v1/tracks", "/api/v1/tracks/42", "/api/v1/users/me", "/api/v1/playlists"):
            assert httpx.get(base + path, timeout=5).status_code == 200, path
        assert httpx.get(f"{base}/nope", timeout=5).status_code == 404


def test_metrics_record_api_and_health_requests_but_not_metrics_requests(tmp_path: Path) -> None:
    with running(tmp_path) as (base, _):
        for _ in range(3):
            httpx.get(f"{base}/api/v1/tracks/7", timeout=5)
        httpx.get(f"{base}/api/v1/health", timeout=5)
        metric_lines(base)
        lines = metric_lines(base)
    assert count_of(lines, "/api/v1/tracks/:id", "200") == 3
    assert count_of(lines, "/api/v1/health", "200") == 1
    assert not any('path="/metrics"' in ln for ln in lines)
    assert 'veza_build_info{version="1.2.3"} 1' in lines
    assert "# TYPE veza_gin_http_request_duration_seconds histogram" in lines


def test_histogram_has_the_buckets_around_half_a_second_and_cumulative_counts(tmp_path: Path) -> None:
    with running(tmp_path) as (base, _):
        httpx.get(f"{base}/api/v1/tracks", timeout=5)
        lines = metric_lines(base)
    buckets = [ln for ln in lines if ln.startswith("veza_gin_http_request_duration_seconds_bucket{")
               and 'path="/api/v1/tracks"' in ln]
    les = [re.search(r'le="([^"]+)"', ln).group(1) for ln in buckets]
    assert les == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "10.0",
                   "+Inf"]
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in buckets]
    assert counts == sorted(counts) and counts[-1] == 1


# --- faults --------------------------------------------------------------------------------------------

def test_health_status_fault_changes_only_the_health_code(tmp_path: Path) -> None:
    with running(tmp_path, Faults(health_status=500)) as (base, _):
        r = httpx.get(f"{base}/api/v1/health", timeout=5)
        assert r.status_code == 500 and r.json()["status"] == "unhealthy"
        assert httpx.get(f"{base}/api/v1/tracks", timeout=5).status_code == 200


def test_error_rate_fault_answers_5xx_on_api_routes_only(tmp_path: Path) -> None:
    with running(tmp_path, Faults(error_rate=1.0)) as (base, _):
        assert {httpx.get(f"{base}/api/v1/users/me", timeout=5).status_code for _ in range(5)} == {500}
        assert httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
        lines = metric_lines(base)
    assert count_of(lines, "/api/v1/users/me", "500") == 5


def test_partial_error_rate_gives_a_mix(tmp_path: Path) -> None:
    with running(tmp_path, Faults(error_rate=0.5)) as (base, _):
        codes = [httpx.get(f"{base}/api/v1/tracks", timeout=5).status_code for _ in range(60)]
    assert 5 <= codes.count(500) <= 55


def test_latency_fault_delays_api_routes_just_below_the_value_and_not_health(tmp_path: Path) -> None:
    with running(tmp_path, Faults(latency=0.3)) as (base, _):
        took = []
        for _ in range(3):
            t0 = time.monotonic()
            httpx.get(f"{base}/api/v1/tracks", timeout=5)
            took.append(time.monotonic() - t0)
        t0 = time.monotonic()
        httpx.get(f"{base}/api/v1/health", timeout=5)
        health_took = time.monotonic() - t0
        lines = metric_lines(base)
    assert all(0.26 <= t <= 0.45 for t in took), took
    assert health_took < 0.2
    le_025 = next(ln for ln in lines if 'path="/api/v1/tracks"' in ln and 'le="0.25"' in ln)
    le_05 = next(ln for ln in lines if 'path="/api/v1/tracks"' in ln and 'le="0.5"' in ln)
    assert le_025.endswith(" 0") and le_05.endswith(" 3")


def test_crash_after_fault_exits_non_zero(tmp_path: Path) -> None:
    with running(tmp_path, Faults(crash_after=0.5)) as (base, proc):
        assert httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
        assert proc.wait(timeout=10) == 3
        assert "injected crash" in proc.stderr.read()


def test_fail_start_fault_exits_at_once(tmp_path: Path) -> None:
    exe = build_standin("1.0.0", Faults(fail_start=True), tmp_path / "veza-api")
    t0 = time.monotonic()
    r = subprocess.run([str(exe), "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "injected start failure" in r.stderr
    assert time.monotonic() - t0 < 5


def test_onset_delays_every_fault(tmp_path: Path) -> None:
    faults = Faults(health_status=503, error_rate=1.0, onset=1.0)
    with running(tmp_path, faults) as (base, _):
        assert httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
        assert httpx.get(f"{base}/api/v1/tracks", timeout=5).status_code == 200
        time.sleep(1.1)
        assert httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 503
        assert httpx.get(f"{base}/api/v1/tracks", timeout=5).status_code == 500


def test_crash_after_counts_from_the_onset(tmp_path: Path) -> None:
    with running(tmp_path, Faults(crash_after=0.3, onset=1.0)) as (_base, proc):
        time.sleep(0.8)
        assert proc.poll() is None
        assert proc.wait(timeout=10) == 3


def test_listen_address_from_the_environment(tmp_path: Path) -> None:
    exe = build_standin("1.0.0", None, tmp_path / "veza-api")
    proc = subprocess.Popen([str(exe)], stderr=subprocess.PIPE, text=True,
                            env={"VEZA_API_LISTEN": "127.0.0.1:0", "PATH": "/usr/bin:/bin"})
    try:
        assert re.search(r"listening on 127\.0\.0\.1:\d+", proc.stderr.readline())
    finally:
        proc.kill()
        proc.wait(timeout=5)
        proc.stderr.close()


# --- the CLI ---------------------------------------------------------------------------------------------

@pytest.fixture
def keep_structlog() -> Iterator[None]:
    """The CLI's callback points structlog at CliRunner's stderr, closed after invoke: put it back."""
    import structlog

    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


def test_lab_build_command_writes_a_faulty_build(tmp_path: Path, keep_structlog: None) -> None:
    from veza_canary.cli import app

    out = tmp_path / "bad"
    r = CliRunner().invoke(app, ["lab", "build", "--version", "9.9.9", "--health-status", "500",
                                 "--latency", "0.2", "--error-rate", "0.1", "--crash-after", "30", "--onset", "2",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text() == render_standin("9.9.9", Faults(health_status=500, latency=0.2, error_rate=0.1,
                                                              crash_after=30, onset=2))


def test_lab_build_command_refuses_a_bad_fault_with_exit_2(tmp_path: Path, keep_structlog: None) -> None:
    from veza_canary.cli import app

    r = CliRunner().invoke(app, ["lab", "build", "--version", "1", "--error-rate", "2", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert not (tmp_path / "x").exists()
