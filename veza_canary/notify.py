"""Webhooks: tell people what a deploy did, without ever slowing or breaking it.

An ``Event`` is one fact about a run (deploy started, canary in rotation, a step's
verdict, rolled back, peers done, failed, interrupted, lock taken over) plus what
every event carries: the artifact, the nodes, the fleet state, the exit code, the
report's path, the operator and a one-line summary. ``Event.payload()`` is the JSON
body; it has a ``text`` field, so a Slack (or Mattermost, or Discord ``/slack``)
incoming-webhook URL works as is, and the structured fields for anything else.

``Notifier`` posts each event to every URL of ``WEBHOOK_URLS``:

* **Off the main thread.** ``emit`` queues the event and returns at once; one worker
  thread per URL posts that URL's events in order. A receiver that is slow or down
  never delays a drain or a rollback, and one bad receiver never delays another.
  ``close`` waits for the queues, bounded by ``flush_timeout`` (by default long
  enough for one event's full retry sequence), and returns the delivery records for
  the report; an event still queued then is recorded as abandoned, not waited for.
* **Short timeout, a few retries.** Each POST has ``timeout`` seconds; a connection
  error, a timeout, HTTP 429 or 5xx is retried with exponential backoff (tenacity,
  with an injectable ``sleep`` so tests never sleep); any other 4xx is permanent
  (a wrong URL does not get better by asking again).
* **A dead receiver is not asked thrice for every event.** Once a URL has failed
  every attempt of one event, its next events get a single attempt each, until
  one is delivered.
* **Never raises.** Every failure is logged and becomes a ``Delivery`` record with
  ``ok: false``; nothing here raises into the deploy.
* **No secrets out.** Event text goes through ``log.redact_value``; a URL is only
  ever logged or recorded as ``shown_url(url)`` (scheme and host: a Slack URL's
  secret is its path). TLS is verified (httpx's default trust store, or the
  ``SSL_CERT_FILE``/``SSL_CERT_DIR`` the environment names); redirects are not
  followed.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import tenacity

from veza_canary import __version__
from veza_canary.log import REDACTED, get_logger, redact_text, redact_value

if TYPE_CHECKING:
    from veza_canary.settings import Settings

log = get_logger(__name__)

# --- events --------------------------------------------------------------------------------

DEPLOY_STARTED = "deploy-started"
CANARY_IN_ROTATION = "canary-in-rotation"
VERDICT = "verdict"
ROLLED_BACK = "rolled-back"
PEERS_DONE = "peers-done"
FAILED = "failed"
INTERRUPTED = "interrupted"
LOCK_TAKEN_OVER = "lock-taken-over"

#: Every event name, in the order a run can emit them.
EVENTS: tuple[str, ...] = (DEPLOY_STARTED, LOCK_TAKEN_OVER, CANARY_IN_ROTATION, VERDICT, ROLLED_BACK,
                           PEERS_DONE, FAILED, INTERRUPTED)

#: Version of the payload's shape; bumped when a field changes meaning or goes away.
SCHEMA = "veza-canary.event/1"

_ICONS = {DEPLOY_STARTED: ":rocket:", CANARY_IN_ROTATION: ":hatching_chick:", VERDICT: ":mag:",
          ROLLED_BACK: ":rotating_light:", PEERS_DONE: ":white_check_mark:", FAILED: ":x:",
          INTERRUPTED: ":warning:", LOCK_TAKEN_OVER: ":unlock:"}


def operator() -> str:
    """``user@host`` of whoever runs this process (CI: the runner's account)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def new_run_id() -> str:
    """A short id that ties the events, hooks and history entry of one run together."""
    return secrets.token_hex(6)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFacts:
    """What stays the same for every event of one run. ``event`` makes an Event from it."""

    command: str = "deploy"
    artifact_path: str | None = None
    sha256: str | None = None
    version: str | None = None  # when the binary reports one
    nodes: tuple[str, ...] = ()  # canary first
    canary: str | None = None
    report_path: str | None = None
    operator: str = field(default_factory=operator)
    run_id: str = field(default_factory=new_run_id)

    def with_(self, **changes: Any) -> RunFacts:
        """A copy with some facts filled in (the sha256 once preflight has hashed the artifact)."""
        return replace(self, **changes)

    def event(self, name: str, summary: str, *, exit_code: int | None = None,
              fleet_state: Mapping[str, Any] | None = None, **data: Any) -> Event:
        return Event(name=name, summary=summary, facts=self, exit_code=exit_code,
                     fleet_state=dict(fleet_state or {}), data=data)


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One thing that happened. ``data`` holds what is particular to it (step, verdict, cause, evidence...)."""

    name: str
    summary: str
    facts: RunFacts = field(default_factory=RunFacts)
    exit_code: int | None = None
    fleet_state: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def text(self) -> str:
        """The one line a chat channel shows."""
        f = self.facts
        sha = f" {f.sha256[:12]}" if f.sha256 else ""
        ver = f" ({f.version})" if f.version else ""
        code = f" [exit {self.exit_code}]" if self.exit_code is not None else ""
        icon = _ICONS.get(self.name, ":information_source:")
        line = " ".join(f"{icon} veza-canary {f.command}{sha}{ver} by {f.operator}: {self.summary}{code}".split())
        return redact_text(line[:_MAX_STR])

    def payload(self) -> dict[str, Any]:
        """The JSON body posted to every URL (secrets redacted)."""
        f = self.facts
        body = {
            "schema": SCHEMA,
            "text": self.text(),
            "event": self.name,
            "at": self.at,
            "run_id": f.run_id,
            "command": f.command,
            "summary": self.summary,
            "artifact": {"path": f.artifact_path, "sha256": f.sha256, "version": f.version},
            "nodes": list(f.nodes),
            "canary": f.canary,
            "fleet_state": self.fleet_state,
            "exit_code": self.exit_code,
            "report": f.report_path,
            "operator": f.operator,
            "tool_version": __version__,
            "data": self.data,
        }
        # NOTE: long strings clipped before redaction (its regexes are slow on very long strings).
        return redact_value(_clip(body))


_MAX_STR = 4000


def _clip(v: Any) -> Any:
    if isinstance(v, str):
        return v if len(v) <= _MAX_STR else v[:_MAX_STR] + "…"
    if isinstance(v, dict):
        return {k: _clip(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clip(x) for x in v]
    return v


# --- delivery ------------------------------------------------------------------------------------

DEFAULT_TIMEOUT = 5.0
DEFAULT_ATTEMPTS = 3
#: First retry waits this long, then twice as long each time (capped at ``_BACKOFF_MAX``).
DEFAULT_BACKOFF = 0.5
_BACKOFF_MAX = 8.0


def shown_url(url: str) -> str:
    """A webhook URL as logs and reports show it: scheme and host only.

    A Slack or Teams incoming-webhook URL *is* the credential (its path), so the
    path and query never leave this module; credentials in the netloc go too.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return REDACTED
    rest = f"/{REDACTED}" if (parts.path not in ("", "/") or parts.query) else ""
    return redact_text(f"{parts.scheme}://{host}{port}{rest}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one event at one URL: the report lists these."""

    event: str
    url: str  # shown_url(...)
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "url": self.url, "ok": self.ok, "attempts": self.attempts,
                "status": self.status, "error": self.error, "duration_s": self.duration_s}


class _Retryable(Exception):  # noqa: N818 - internal signal to tenacity
    def __init__(self, why: str, status: int | None = None) -> None:
        super().__init__(why)
        self.status = status


class _Permanent(Exception):  # noqa: N818
    def __init__(self, why: str, status: int | None) -> None:
        super().__init__(why)
        self.status = status


ClientFactory = Callable[[float], httpx.Client]


def default_client(timeout: float) -> httpx.Client:
    """TLS verified (httpx's default), no redirects followed, a short timeout."""
    return httpx.Client(timeout=timeout, verify=True, follow_redirects=False,
                        headers={"User-Agent": f"veza-canary/{__version__}"})


class Notifier:
    """Posts events to webhook URLs; see the module docstring for the delivery policy.

    Use as ``emit(event)`` during the run and ``close()`` once at the end (it returns
    every ``Delivery``). ``deliver(event)`` posts synchronously (tests, one-off tools).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        events: Iterable[str] | None = None,
        flush_timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        client_factory: ClientFactory = default_client,
    ) -> None:
        self.urls = tuple(urls)
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.events = frozenset(events) if events is not None else None
        self.flush_timeout = self.worst_case() if flush_timeout is None else flush_timeout
        self._sleep = sleep
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._records: list[Delivery] = []
        self._workers: dict[str, _Worker] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, s: Settings, **kw: Any) -> Notifier:
        """WEBHOOK_URLS, WEBHOOK_TIMEOUT, WEBHOOK_EVENTS (``kw``: sleep, client_factory, flush_timeout)."""
        n = s.notify
        return cls(n.webhook_urls or (), timeout=n.webhook_timeout, events=n.webhook_events, **kw)

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def worst_case(self) -> float:
        """Seconds one event can take at one URL: every attempt times out, every backoff is slept."""
        waits = sum(min(self.backoff * 2**i, _BACKOFF_MAX) for i in range(self.attempts - 1))
        # NOTE: httpx applies the timeout per phase (connect, read...), so one attempt may take
        # a little more than ``timeout``; the slack covers it.
        return self.attempts * self.timeout * 1.5 + waits + 1.0

    def wants(self, name: str) -> bool:
        return self.events is None or name in self.events

    # -- async face ---------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Queue ``event`` for every URL and return at once. Never raises."""
        if not self.urls or not self.wants(event.name):
            return
        try:
            payload = event.payload()
        except Exception as exc:  # noqa: BLE001 - a bad event must not break a deploy
            log.error("notify.bad_event", notify_event=event.name, error=redact_text(str(exc)))
            return
        with self._lock:
            if self._closed:
                log.warning("notify.after_close", notify_event=event.name)
                return
            for url in self.urls:
                w = self._workers.get(url)
                if w is None:
                    w = self._workers[url] = _Worker(self, url)
                w.put(event.name, payload)

    def close(self, timeout: float | None = None) -> list[Delivery]:
        """Wait (at most ``timeout``, default ``flush_timeout``) for queued events; return every Delivery.

        Events still undelivered then are recorded as abandoned; their workers are
        daemon threads and die with the process.
        """
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        for w in workers:
            w.stop()
        try:
            for w in workers:
                w.join(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            # NOTE: the run is over and its outcome decided; Ctrl-C here means "stop waiting for the
            # receivers", not "the deploy was interrupted".
            log.warning("notify.wait_interrupted", msg="stopped waiting for webhook deliveries")
        for w in workers:
            for name in w.abandon():
                d = Delivery(event=name, url=shown_url(w.url), ok=False, attempts=0,
                             error="abandoned: not delivered before the end of the run")
                log.warning("notify.abandoned", notify_event=name, url=d.url)
                self._record(d)
        return self.deliveries()

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._records)

    # -- sync face ------------------------------------------------------------------------
    def deliver(self, event: Event) -> list[Delivery]:
        """Post ``event`` to every URL now, one after the other; return (and record) the outcomes."""
        if not self.wants(event.name):
            return []
        payload = event.payload()
        out = []
        for url in self.urls:
            with self._client_factory(self.timeout) as client:
                out.append(self._post(client, url, event.name, payload))
        return out

    # -- one POST with retries -----------------------------------------------------------
    def _post(self, client: httpx.Client, url: str, name: str, payload: dict[str, Any],
              attempts: int | None = None) -> Delivery:
        shown = shown_url(url)
        attempt = [0]
        start = time.monotonic()
        body = json.dumps(payload, default=str).encode()

        def once() -> int:
            attempt[0] += 1
            try:
                r = client.post(url, content=body, headers={"Content-Type": "application/json"})
            except httpx.TimeoutException as exc:
                raise _Retryable(f"timed out after {self.timeout:g}s ({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise _Retryable(_why(exc).replace(url, shown)) from None
            if r.status_code == 429 or r.status_code >= 500:
                raise _Retryable(f"HTTP {r.status_code}", r.status_code)
            if r.status_code >= 300:
                raise _Permanent(f"HTTP {r.status_code}: {redact_text(r.text[:200])}", r.status_code)
            return r.status_code

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.warning("notify.retry", notify_event=name, url=shown, attempt=rs.attempt_number,
                        error=str(exc), wait_s=round(rs.next_action.sleep, 3) if rs.next_action else None)

        retryer = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts or self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff, min=self.backoff, max=_BACKOFF_MAX),
            retry=tenacity.retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            status = retryer(once)
        except (_Retryable, _Permanent) as exc:
            d = Delivery(event=name, url=shown, ok=False, attempts=attempt[0], status=exc.status,
                         error=redact_text(str(exc)), duration_s=round(time.monotonic() - start, 3))
            log.error("notify.failed", notify_event=name, url=shown, attempts=d.attempts, error=d.error)
        except Exception as exc:  # noqa: BLE001 - never into the deploy
            d = Delivery(event=name, url=shown, ok=False, attempts=attempt[0],
                         error=f"internal: {redact_text(str(exc) or type(exc).__name__)}",
                         duration_s=round(time.monotonic() - start, 3))
            log.error("notify.failed", notify_event=name, url=shown, attempts=d.attempts, error=d.error)
        else:
            d = Delivery(event=name, url=shown, ok=True, attempts=attempt[0], status=status,
                         duration_s=round(time.monotonic() - start, 3))
            log.info("notify.delivered", notify_event=name, url=shown, status=status, attempts=d.attempts,
                     duration_s=d.duration_s)
        self._record(d)
        return d

    def _record(self, d: Delivery) -> None:
        with self._lock:
            self._records.append(d)


_STOP = object()


class _Worker:
    """One URL's queue and the daemon thread that drains it, in order."""

    def __init__(self, notifier: Notifier, url: str) -> None:
        self.n = notifier
        self.url = url
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"veza-notify-{shown_url(url)}", daemon=True)
        self._abandoned = threading.Event()
        self.failing = False
        self.thread.start()

    def put(self, name: str, payload: dict[str, Any]) -> None:
        self.q.put((name, payload))

    def stop(self) -> None:
        self.q.put(_STOP)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def abandon(self) -> list[str]:
        """Drop what is still queued (the run is over); return those events' names."""
        self._abandoned.set()
        names = []
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                names.append(item[0])
        return names

    def _loop(self) -> None:
        try:
            client = self.n._client_factory(self.n.timeout)
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable CA bundle: record every event as failed
            client, why = None, redact_text(str(exc) or type(exc).__name__)
        with client if client is not None else contextlib.nullcontext():
            while True:
                item = self.q.get()
                if item is _STOP or self._abandoned.is_set():
                    return
                name, payload = item
                if client is None:
                    self.n._record(Delivery(event=name, url=shown_url(self.url), ok=False, attempts=0,
                                            error=f"no HTTP client: {why}"))
                    continue
                # A URL that just failed every attempt gets one attempt per event until it answers
                # again: a dead receiver must not build a backlog that outlives the run.
                d = self.n._post(client, self.url, name, payload, attempts=1 if self.failing else None)
                self.failing = not d.ok


def _why(exc: Exception) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


# --- a local receiver ------------------------------------------------------------------------


class LocalSink:
    """A webhook receiver on 127.0.0.1 for the acceptance job (and for trying a configuration).

    ``with LocalSink() as sink:`` serves in a thread; ``sink.url`` goes into
    WEBHOOK_URLS; ``sink.bodies`` are the JSON bodies received, in order; ``wait_for``
    waits (bounded) for an event by name.
    """

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._server: Any = None

    def __enter__(self) -> LocalSink:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsed": raw[:200].decode("utf-8", "replace")}
                with sink._cond:
                    sink.bodies.append(body)
                    sink._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_a: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="veza-webhook-sink",
                         daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/veza-canary"

    def wait_for(self, event: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """The first body whose ``event`` is ``event``, waiting up to ``timeout`` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((b for b in self.bodies if b.get("event") == event), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._cond.wait(left)

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
