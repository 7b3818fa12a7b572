"""Bad input through the CLI: one clear line naming the problem, a documented exit code, nothing changed.

Every case runs the real command line (``veza-canary deploy ...``, the on-call commands or
``lint-migrations``) in-process, on the real app built with a fleet factory
(``build_app(fleet_factory=...)``, the one place the CLI reaches real systems) that hands out a
simulated fleet recording every command; an ``incus`` that records and refuses is first on
PATH, so "nothing changed" is checked, not assumed: no HAProxy state change, no push, no
restart, no lock, no blocked release, not one incus call. A few cases use the real network
path on purpose (Prometheus, the LB or the SSH host unreachable, always a closed port on
127.0.0.1). Every settings-level ``deploy`` case runs again with ``--dry-run``.

Besides the one-error-line cases: ``status`` that cannot read a part says "unknown" and exits
10; secrets never leave the process on the paths that succeed either (dry-run plan, status,
health, SLI check, logs at debug level); ``make deploy-canary ARTIFACT=...`` passes the value
to the tool verbatim, never to a shell.

Checked for every case: the exit code, exactly one ``veza-canary: error:`` line that names
the knob (or the file, or the problem), no traceback, and no secret anywhere in the output
or in the JSON report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.fakes import SimFleet, sim_fleet
from veza_canary.cli import build_app
from veza_canary.errors import CommandFailed
from veza_canary.fleet import build_fleet
from veza_canary.log import configure
from veza_canary.prometheus import Prometheus, make_http_client
from veza_canary.settings import KNOBS

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
    real_lb: bool = False  # the LB reached for real (through the settings' LB_URL)
    real_fleet: bool = False  # the real fleet factory (INCUS_HOST over SSH)
    faults: tuple[str, ...] = ()  # on the simulated fleet: "haproxy-down", "lock-unreadable", "stopped:N", "broken:N"
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
    # -- names: a trailing newline never passes a name check (fullmatch, not $) --------------------------------
    Case("canary-trailing-newline", {"CANARY_NODE": "backend-api-2\n"}, needle="CANARY_NODE"),
    Case("peer-trailing-newline", {"PEER_NODES": "backend-api-1\n"}, needle="PEER_NODES"),
    Case("haproxy-container-trailing-newline", {"HAPROXY_CONTAINER": "haproxy\n"}, needle="HAPROXY_CONTAINER"),
    Case("pool-backend-trailing-newline", {"POOL_BACKEND": "api_pool\n"}, needle="POOL_BACKEND"),
    Case("service-name-trailing-newline", {"SERVICE_NAME": "veza-backend-api\n"}, needle="SERVICE_NAME"),
    Case("rollback-node-trailing-newline", args=("--nodes", "backend-api-1\n"), command="rollback",
         needle="--nodes"),
    Case("sli-node-trailing-newline", args=("check", "--node", "backend-api-2\n"), command="sli", needle="--node"),
    Case("health-node-trailing-newline", args=("backend-api-1\n",), command="health", needle="NODE"),
    Case("haproxy-server-trailing-newline", args=("drain", "backend-api-1\n"), command="haproxy", needle="NODE"),
    # -- secrets: redacted by parsing URLs (userinfo, query and fragment parameters), on every error path ----
    Case("prom-unreachable-access-token-in-query", {"PROM_URL": f"http://127.0.0.1:1/?access_token={S}"}, code=3,
         needle="Prometheus", real_prom=True, secret=S),
    Case("prom-unreachable-sig-in-query", {"PROM_URL": f"http://127.0.0.1:1/?x=1&sig={S}"}, code=3,
         needle="Prometheus", real_prom=True, secret=S),
    Case("prom-unreachable-auth-in-fragment", {"PROM_URL": f"http://127.0.0.1:1/#auth={S}"}, code=3,
         needle="Prometheus", real_prom=True, secret=S),
    Case("prom-unreachable-api-key-in-query", {"PROM_URL": f"http://127.0.0.1:1/?api_key={S}"}, code=3,
         needle="Prometheus", real_prom=True, secret=S),
    Case("prom-unreachable-password-with-at", {"PROM_URL": f"http://admin:p@ss-{S}@127.0.0.1:1"}, code=3,
         needle="Prometheus", real_prom=True, secret=S),
    Case("sli-check-prom-unreachable-token-in-query", {"PROM_URL": f"http://127.0.0.1:1/?token={S}"},
         args=("check",), command="sli", code=10, needle="SLI check", real_prom=True, secret=S),
    Case("incus-host-with-password", {"INCUS_HOST": f"ssh://deploy:{S}@incus-host"}, needle="INCUS_HOST", secret=S),
    Case("incus-host-with-password-holding-at", {"INCUS_HOST": f"ssh://deploy:p@{S}@incus-host"},
         needle="INCUS_HOST", secret=S),
    Case("health-node-url-credentials-on-a-red-node", {"NODE_HEALTH_URL": f"http://u:{S}@127.0.0.1:8080"},
         args=("backend-api-1",), command="health", code=11, needle="backend-api-1", secret=S,
         faults=("broken:backend-api-1",)),
    Case("health-lb-url-key-in-query-unreachable", {"LB_URL": f"http://127.0.0.1:1/?key={S}"}, args=("--lb",),
         command="health", code=10, needle="load balancer", real_lb=True, secret=S),
    # -- widening: an empty --nodes or --to is refused, never "all" or "previous" ------------------------------
    Case("rollback-nodes-empty", args=("--nodes", ""), command="rollback", needle="--nodes"),
    Case("rollback-nodes-blank", args=("--nodes", " "), command="rollback", needle="--nodes"),
    Case("rollback-nodes-only-commas", args=("--nodes", ",,"), command="rollback", needle="--nodes"),
    Case("rollback-nodes-empty-dry-run", args=("--nodes", "", "--dry-run"), command="rollback", needle="--nodes"),
    Case("rollback-to-empty", args=("--to", ""), command="rollback", needle="--to"),
    Case("rollback-to-blank", args=("--to", "  "), command="rollback", needle="--to"),
    Case("rollback-to-empty-dry-run", args=("--to", "", "--dry-run"), command="rollback", needle="--to"),
    # -- exit codes: unreachable is 10 for a node and for the LB; a bad SSH_KEY_FILE is 2 everywhere -----------
    Case("health-lb-unreachable", {"LB_URL": "http://127.0.0.1:1"}, args=("--lb",), command="health", code=10,
         needle="cannot reach the load balancer", real_lb=True),
    Case("health-node-container-stopped", args=("backend-api-3",), command="health", code=10,
         needle="cannot reach the container", faults=("stopped:backend-api-3",)),
    *[Case(f"ssh-key-file-{what}-{cmd.replace(' ', '-')}", {"INCUS_HOST": "ssh://deploy@127.0.0.1:1",
                                                            "SSH_KEY_FILE": path},
           args=tuple(cmd.split()[1:]), command=cmd.split()[0], needle="SSH_KEY_FILE")
      for what, path in (("missing", "{tmp}/no-such-key"), ("directory", "{dir}"), ("device", "/dev/zero"),
                         ("fifo", "{fifo}"))
      for cmd in ("deploy", "status", "unlock", "rollback", "health backend-api-1", "haproxy show", "history")],
    Case("ssh-key-file-missing-as-a-flag", {"INCUS_HOST": "ssh://deploy@127.0.0.1:1"}, command="unlock",
         args=("--ssh-key-file", "{tmp}/no-such-key"), needle="--ssh-key-file"),
    Case("ssh-key-file-missing-dry-run", {"INCUS_HOST": "ssh://deploy@127.0.0.1:1", "SSH_KEY_FILE": "{tmp}/nope"},
         args=("--dry-run",), needle="SSH_KEY_FILE"),
]

#: Settings-level ``deploy`` cases again with ``--dry-run``: a dry run refuses what a real run would, with the same
#: code and line. (The artifact and rollback-binary files are the lead's tests/unit/test_dry_run.py.)
DRY_RUN_CASES = [
    dataclasses.replace(c, id=f"{c.id}-dry-run", args=(*c.args, "--dry-run"))
    for c in CASES
    if c.command == "deploy" and c.code == 2 and "--dry-run" not in c.args
    and not c.id.startswith(("artifact-", "rollback-binary-"))
]


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stderr():
    yield
    configure("json", stream=sys.stderr)  # CliRunner's stream is closed once the invocation ends


@dataclass
class World:
    tmp: Path
    paths: dict[str, str]
    sims: list[SimFleet]
    calls: Path  # what the refusing incus was asked, if anything
    case: Case | None = None
    app: object = None


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
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
    os.mkfifo(tmp_path / "fifo")
    # An incus that records and refuses: nothing here may reach a real container.
    calls = tmp_path / "incus-calls"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "incus").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "Error: not in this test" >&2\nexit 1\n')
    (bindir / "incus").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    paths = {"tmp": str(tmp_path), "good": str(good), "dir": str(tmp_path / "a-dir"), "symlink": str(tmp_path / "link"),
             "noexec": str(noexec), "empty": str(empty), "fifo": str(tmp_path / "fifo")}
    w = World(tmp_path, paths, [], calls)

    def build(settings):
        """The CLI's fleet factory: a simulated fleet, with the real parts and faults the case asks for."""
        case = w.case or Case("")
        if case.real_fleet:
            return build_fleet(settings)
        sim = SimFleet(list(settings.pool.nodes), install_dir=settings.service.install_dir)
        fleet, _ = sim_fleet(settings, sim)
        if case.real_prom:
            fleet.prom = Prometheus(make_http_client(settings), settings.prometheus.url)
        if case.real_lb:
            fleet.lb_client = httpx.Client(timeout=settings.timeouts.http, follow_redirects=False)
        for fault in case.faults:
            kind, _, node = fault.partition(":")
            if kind == "haproxy-down":
                sim.haproxy_down = True
            elif kind == "lock-unreadable":
                sim.observers.append(_refuse_state_reads)
            elif kind == "stopped":
                sim.nodes[node].stopped = True
            elif kind == "broken":
                sim.broken_nodes.add(node)
        w.sims.append(sim)
        return fleet

    w.app = build_app(fleet_factory=build)
    return w


def _refuse_state_reads(event: str) -> None:
    if event.startswith("state:"):
        raise CommandFailed("[haproxy] cat: /var/lib/veza-canary/lock.json: Input/output error")


def _fmt(s: str, paths: dict[str, str]) -> str:
    for k, v in paths.items():
        s = s.replace("{" + k + "}", v)
    return s


def _args(case: Case, w: World) -> list[str]:
    args = [case.command]
    if case.command == "deploy":
        args.append("--yes")
        if case.artifact and "--artifact" not in case.args:
            args += ["--artifact", w.paths["good"]]
    return args + [_fmt(a, w.paths) for a in case.args]


def _run(case: Case, w: World, *extra: str):
    w.case = case
    for rel, data in case.files.items():
        (w.tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (w.tmp / rel).write_bytes(data)
    env = {"STATE_DIR": str(w.tmp / "state"), **{k: _fmt(v, w.paths) for k, v in case.env.items()}}
    return cli.invoke(w.app, [*_args(case, w), *extra], env=env)


def _assert_nothing_changed(w: World) -> None:
    """Not one incus call; on the simulated fleet, reads only."""
    assert not w.calls.exists(), f"incus was called: {w.calls.read_text()}"
    for sim in w.sims:
        writes = [c for c in sim.commands if c[0] == "haproxy" and not c[1].startswith("show ")]
        writes += [c for c in sim.commands if c[0] != "haproxy" and not _is_read(c[1])]
        assert not writes, f"changed: {writes}"
        assert all(n.restarts == 0 for n in sim.nodes.values())
        assert not [p for p in sim.state_files if p.endswith("lock.json") or "/blocked/" in p]


#: Commands that only read (the on-call commands read binaries, health and versions on the nodes).
_READS = ("sha256sum", "find", "curl", "true", "cat", "ls")


def _is_read(command: str) -> bool:
    return command.split()[0] in _READS or command.endswith("/veza-api --version")


def _assert_secret_kept(secret: str, r, w: World) -> None:
    assert secret not in r.stdout + r.stderr, "a secret reached the terminal"
    for p in (w.tmp / "state").glob("reports/*.json"):
        assert secret not in p.read_text(), f"a secret reached the report {p.name}"


@pytest.mark.parametrize("case", CASES + DRY_RUN_CASES, ids=[c.id for c in CASES + DRY_RUN_CASES])
def test_bad_input_is_one_line_a_documented_code_and_changes_nothing(case: Case, world: World):
    r = _run(case, world)

    out = r.stdout + r.stderr
    assert r.exit_code == case.code, f"exit {r.exit_code}, expected {case.code}:\n{out[-2000:]}"
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("veza-canary: error:")]
    assert len(errors) == 1, f"expected one error line, got {errors}:\n{out[-2000:]}"
    assert case.needle in errors[0], f"{case.needle!r} not in {errors[0]!r}"
    if os.environ.get("VEZA_BAD_INPUT_TABLE"):  # docs/reliability.md's table of messages
        with open(os.environ["VEZA_BAD_INPUT_TABLE"], "a") as f:
            f.write(f"| {case.id} | {r.exit_code} | `{errors[0].removeprefix('veza-canary: error: ')[:150]}` |\n")
    assert "Traceback" not in out and r.exception is None or isinstance(r.exception, SystemExit), out[-2000:]
    if case.secret:
        _assert_secret_kept(case.secret, r, world)
    _assert_nothing_changed(world)
    for p in (world.tmp / "state").glob("reports/*.json"):
        data = json.loads(p.read_text())
        assert data["exit_code"] == case.code and data["message"]


# -- honest status: what cannot be read is "unknown", and the exit code is 10 ----------------------------------

STATUS_UNREADABLE = [
    Case("haproxy-down", command="status", args=("--no-sli",), faults=("haproxy-down",)),
    Case("lock-unreadable", command="status", args=("--no-sli",), faults=("lock-unreadable",)),
    Case("haproxy-down-and-lock-unreadable", command="status", faults=("haproxy-down", "lock-unreadable")),
    Case("incus-host-unreachable", {"INCUS_HOST": "ssh://deploy@127.0.0.1:1", "SSH_CONNECT_TIMEOUT": "3"},
         command="status", args=("--no-sli",), real_fleet=True),
]


@pytest.mark.parametrize("fmt", ["table", "json"])
@pytest.mark.parametrize("case", STATUS_UNREADABLE, ids=[c.id for c in STATUS_UNREADABLE])
def test_status_that_cannot_read_a_part_says_unknown_and_exits_10(case: Case, fmt: str, world: World):
    r = _run(case, world, "--format", fmt)
    assert r.exit_code == 10, r.output[-2000:]
    haproxy_unknown = "haproxy-down" in case.faults or case.real_fleet
    lock_unknown = "lock-unreadable" in case.faults or case.real_fleet
    if fmt == "json":
        d = json.loads(r.stdout)
        assert d["errors"]
        if haproxy_unknown:
            assert d["in_rotation"] == "unknown" and all(n["in_rotation"] is None for n in d["nodes"])
        else:
            assert d["in_rotation"] == len(d["nodes"])
        if lock_unknown:
            assert d["lock_state"] == "unknown" and d["lock"] == "unknown"
            assert d["blocked_releases"] == "unknown"
        else:
            assert d["lock_state"] == "free" and d["lock"] is None
    else:
        text = r.stdout
        assert " 0 in rotation" not in text
        assert ("in rotation: unknown" in text) is haproxy_unknown
        assert ("lock: unknown" in text) is lock_unknown and ("lock: free" in text) is not lock_unknown
        assert "could not read:" in text
    _assert_nothing_changed(world)


# -- secrets on the paths that succeed: the plan, status, health, the SLI check, debug logs -----------------------

SECRET_ENV = {"NODE_HEALTH_URL": f"http://probe:{S}@127.0.0.1:8080", "LB_URL": f"http://lb:p@ss{S}@lb.example",
              "PROM_URL": f"https://prom.example:9090/?access_token={S}&x-amz-signature={S}"}
SECRET_RUNS = [
    Case("deploy-dry-run-plan", SECRET_ENV, args=("--dry-run", "-v", "--log-format", "json"), needle="[REDACTED]"),
    Case("rollback-dry-run", SECRET_ENV, command="rollback", args=("--dry-run", "-v")),
    Case("status-json", SECRET_ENV, command="status", args=("--format", "json", "-v")),
    Case("status-table", SECRET_ENV, command="status"),
    Case("health-node", SECRET_ENV, command="health", args=("backend-api-1", "-v"), needle="[REDACTED]"),
    Case("sli-check-json", SECRET_ENV, command="sli", args=("check", "--format", "json", "-v"), needle="[REDACTED]"),
    Case("sli-check-table", SECRET_ENV, command="sli", args=("check",), needle="[REDACTED]"),
]


@pytest.mark.parametrize("case", SECRET_RUNS, ids=[c.id for c in SECRET_RUNS])
def test_secrets_in_urls_never_leave_the_process_on_success_either(case: Case, world: World):
    r = _run(case, world)
    assert r.exit_code == 0, r.output[-2000:]
    _assert_secret_kept(S, r, world)
    assert case.needle in r.stdout + r.stderr  # where the command prints the URL, it prints it redacted


# -- make: the variable reaches the tool verbatim, never a shell ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
MAKE_PAYLOADS = ['x"; touch {pwned}; "', "'; touch {pwned}; '", "$(shell touch {pwned})", "`touch {pwned}`",
                 "$$(touch {pwned})", "x$(DEPLOY_ARGS)"]


@pytest.mark.parametrize("payload", MAKE_PAYLOADS)
def test_make_deploy_canary_passes_artifact_verbatim_without_a_shell(payload: str, world: World):
    pwned = world.tmp / "pwned"
    value = payload.format(pwned=pwned)
    env = {**os.environ, "STATE_DIR": str(world.tmp / "state")}
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "deploy-canary", f"ARTIFACT={value}", "DEPLOY_ARGS=--dry-run"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert not pwned.exists(), "the ARTIFACT value ran in a shell"
    assert r.returncode in (0, 2), r.stderr[-2000:]  # 2 once the dry run checks the artifact file
    assert value in r.stdout + r.stderr, "the tool did not get the value verbatim"
    assert not world.calls.exists()


def test_make_deploy_args_are_words_not_shell_text(world: World):
    pwned = world.tmp / "pwned"
    env = {**os.environ, "STATE_DIR": str(world.tmp / "state")}
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "deploy-canary", f"ARTIFACT={world.paths['good']}",
                        f"DEPLOY_ARGS=--dry-run; touch {pwned}"], env=env, capture_output=True, text=True, timeout=120)
    assert not pwned.exists()
    assert r.returncode == 2 and "--dry-run;" in r.stderr


def test_at_least_thirty_bad_inputs_are_covered():
    assert len(CASES) >= 30
