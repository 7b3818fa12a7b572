"""``deploy --dry-run`` refuses what a real run would refuse, with the same line and exit code, and shows the plan.

Run through the real CLI; a fleet factory that fails proves the dry run never builds a fleet.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from veza_canary.cli import build_app
from veza_canary.errors import ExitCode


def _no_fleet(_settings):  # noqa: ANN001, ANN202
    raise AssertionError("a dry run must not build a fleet")


APP = build_app(fleet_factory=_no_fleet)
cli = CliRunner()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "veza-api-v2"
    good.write_bytes(b"#!/bin/sh\necho v2\n")
    good.chmod(0o755)
    old = tmp_path / "veza-api-v1"
    old.write_bytes(b"#!/bin/sh\necho v1\n")
    old.chmod(0o755)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    empty.chmod(0o755)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_init.up.sql").write_text("CREATE TABLE users (id bigint PRIMARY KEY);\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "migrations"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return {"tmp": tmp_path, "good": good, "old": old, "empty": empty, "fifo": fifo, "dir": tmp_path / "migrations",
            "missing": tmp_path / "nope"}


def invoke(world: dict[str, Path], *args: str, **env: str):  # noqa: ANN201
    base = {"STATE_DIR": str(world["tmp"] / "state"), "MIGRATIONS_SINCE": "HEAD"}
    return cli.invoke(APP, ["deploy", "--dry-run", *args], env={**base, **env})


def one_error(r) -> str:  # noqa: ANN001
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("veza-canary: error:")]
    assert len(errors) == 1, r.stdout + r.stderr
    return errors[0]


@pytest.mark.parametrize("case,artifact_key,code,needle", [
    ("missing artifact", "missing", ExitCode.USAGE, "no such file"),
    ("empty artifact", "empty", ExitCode.USAGE, "is empty"),
    ("directory artifact", "dir", ExitCode.USAGE, "is a directory"),
    ("fifo artifact", "fifo", ExitCode.USAGE, "not a regular file"),
])
def test_a_bad_artifact_fails_the_dry_run_like_the_real_run(world, case, artifact_key, code, needle):
    r = invoke(world, "--artifact", str(world[artifact_key]))
    assert r.exit_code == code, r.stdout + r.stderr
    assert "ARTIFACT" in one_error(r) and needle in one_error(r)
    assert "Plan" not in r.stdout


def test_an_unset_artifact_fails_the_dry_run(world):
    r = invoke(world)
    assert r.exit_code == ExitCode.USAGE and "ARTIFACT: is not set" in one_error(r)


def test_a_missing_rollback_binary_fails_the_dry_run(world):
    r = invoke(world, "--artifact", str(world["good"]), "--rollback-binary", str(world["missing"]))
    assert r.exit_code == ExitCode.USAGE and "ROLLBACK_BINARY" in one_error(r)


def test_a_rollback_binary_equal_to_the_artifact_fails_the_dry_run(world):
    r = invoke(world, "--artifact", str(world["good"]), "--rollback-binary", str(world["good"]))
    assert r.exit_code == ExitCode.PREFLIGHT and "same sha256" in one_error(r)


def test_a_password_in_incus_host_fails_the_dry_run_without_printing_it(world):
    r = invoke(world, "--artifact", str(world["good"]), INCUS_HOST="ssh://deploy:hunter2@incus-host")
    assert r.exit_code == ExitCode.USAGE and "password" in one_error(r)
    assert "hunter2" not in r.stdout + r.stderr


@pytest.mark.parametrize("knob", ["PROM_CA_BUNDLE", "PROM_CLIENT_CERT", "PROM_TOKEN_FILE", "SSH_KEY_FILE"])
def test_missing_tls_and_key_files_fail_the_dry_run(world, knob):
    r = invoke(world, "--artifact", str(world["good"]), PROM_URL="https://prom:9090", **{knob: str(world["missing"])})
    assert r.exit_code == ExitCode.USAGE and "no such file" in one_error(r)


def test_a_missing_migrations_dir_fails_the_dry_run_closed(world):
    r = invoke(world, "--artifact", str(world["good"]), MIGRATIONS_DIR=str(world["missing"]))
    assert r.exit_code != 0
    assert "Plan" not in r.stdout


def test_the_plan_shows_what_ships_where_and_each_steps_commands(world):
    r = invoke(world, "--artifact", str(world["good"]), "--rollback-binary", str(world["old"]),
               NODE_HEALTH_URL="http://svc:s3cret@127.0.0.1:8080/?access_token=abc123",
               INCUS_HOST="ssh://deploy@incus-host:2222", MIGRATIONS_DIR=str(world["dir"]))
    assert r.exit_code == 0, r.stdout + r.stderr
    out = r.stdout
    sha = hashlib.sha256(world["good"].read_bytes()).hexdigest()
    assert f"sha256 {sha}" in out and f"{world['good'].stat().st_size} bytes" in out
    assert "incus-host:2222" in out
    assert f"ROLLBACK_BINARY {world['old']}" in out
    assert f"migrations: {world['dir']}" in out
    lines = out.splitlines()
    for step, needle in (("drain-canary", "state drain"), ("install-canary", "sha256sum"),
                         ("canary-health", "curl"), ("ready-canary", "state ready"), ("lb-health", "GET"),
                         ("sli-watch", "every 30s"), ("peers", "peer backend-api-1")):
        at = next(i for i, ln in enumerate(lines) if f". {step}:" in ln)
        assert needle in lines[at + 1], f"{step}: {lines[at + 1]!r}"
    assert "s3cret" not in out and "abc123" not in out


def test_the_plan_names_the_running_build_as_the_rollback_source_by_default(world):
    r = invoke(world, "--artifact", str(world["good"]), MIGRATIONS_DIR=str(world["dir"]))
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "the build the canary runs when the deploy starts" in r.stdout
