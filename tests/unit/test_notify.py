"""Webhooks against a real HTTP receiver on 127.0.0.1: payload, retries, down/slow/500 receivers, redaction."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog

from veza_canary.notify import (
    CANARY_IN_ROTATION,
    DEPLOY_STARTED,
    ROLLED_BACK,
    SCHEMA,
    Notifier,
    RunFacts,
    shown_url,
)

FACTS = RunFacts(command="deploy", artifact_path="/builds/veza-api", sha256="ab" * 32, version="1.4.2",
                 nodes=("backend-api-2", "backend-api-1"), canary="backend-api-2",
                 report_path="/state/reports/deploy-1.json", operator="alice@laptop", run_id="r1")


@dataclass
class Receiver:
    """A webhook receiver: answers ``statuses`` in turn (then 200), after ``delay`` seconds each."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[dict] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                rec.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                     "at": time.monotonic()})
                if rec.delay:
                    time.sleep(rec.delay)
                code = rec.statuses.pop(0) if rec.statuses else 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *_a: object) -> None:
                pass

        return H

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), rec.handler())
    server.daemon_threads = True
    server.block_on_close = False
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/s3cr3tpath"
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/hook"


def _notifier(*urls: str, sleeps: list[float] | None = None, **kw) -> Notifier:
    slept = sleeps if sleeps is not None else []
    kw.setdefault("timeout", 1.0)
    return Notifier(list(urls), sleep=slept.append, **kw)


def test_the_payload_names_the_event_artifact_nodes_operator_and_has_a_slack_text(receiver):
    ev = FACTS.event(ROLLED_BACK, "canary backend-api-2 rolled back: p95 0.91s > 0.5s", exit_code=5,
                     fleet_state={"nodes": {"backend-api-2": {"binary": "rollback"}}},
                     cause="sli-watch: p95 0.91s > 0.5s", evidence=[{"at": 30.0, "p95": 0.91}])
    [d] = _notifier(receiver.url).deliver(ev)
    assert d.ok and d.status == 200 and d.attempts == 1
    [req] = receiver.requests
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["path"] == "/services/T0/B0/s3cr3tpath"
    body = json.loads(req["body"])
    assert body["schema"] == SCHEMA
    assert body["event"] == "rolled-back"
    assert body["artifact"] == {"path": "/builds/veza-api", "sha256": "ab" * 32, "version": "1.4.2"}
    assert body["nodes"] == ["backend-api-2", "backend-api-1"] and body["canary"] == "backend-api-2"
    assert body["exit_code"] == 5 and body["report"] == "/state/reports/deploy-1.json"
    assert body["operator"] == "alice@laptop" and body["run_id"] == "r1"
    assert body["fleet_state"]["nodes"]["backend-api-2"]["binary"] == "rollback"
    assert body["data"]["cause"].startswith("sli-watch") and body["data"]["evidence"][0]["p95"] == 0.91
    # Slack's incoming webhooks show ``text``: one line with what, which build, who and the exit code.
    assert isinstance(body["text"], str) and "\n" not in body["text"]
    for part in ("rolled back", "abababababab", "1.4.2", "alice@laptop", "exit 5"):
        assert part in body["text"]


def test_a_receiver_that_answers_500_is_retried_with_backoff_then_recorded_as_failed(receiver):
    receiver.statuses = [500, 500, 500]
    sleeps: list[float] = []
    n = _notifier(receiver.url, sleeps=sleeps, attempts=3, backoff=0.5)
    [d] = n.deliver(FACTS.event(DEPLOY_STARTED, "starting"))
    assert not d.ok and d.status == 500 and d.attempts == 3 and "HTTP 500" in (d.error or "")
    assert len(receiver.requests) == 3
    assert sleeps == [0.5, 1.0], "exponential backoff through the injected sleep, never a real one"
    assert n.deliveries() == [d]


def test_a_500_then_a_200_is_delivered_on_the_retry(receiver):
    receiver.statuses = [503, 429]
    [d] = _notifier(receiver.url).deliver(FACTS.event(DEPLOY_STARTED, "starting"))
    assert d.ok and d.attempts == 3 and len(receiver.requests) == 3


def test_a_4xx_is_permanent_and_not_retried(receiver):
    receiver.statuses = [404]
    sleeps: list[float] = []
    [d] = _notifier(receiver.url, sleeps=sleeps).deliver(FACTS.event(DEPLOY_STARTED, "starting"))
    assert not d.ok and d.status == 404 and d.attempts == 1 and sleeps == []


def test_a_receiver_that_is_down_is_retried_then_recorded_never_raised(closed_port_url):
    sleeps: list[float] = []
    [d] = _notifier(closed_port_url, sleeps=sleeps, attempts=3).deliver(FACTS.event(DEPLOY_STARTED, "x"))
    assert not d.ok and d.attempts == 3 and d.status is None
    assert "Connect" in (d.error or "")
    assert len(sleeps) == 2


def test_a_slow_receiver_times_out_each_attempt_and_is_recorded(receiver):
    receiver.delay = 0.6
    t0 = time.monotonic()
    [d] = _notifier(receiver.url, timeout=0.2, attempts=2).deliver(FACTS.event(DEPLOY_STARTED, "x"))
    took = time.monotonic() - t0
    assert not d.ok and d.attempts == 2 and "timed out" in (d.error or "")
    assert took < 1.2, f"two 0.2 s attempts took {took:.2f}s"


def test_emit_returns_at_once_even_when_the_receiver_is_slow(receiver):
    receiver.delay = 0.2
    n = _notifier(receiver.url, timeout=2.0)
    t0 = time.monotonic()
    n.emit(FACTS.event(DEPLOY_STARTED, "x"))
    n.emit(FACTS.event(CANARY_IN_ROTATION, "y"))
    assert time.monotonic() - t0 < 0.1, "a deploy step must never wait for a receiver"
    records = n.close()
    assert [r.event for r in records] == ["deploy-started", "canary-in-rotation"]
    assert all(r.ok for r in records)


def test_close_waits_only_up_to_its_bound_and_records_what_was_abandoned(receiver):
    receiver.delay = 1.0
    n = _notifier(receiver.url, timeout=3.0)
    for name in (DEPLOY_STARTED, CANARY_IN_ROTATION, ROLLED_BACK):
        n.emit(FACTS.event(name, "x"))
    t0 = time.monotonic()
    records = n.close(timeout=0.3)
    assert time.monotonic() - t0 < 0.8
    abandoned = [r for r in records if r.error and r.error.startswith("abandoned")]
    assert [r.event for r in abandoned] == ["canary-in-rotation", "rolled-back"]


def test_events_reach_each_url_in_order_and_a_dead_url_does_not_hold_up_a_live_one(receiver, closed_port_url):
    n = Notifier([closed_port_url, receiver.url], timeout=1.0, sleep=lambda _s: time.sleep(0.3))
    for i in range(3):
        n.emit(FACTS.event(DEPLOY_STARTED, f"event {i}"))
    deadline = time.monotonic() + 2
    while len(receiver.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [b["summary"] for b in receiver.bodies] == ["event 0", "event 1", "event 2"]
    records = n.close(timeout=0.1)
    assert sum(r.ok for r in records) == 3


def test_the_events_filter_drops_unwanted_events(receiver):
    n = _notifier(receiver.url, events={ROLLED_BACK})
    n.emit(FACTS.event(DEPLOY_STARTED, "x"))
    n.emit(FACTS.event(ROLLED_BACK, "y"))
    n.close()
    assert [b["event"] for b in receiver.bodies] == ["rolled-back"]


def test_no_urls_means_no_threads_and_no_records():
    n = Notifier([])
    before = threading.active_count()
    n.emit(FACTS.event(DEPLOY_STARTED, "x"))
    assert threading.active_count() == before and n.close() == [] and not n.enabled


def test_webhook_secrets_never_reach_logs_records_or_the_payload(receiver):
    secret_url = receiver.url.replace("http://", "http://bot:hunter2@") + "?token=abc123secret"
    with structlog.testing.capture_logs() as logs:
        n = _notifier(secret_url)
        [d] = n.deliver(FACTS.event(DEPLOY_STARTED, "deploying with password=hunter2"))
    assert d.ok
    assert d.url == f"http://127.0.0.1:{receiver.url.split(':')[2].split('/')[0]}/[REDACTED]"
    dumped = json.dumps(logs) + json.dumps(d.to_dict()) + receiver.requests[0]["body"].decode()
    for secret in ("hunter2", "s3cr3tpath", "abc123secret"):
        assert secret not in dumped


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/[REDACTED]"),
    ("https://u:p@example.com:8443/", "https://example.com:8443"),
    ("https://example.com?key=v", "https://example.com/[REDACTED]"),
    ("http://[::1", "[REDACTED]"),
])
def test_shown_url_keeps_only_scheme_and_host(url, shown):
    assert shown_url(url) == shown


def test_https_is_verified_by_default(tmp_path):
    """A receiver with a self-signed certificate is refused (and recorded), not trusted."""
    import ssl
    cert, key = _self_signed(tmp_path)
    rec = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), rec.handler())
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        [d] = _notifier(f"https://127.0.0.1:{server.server_address[1]}/h", attempts=1).deliver(
            FACTS.event(DEPLOY_STARTED, "x"))
    finally:
        server.shutdown()
        server.server_close()
    assert not d.ok and "CERTIFICATE_VERIFY_FAILED" in (d.error or ""), d.error
    assert rec.requests == []


def _self_signed(tmp_path):
    import datetime as dt

    from cryptography import x509  # paramiko's dependency: always installed
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(c), str(k)


def test_after_a_failed_event_a_dead_url_gets_one_attempt_per_event_until_it_answers(receiver):
    receiver.statuses = [500, 500, 500, 500, 500]  # event 1: 3 attempts; events 2, 3: one each; event 4: ok
    n = _notifier(receiver.url, attempts=3)
    for i in range(4):
        n.emit(FACTS.event(DEPLOY_STARTED, f"e{i}"))
    records = n.close()
    assert [(r.ok, r.attempts) for r in records] == [(False, 3), (False, 1), (False, 1), (True, 1)]


def test_the_local_sink_receives_what_a_notifier_sends():
    from veza_canary.notify import LocalSink

    with LocalSink() as sink:
        n = Notifier([sink.url])
        n.emit(FACTS.event(ROLLED_BACK, "canary rolled back", exit_code=5, cause="p95"))
        got = sink.wait_for("rolled-back", timeout=5)
        assert n.close() and got is not None
        assert got["exit_code"] == 5 and got["data"]["cause"] == "p95" and "rolled back" in got["text"]
        assert sink.wait_for("peers-done", timeout=0.05) is None


def test_ctrl_c_while_close_waits_stops_the_wait_not_the_process(receiver):
    import os
    import signal

    receiver.delay = 2.0
    n = _notifier(receiver.url, timeout=5.0)
    n.emit(FACTS.event(DEPLOY_STARTED, "x"))
    time.sleep(0.05)
    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    n.close(timeout=5.0)  # must not raise KeyboardInterrupt
    assert time.monotonic() - t0 < 1.5
