"""Bad input through the CLI: one clear line naming the problem, a documented exit code, nothing changed.

Every case runs the real command line (``veza-canary deploy ...`` or ``lint-migrations``)
in-process. The fleet factory (``runner.build_fleet``, the one place the CLI reaches real
systems) hands out a simulated fleet that records every command, and an ``incus`` that
records and refuses is first on PATH, so "nothing changed" is checked, not assumed: no
HAProxy state change, no push, no restart, no lock, no blocked release, not one incus call.
A few cases use the real network path on purpose (Prometheus or the SSH host unreachable,
always a closed port on 127.0.0.1).

Checked for every case: the exit code, exactly one ``veza-canary: error:`` line that names
the knob (or the file, or the problem), no traceback, and no secret anywhere in the output
or in the JSON report.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from veza_canary import fleet as fleet_mod
from veza_canary import runner as runner_mod
from veza_canary.cli import app
from veza_canary.log import configure
from veza_canary.prometheus import Prometheus, make_http_client
from veza_canary.settings import KNOBS
from veza_canary.testing import SimFleet, sim_fleet

cli = CliRunner()


@dataclass(frozen=True)
class Case:
    id: str
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    code: int = 2
    needle: str = ""
    command: str = "deploy"
    artifact: bool = True  # pass --artifact {good} unless args say otherwise
    real_prom: bool = False  # Prometheus reached for real (through the settings' URL)
    real_fleet: bool = False  # the real fleet factory (INCUS_HOST over SSH)
    secret: str | None = None  # must appear nowhere in the output or the report
    files: dict[str, bytes] = field(default_factory=dict)  # written under tmp before the run


S = "S3cr3t-Pa55w0rd"

CASES = [
    # -- hostile node and container names --------------------------------------------------------------
    Case("canary-shell-metachars", {"CANARY_NODE": "backend-api-2; rm -rf /"}, needle="CANARY_NODE"),
    Case("canary-command-substitution", {"CANARY_NODE": "$(reboot)"}, needle="CANARY_NODE"),
    Case("canary-backticks", {"CANARY_NODE": "`id`"}, needle="CANARY_NODE"),
    Case("canary-path-traversal", {"CANARY_NODE": "../../etc/passwd"}, needle="CANARY_NODE"),
    Case("canary-space", {"CANARY_NODE": "backend api 2"}, needle="CANARY_NODE"),
    Case("canary-newline", {"CANARY_NODE": "backend-api-2\nbackend-api-1"}, needle="CANARY_NODE"),
    Case("canary-200-chars", {"CANARY_NODE": "a" * 200}, needle="longer than 63"),
    Case("canary-unicode", {"CANARY_NODE": "bäckend-api-2"}, needle="CANARY_NODE"),
    Case("canary-unicode-rtl-override", {"CANARY_NODE": "backend\u202eapi"}, needle="CANARY_NODE"),
    Case("canary-flag-lookalike", args=("--canary-node", "backend-api-2 --force"), needle="--canary-node"),
    Case("peer-command-substitution", {"PEER_NODES": "backend-api-1,$(id)"}, needle="PEER_NODES"),
    Case("peer-newline", {"PEER_NODES": "backend-api-1\nrm"}, needle="PEER_NODES"),
    Case("peer-listed-twice", {"PEER_NODES": "backend-api-1 backend-api-1"}, needle="twice"),
    Case("peer-is-the-canary", {"PEER_NODES": "backend-api-2"}, needle="PEER_NODES"),
    Case("haproxy-container-metachars", {"HAPROXY_CONTAINER": "haproxy;id"}, needle="HAPROXY_CONTAINER"),
    Case("haproxy-container-bad-remote", {"HAPROXY_CONTAINER": "../x:haproxy"}, needle="HAPROXY_CONTAINER"),
    Case("pool-backend-command-chaining", {"POOL_BACKEND": "api_pool;shutdown sessions server api_pool/x"},
         needle="POOL_BACKEND"),
    Case("service-name-metachars", {"SERVICE_NAME": "veza; reboot"}, needle="SERVICE_NAME"),
    Case("install-dir-traversal", {"INSTALL_DIR": "/opt/../etc"}, needle="INSTALL_DIR"),
    Case("install-dir-relative", {"INSTALL_DIR": "opt/veza"}, needle="INSTALL_DIR"),
    Case("haproxy-socket-newline", {"HAPROXY_SOCKET": "/run/haproxy/admin.sock\nshow"}, needle="HAPROXY_SOCKET"),
    # -- URLs ----------------------------------------------------------------------------------------------
    Case("prom-url-not-a-url", {"PROM_URL": "not a url"}, needle="PROM_URL"),
    Case("prom-url-wrong-scheme", {"PROM_URL": "ftp://prom:9090"}, needle="PROM_URL"),
    Case("prom-url-no-host", {"PROM_URL": "http://:9090"}, needle="PROM_URL"),
    Case("prom-url-port-out-of-range", {"PROM_URL": "http://prom:99999"}, needle="PROM_URL"),
    Case("lb-url-port-0", {"LB_URL": "http://lb:0"}, needle="LB_URL"),
    Case("node-health-url-whitespace", {"NODE_HEALTH_URL": "http://127.0.0.1:8080/ x"}, needle="NODE_HEALTH_URL"),
    Case("incus-host-not-ssh", {"INCUS_HOST": "http://incus-host"}, needle="INCUS_HOST"),
    Case("prom-url-with-credentials-malformed", {"PROM_URL": f"http://admin:{S}@prom:99999"}, needle="PROM_URL",
         secret=S),
    Case("prom-url-tls-knobs-on-plain-http", {"PROM_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},
         needle="PROM_URL"),
    # -- unreachable hosts (a closed port on loopback) -----------------------------------------------------
    Case("prom-unreachable", {"PROM_URL": "http://127.0.0.1:1"}, code=3, needle="Prometheus", real_prom=True),
    Case("prom-unreachable-with-credentials", {"PROM_URL": f"http://admin:{S}@127.0.0.1:1"}, code=3,
         needle="Prometheus", real_prom=True, secret=S),
    Case("incus-host-unreachable", {"INCUS_HOST": "ssh://deploy@127.0.0.1:1", "SSH_CONNECT_TIMEOUT": "3"}, code=3,
         needle="127.0.0.1", real_fleet=True),
    # -- numbers -------------------------------------------------------------------------------------------
    Case("sli-window-negative", {"SLI_WINDOW": "-60"}, needle="SLI_WINDOW"),
    Case("sli-window-zero", {"SLI_WINDOW": "0", "ALLOW_SHORT_SLI_WINDOW": "1"}, needle="must be > 0"),
    Case("sli-window-below-floor", {"SLI_WINDOW": "60"}, needle="--allow-short-window"),
    Case("sli-window-huge", {"SLI_WINDOW": "100000000"}, needle="more than a week"),
    Case("sli-window-nan", {"SLI_WINDOW": "nan"}, needle="is not a duration"),
    Case("sli-window-words", {"SLI_WINDOW": "one hour"}, needle="is not a duration"),
    Case("sli-window-flag-negative", args=("--sli-window", "-1"), needle="--sli-window"),
    Case("probe-interval-zero", {"SLI_PROBE_INTERVAL": "0"}, needle="SLI_PROBE_INTERVAL"),
    Case("probe-interval-negative", {"SLI_PROBE_INTERVAL": "-3"}, needle="SLI_PROBE_INTERVAL"),
    Case("probe-interval-huge", {"SLI_PROBE_INTERVAL": "1e9"}, needle="SLI_PROBE_INTERVAL"),
    Case("probe-interval-longer-than-window", {"SLI_WINDOW": "600", "SLI_PROBE_INTERVAL": "900"},
         needle="longer than SLI_WINDOW"),
    Case("drain-timeout-zero", {"DRAIN_TIMEOUT": "0"}, needle="DRAIN_TIMEOUT"),
    Case("drain-timeout-huge", {"DRAIN_TIMEOUT": "1e9"}, needle="DRAIN_TIMEOUT"),
    Case("poll-interval-negative", {"POLL_INTERVAL": "-0.5"}, needle="POLL_INTERVAL"),
    Case("http-timeout-zero", {"HTTP_TIMEOUT": "0"}, needle="HTTP_TIMEOUT"),
    Case("max-errors-not-an-integer", {"SLI_MAX_ERRORS": "2.5"}, needle="SLI_MAX_ERRORS"),
    Case("max-errors-negative", {"SLI_MAX_ERRORS": "-1"}, needle="SLI_MAX_ERRORS"),
    Case("err-threshold-above-one", {"PROM_ERR_RATE_THRESHOLD": "1.5"}, needle="PROM_ERR_RATE_THRESHOLD"),
    Case("rate-window-with-space", {"SLI_RATE_WINDOW": "1 m"}, needle="SLI_RATE_WINDOW"),
    Case("rate-window-zero", {"SLI_RATE_WINDOW": "0s"}, needle="SLI_RATE_WINDOW"),
    Case("lock-wait-negative", {"LOCK_WAIT": "-1"}, needle="LOCK_WAIT"),
    # -- unknown env values --------------------------------------------------------------------------------
    Case("drain-action-unknown", {"DRAIN_TIMEOUT_ACTION": "kill-everything"}, needle="DRAIN_TIMEOUT_ACTION"),
    Case("force-migrate-maybe", {"FORCE_MIGRATE": "maybe"}, needle="FORCE_MIGRATE"),
    Case("dialect-unknown", {"MIGRATIONS_DIALECT": "oracle"}, needle="MIGRATIONS_DIALECT"),
    Case("allow-degraded-two", {"ALLOW_DEGRADED": "2"}, needle="ALLOW_DEGRADED"),
    # -- the artifact and the rollback binary --------------------------------------------------------------
    Case("artifact-unset", artifact=False, needle="ARTIFACT"),
    Case("artifact-missing", args=("--artifact", "{tmp}/no-such-file"), needle="no such file"),
    Case("artifact-is-a-directory", args=("--artifact", "{dir}"), needle="is a directory"),
    Case("artifact-is-a-symlink", args=("--artifact", "{symlink}"), needle="symlink"),
    Case("artifact-not-executable", args=("--artifact", "{noexec}"), needle="not executable"),
    Case("artifact-empty", args=("--artifact", "{empty}"), needle="is empty"),
    Case("artifact-path-forging-a-second-line", {"ARTIFACT": "/tmp/x\nveza-canary: error: all good"},
         artifact=False, needle="ARTIFACT"),
    Case("artifact-path-with-escape-sequence", {"ARTIFACT": "/tmp/x\x1b[2J"}, artifact=False, needle="\\x1b"),
    Case("rollback-binary-missing", {"ROLLBACK_BINARY": "{tmp}/no-such-file"}, needle="ROLLBACK_BINARY"),
    Case("rollback-binary-is-a-directory", {"ROLLBACK_BINARY": "{dir}"}, needle="ROLLBACK_BINARY"),
    Case("rollback-binary-is-the-artifact", {"ROLLBACK_BINARY": "{good}"}, code=3, needle="same sha256"),
    # -- the config file ---------------------------------------------------------------------------------------
    Case("config-missing", args=("--config", "{tmp}/nope.toml"), needle="no such file"),
    Case("config-from-env-missing", {"VEZA_CANARY_CONFIG": "{tmp}/nope.toml"}, needle="no such file"),
    Case("config-is-a-directory", args=("--config", "{tmp}"), needle="is a directory"),
    Case("config-malformed-toml", args=("--config", "{tmp}/c.toml"), files={"c.toml": b"sli_window = [\n"},
         needle="malformed TOML"),
    Case("config-unknown-key", args=("--config", "{tmp}/c.toml"), files={"c.toml": b"sli_windw = 600\n"},
         needle="sli_windw"),
    Case("config-bad-value-names-the-key", args=("--config", "{tmp}/c.toml"),
         files={"c.toml": b'sli_window = "soon"\n'}, needle="sli_window"),
    Case("config-path-forging-a-second-line", args=("--config", "{tmp}/x\nveza-canary: error: fine"),
         needle="no such file"),
    Case("config-unknown-key-with-newline", args=("--config", "{tmp}/c.toml"),
         files={"c.toml": b'"a\\nveza-canary: error: x" = 1\n'}, needle="unknown key"),
    Case("config-not-utf8", args=("--config", "{tmp}/c.toml"), files={"c.toml": b"\xff\xfesli_window = 1\n"},
         needle="UTF-8"),
    Case("config-url-with-credentials-malformed", args=("--config", "{tmp}/c.toml"),
         files={"c.toml": f'prom_url = "http://u:{S}@:9090"\n'.encode()}, needle="prom_url", secret=S),
    # -- the migrations linter's input -------------------------------------------------------------------------
    Case("migrations-dir-missing", args=("--all", "--dir", "{tmp}/no-migrations"), command="lint-migrations",
         artifact=False, code=12, needle="does not exist"),
    Case("migration-not-utf8", args=("--all", "--dir", "{tmp}/mig"), command="lint-migrations", artifact=False,
         code=12, needle="UTF-8", files={"mig/0001_a.up.sql": "ALTER TABLE t ADD COLUMN b text DEFAULT 'été';\n"
                                         .encode("latin-1")}),
    Case("migration-binary-file", args=("--all", "--dir", "{tmp}/mig"), command="lint-migrations",
         artifact=False, code=12, needle="binary", files={"mig/0001_a.up.sql": bytes(range(256)) * 4}),
]


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stderr():
    yield
    configure("json", stream=sys.stderr)  # CliRunner's stream is closed once the invocation ends


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for knob in KNOBS:
        monkeypatch.delenv(knob.env, raising=False)
    monkeypatch.delenv("VEZA_CANARY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "veza-api-new"
    good.write_bytes(b"#!/bin/sh\necho veza-api 2.0.0\n")
    good.chmod(0o755)
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "link").symlink_to(good)
    noexec = tmp_path / "noexec"
    noexec.write_bytes(b"#!/bin/sh\n")
    noexec.chmod(0o644)
    empty = tmp_path / "empty"
    empty.touch()
    empty.chmod(0o755)
    # An incus that records and refuses: nothing here may reach a real container.
    calls = tmp_path / "incus-calls"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "incus").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "Error: not in this test" >&2\nexit 1\n')
    (bindir / "incus").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    sims: list[SimFleet] = []
    real_build = fleet_mod.build_fleet
    mode = {"real_prom": False, "real_fleet": False}

    def build(settings, **kw):
        if mode["real_fleet"]:
            return real_build(settings, **kw)
        sim = SimFleet(list(settings.pool.nodes), install_dir=settings.service.install_dir)
        fleet, _ = sim_fleet(settings, sim)
        if mode["real_prom"]:
            fleet.prom = Prometheus(make_http_client(settings), settings.prometheus.url)
        sims.append(sim)
        return fleet

    # The one place the CLI builds the I/O objects (cli/deploy.py imports it at call time; runner at load).
    monkeypatch.setattr(fleet_mod, "build_fleet", build)
    monkeypatch.setattr(runner_mod, "build_fleet", build)
    paths = {"tmp": str(tmp_path), "good": str(good), "dir": str(tmp_path / "a-dir"), "symlink": str(tmp_path / "link"),
             "noexec": str(noexec), "empty": str(empty)}
    return tmp_path, paths, sims, calls, mode


def _fmt(s: str, paths: dict[str, str]) -> str:
    for k, v in paths.items():
        s = s.replace("{" + k + "}", v)
    return s


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_a_documented_code_and_changes_nothing(case: Case, world):
    tmp, paths, sims, calls, mode = world
    mode["real_prom"], mode["real_fleet"] = case.real_prom, case.real_fleet
    for rel, data in case.files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    env = {"STATE_DIR": str(tmp / "state"), **{k: _fmt(v, paths) for k, v in case.env.items()}}
    args = [case.command]
    if case.command == "deploy":
        args.append("--yes")
        if case.artifact and "--artifact" not in case.args:
            args += ["--artifact", paths["good"]]
    args += [_fmt(a, paths) for a in case.args]

    r = cli.invoke(app, args, env=env)

    out = r.stdout + r.stderr
    assert r.exit_code == case.code, f"exit {r.exit_code}, expected {case.code}:\n{out[-2000:]}"
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("veza-canary: error:")]
    assert len(errors) == 1, f"expected one error line, got {errors}:\n{out[-2000:]}"
    assert case.needle in errors[0], f"{case.needle!r} not in {errors[0]!r}"
    if os.environ.get("VEZA_BAD_INPUT_TABLE"):  # docs/reliability.md's table of messages
        with open(os.environ["VEZA_BAD_INPUT_TABLE"], "a") as f:
            f.write(f"| {case.id} | {r.exit_code} | `{errors[0].removeprefix('veza-canary: error: ')[:150]}` |\n")
    assert "Traceback" not in out and r.exception is None or isinstance(r.exception, SystemExit), out[-2000:]
    reports = list((tmp / "state").glob("reports/*.json"))
    if case.secret:
        assert case.secret not in out, "a secret reached the terminal"
        for p in reports:
            assert case.secret not in p.read_text(), f"a secret reached the report {p.name}"
    # Nothing changed: not one incus call; on the simulated fleet, reads only.
    assert not calls.exists(), f"incus was called: {calls.read_text()}"
    for sim in sims:
        writes = [c for c in sim.commands if c[0] == "haproxy" and not c[1].startswith("show ")]
        writes += [c for c in sim.commands if c[0] != "haproxy" and c[1].split()[0] not in ("sha256sum", "find")]
        assert not writes, f"changed: {writes}"
        assert all(n.restarts == 0 for n in sim.nodes.values())
        assert not [p for p in sim.state_files if p.endswith("lock.json") or "/blocked/" in p]
    for p in reports:
        data = json.loads(p.read_text())
        assert data["exit_code"] == case.code and data["message"]


def test_at_least_thirty_bad_inputs_are_covered():
    assert len(CASES) >= 30
