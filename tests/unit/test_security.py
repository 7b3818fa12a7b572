"""Security defaults, checked by behaviour where possible.

* TLS to Prometheus is verified by default: a self-signed server is refused; PROM_CA_BUNDLE
  makes it trusted; a server that demands a client certificate gets PROM_CLIENT_CERT/KEY.
* Secrets come only from files or the environment (no knob takes a secret value), and never
  reach a log line, the terminal, the dry-run plan or the JSON report: URL credentials and
  the bearer token from PROM_TOKEN_FILE.
* The lock, the blocked-release entries and the report are written 0600 (the report's
  directory 0700); the artifact snapshot lives in a private 0700 directory.
* SSH host keys are verified by default (unknown keys refused; accept-new is opt-in). The
  end-to-end proof against a real sshd is tests/integration/test_ssh_transport.py.
* No shell: tests/unit/test_no_shell.py (a static scan of the package). The ruff S rules
  (bandit's checks) are on and may only be relaxed for the documented reasons.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from tests.settings_helper import make_settings
from veza_canary.artifact import private_workdir, snapshot
from veza_canary.cli import app
from veza_canary.errors import PrometheusError
from veza_canary.lock import BlockedReleases, FleetLock, LockInfo, StateStore
from veza_canary.log import configure, redact_text
from veza_canary.prometheus import Prometheus, make_http_client
from veza_canary.report import Report
from veza_canary.settings import KNOBS, Settings, load_settings
from veza_canary.transport import LocalTransport

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-4b1d-SECRET-9f3e"  # noqa: S105 - a test secret that must never be printed
PASSWORD = "pw-Hunter2-SECRET"  # noqa: S105


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stderr():
    yield
    configure("json", stream=sys.stderr)


# --- a tiny PKI and an HTTPS "Prometheus" --------------------------------------------------------------


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_cert=None, issuer_key=None, *, ca=False, ip=None, client=False):
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    if client:
        b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, *objs) -> Path:
    data = b""
    for o in objs:
        if isinstance(o, x509.Certificate):
            data += o.public_bytes(serialization.Encoding.PEM)
        else:
            data += o.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("veza test CA", ca_key, ca=True)
    srv_key = _key()
    srv = _cert("127.0.0.1", srv_key, ca, ca_key, ip="127.0.0.1")
    cli_key = _key()
    cli = _cert("veza-canary", cli_key, ca, ca_key, client=True)
    return {"ca": _write(d / "ca.pem", ca), "srv": _write(d / "srv.pem", srv, srv_key),
            "cli": _write(d / "cli.pem", cli), "cli_key": _write(d / "cli.key", cli_key)}


class _Prom(BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def log_message(self, *_a: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [0, "1.5"]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def https_prom(pki) -> Iterator[callable]:
    servers = []

    def start(*, require_client_cert: bool = False) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["srv"])
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki["ca"])
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Prom)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"https://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _query(settings: Settings) -> float:
    with make_http_client(settings) as c:
        return Prometheus(c, settings.prometheus.url).query("up")[0].value


def test_tls_is_verified_by_default_a_self_signed_prometheus_is_refused(https_prom):
    url = https_prom()
    with pytest.raises(PrometheusError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        _query(make_settings(prom_url=url))


def test_prom_ca_bundle_makes_the_private_ca_trusted(https_prom, pki):
    url = https_prom()
    assert _query(make_settings(prom_url=url, prom_ca_bundle=pki["ca"])) == 1.5


def test_client_certificate_is_presented_when_configured(https_prom, pki):
    url = https_prom(require_client_cert=True)
    s = make_settings(prom_url=url, prom_ca_bundle=pki["ca"])
    with pytest.raises(PrometheusError):
        _query(s)  # the server demands a client certificate
    ok = make_settings(prom_url=url, prom_ca_bundle=pki["ca"], prom_client_cert=pki["cli"],
                            prom_client_key=pki["cli_key"])
    assert _query(ok) == 1.5


def test_tls_knobs_on_a_plain_http_url_are_refused():
    from veza_canary.errors import ConfigError

    with pytest.raises(ConfigError, match="PROM_URL"):
        load_settings({}, {"PROM_URL": "http://prom:9090", "PROM_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"})


# --- secrets --------------------------------------------------------------------------------------------


def test_no_knob_takes_a_secret_value_only_a_file():
    """Secrets come from files (or the environment as URL credentials), never as a plain value knob."""
    secretish = ("token", "password", "passwd", "secret", "credential", "key")
    for k in KNOBS:
        if any(w in k.name for w in secretish) and k.parse.__name__ != "_p_bool":
            assert k.parse.__name__ == "_p_path", f"{k.name} must be a path to a file, not the secret itself"


def test_bearer_token_from_file_is_sent_and_never_logged_or_reported(https_prom, pki, tmp_path):
    url = https_prom()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    s = make_settings(prom_url=url, prom_ca_bundle=pki["ca"], prom_token_file=token_file)
    _Prom.seen_auth.clear()
    with structlog.testing.capture_logs() as logs:
        assert _query(s) == 1.5
    assert _Prom.seen_auth == [f"Bearer {TOKEN}"]
    assert TOKEN not in json.dumps(logs, default=str)
    rep = Report(settings=s.public_dict())
    assert TOKEN not in json.dumps(rep.to_dict(), default=str)


def test_unreadable_token_file_is_a_config_error_without_its_content(tmp_path):
    from veza_canary.errors import ConfigError

    with pytest.raises(ConfigError, match="prom-token-file.*no such file"):
        make_settings(prom_token_file=tmp_path / "missing")
    token = tmp_path / "token"
    token.write_text("s3cr3t-token-value")
    token.chmod(0)
    if os.geteuid() != 0:  # root reads any file; the unreadable case is covered by check_readable_file's tests
        with pytest.raises(ConfigError, match="PROM_TOKEN_FILE") as exc:
            make_http_client(make_settings(prom_token_file=token))
        assert "s3cr3t" not in str(exc.value)


@pytest.mark.parametrize("text", [
    f"http://admin:{PASSWORD}@prom:9090/api",
    f"ssh://deploy:{PASSWORD}@incus-host:22",
    f"Authorization: Bearer {TOKEN}",
    f"password={PASSWORD}&x=1",
    f"token={TOKEN}",
    # URLs are parsed: a password may hold "@" (and "/", "?", "#"), query and fragment keys ending in a secret word
    f"http://admin:p@ss{PASSWORD}@prom:9090/api",
    f"https://admin:a/b?c#{PASSWORD}@prom:9090/api",
    f"ssh://deploy:@{PASSWORD}@incus-host",
    f"https://hooks.example/x?access_token={TOKEN}&page=2",
    f"https://s3.example/b/o?X-Amz-Signature={TOKEN}&X-Amz-Date=1",
    f"https://h/x?sig={TOKEN}",
    f"https://h/x?auth={TOKEN}",
    f"https://h/x?key={TOKEN}",
    f"https://h/x?api_key={TOKEN}",
    f"https://h/x?client_secret={TOKEN}",
    f"https://h/x#access_token={TOKEN}&token_type=bearer",
    f"curl -sS http://probe:{PASSWORD}@127.0.0.1:8080/api/v1/health",
    f"PROM_URL=https://prom:9090/?access_token={TOKEN} veza-canary status",
    f"access_token={TOKEN}",
    f"'https://u:{PASSWORD}@h/'",
])
def test_redaction_removes_every_kind_of_secret(text):
    out = redact_text(text)
    assert PASSWORD not in out and TOKEN not in out and "[REDACTED]" in out


@pytest.mark.parametrize("text,kept", [
    ("https://prom.example:9090/api/v1/query?query=up&time=1", "https://prom.example:9090/api/v1/query?query=up&time=1"),
    ("http://127.0.0.1:8080/api/v1/health", "http://127.0.0.1:8080/api/v1/health"),
    ("http://[::1]:9090/-/ready", "http://[::1]:9090/-/ready"),
    ("ssh://deploy@incus-host:22", "ssh://[REDACTED]@incus-host:22"),  # the user name goes too: userinfo is whole
    ("https://u:pw@h/x?a=1&token=t#frag", "https://[REDACTED]@h/x?a=1&token=[REDACTED]#frag"),
    ("sort=name&page=2", "sort=name&page=2"),
])
def test_redaction_keeps_what_is_not_secret(text, kept):
    assert redact_text(text) == kept


def test_urls_with_credentials_are_redacted_in_logs_plan_and_report(tmp_path, monkeypatch):
    for k in KNOBS:
        monkeypatch.delenv(k.env, raising=False)
    monkeypatch.chdir(tmp_path)
    artifact = tmp_path / "veza-api"
    artifact.write_bytes(b"#!/bin/sh\necho veza-api 2.0.0\n")
    artifact.chmod(0o755)
    env = {"PROM_URL": f"https://admin:{PASSWORD}@prom.example:9090", "LB_URL": f"http://u:{PASSWORD}@lb.example",
           "NODE_HEALTH_URL": f"http://probe:p@{PASSWORD}@127.0.0.1:8080", "STATE_DIR": str(tmp_path / "state"),
           "ARTIFACT": str(artifact)}
    r = CliRunner().invoke(app, ["--log-format", "json", "deploy", "--dry-run", "-v"], env=env)
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.stdout + r.stderr
    assert "[REDACTED]" in r.stdout
    s = load_settings({}, env)
    assert PASSWORD not in json.dumps(Report(settings=s.public_dict()).to_dict(), default=str)
    configure("json", stream=(buf := io.StringIO()))  # the CLI's own processor chain, rendering to a buffer
    structlog.get_logger("t").info("x", url=s.prometheus.url, argv=["curl", s.service.lb_url], note=f"to {s.service.lb_url}")
    assert PASSWORD not in buf.getvalue() and "[REDACTED]" in buf.getvalue()


# --- files and permissions ------------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_lock_and_blocked_release_files_are_0600(tmp_path):
    old = os.umask(0o022)
    try:
        store = StateStore(LocalTransport(), str(tmp_path / "fleet"))
        lock = FleetLock(store)
        lock.acquire(LockInfo.mine("ab" * 32, "veza-canary deploy"))
        assert _mode(tmp_path / "fleet" / "lock.json") == 0o600
        BlockedReleases(store).block("cd" * 32, "sli-watch: p95", dt.datetime.now(dt.UTC))
        assert _mode(tmp_path / "fleet" / "blocked" / f"{'cd' * 32}.json") == 0o600
        lock.release()
        assert not (tmp_path / "fleet" / "lock.json").exists()
        assert not list((tmp_path / "fleet").glob(".staged-*")), "a staged copy was left behind"
    finally:
        os.umask(old)


def test_report_is_0600_in_a_0700_directory(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "reports" / "deploy.json"
        Report().write(p)
        assert _mode(p) == 0o600 and _mode(p.parent) == 0o700
    finally:
        os.umask(old)


def test_artifact_snapshot_lives_in_a_private_directory(tmp_path):
    src = tmp_path / "veza-api"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o755)
    work = private_workdir()
    try:
        art = snapshot(src, "ARTIFACT", work)
        assert _mode(work) == 0o700 and _mode(art.path) == 0o700
    finally:
        shutil.rmtree(work)


# --- SSH host keys ------------------------------------------------------------------------------------------------


def test_ssh_host_keys_are_verified_by_default():
    from veza_canary.transport.ssh import SSHTransport

    assert Settings().ssh.accept_new_host_key is False
    t = SSHTransport.from_settings(make_settings(incus_host="ssh://deploy@incus-host:2222"))
    assert t.accept_new_host_key is False


# --- static checks ---------------------------------------------------------------------------------------------------


def test_bandit_rules_are_on_and_relaxed_only_for_documented_reasons():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "S" in cfg["select"], "ruff's S (bandit) rules must stay on"
    # S101 assert (tests and invariants), S603/S607 subprocess with an argv list / a PATH lookup (the
    # transports: argv only, never shell=True -- see test_no_shell.py), S108 /tmp paths (the lab, staging).
    assert set(cfg.get("ignore", [])) & {r for r in cfg.get("ignore", []) if r.startswith("S")} <= {
        "S101", "S603", "S607", "S108"}


def test_ruff_security_rules_pass_on_the_package():
    ruff = ROOT / ".venv" / "bin" / "ruff"
    if not ruff.exists():
        ruff = Path(shutil.which("ruff") or "ruff")
    # The project's own configuration (what CI runs); only the S findings are this test's business.
    r = subprocess.run([str(ruff), "check", "--output-format", "json", "--exit-zero", str(ROOT / "veza_canary")],
                       capture_output=True, text=True, check=True, cwd=ROOT)
    findings = [f for f in json.loads(r.stdout) if (f.get("code") or "").startswith("S")]
    assert not findings, [f"{f['filename']}:{f['location']['row']} {f['code']} {f['message']}" for f in findings]


def test_work_dirs_of_killed_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    """A SIGKILLed run leaves its private copy of the binaries in /tmp; the next run removes it."""
    import tempfile

    from veza_canary.artifact import remove_stale_workdirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        stale = tmp_path / f"veza-canary-{dead.pid}-abcd"
        running = tmp_path / f"veza-canary-{live.pid}-efgh"
        mine = private_workdir()
        for d in (stale, running):
            d.mkdir()
            (d / "artifact.bin").write_bytes(b"x")
        assert remove_stale_workdirs() == [stale]
        assert not stale.exists() and running.exists() and mine.exists()
    finally:
        live.kill()
        live.wait()
