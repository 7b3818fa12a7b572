"""structlog, configured once from the CLI callback.

Console output for people on a TTY, JSON lines otherwise (or with
``--log-format json``). A redaction processor runs last before rendering, so no
renderer ever sees a secret: URL credentials, bearer tokens, passwords and any
key that looks like a secret.

structlog is imported on the first event that will be printed, not before:
importing it (and the rich and asyncio modules it pulls in) costs ~55 ms, a tenth
of a cold lint, and a command that logs nothing above its level never pays it. The
CLI records its settings with ``defer_configure``; loggers from ``get_logger`` apply
them when they first emit.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

#: A secret word: a query parameter, ``key=value`` pair or mapping key whose name *ends* in one is secret
#: (``access_token``, ``X-Amz-Signature``, ``sig``, ``auth``, ``api_key``, ``client_secret``, ``passwd`` ...).
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "key", "sig", "signature", "auth",
                 "authorization", "credential", "credentials", "session", "cookie", "jwt", "bearer")
#: A URL in free text: scheme, then everything up to whitespace or a quote/bracket that ends it.
_URL_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,30}://)(?P<rest>[^\s\"'<>`]+)")
#: ``name=value`` outside URLs (argv, query strings, env dumps): the name ends in a secret word.
_KV_RE = re.compile(r"(?P<name>[A-Za-z0-9_.-]*[A-Za-z0-9])(?P<sep>=)(?P<value>[^\s&;,\"']+)")
#: An ``@`` followed by a host (name, IPv4 or [IPv6], optional port) and then the end, ``/``, ``?`` or ``#``.
_AT_HOST_RE = re.compile(r"@(?=[A-Za-z0-9._~%-]*(?:\[[0-9A-Fa-f:.]+\])?(?::[0-9]*)?(?:[/?#]|$))")
_BEARER_RE = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_SECRET_KEYS = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|authorization|private[_-]?key)")

REDACTED = "[REDACTED]"


def is_secret_name(name: str) -> bool:
    """True when a parameter or key name ends in a secret word (``access_token``, ``sig``, ``X-Api-Key``)."""
    n = name.lower()
    return n.endswith(_SECRET_WORDS)


def redact_url(url: str) -> str:
    """A URL with its userinfo and the values of its secret query/fragment parameters redacted.

    Parsed, not pattern-matched. The userinfo ends at the *last* ``@`` that is followed by something shaped
    like a host, so a password holding ``@``, ``/``, ``?`` or ``#`` is hidden whole (a path with ``@host``
    in it is over-redacted, never under). Each ``name=value`` of the query and fragment is judged by its name.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _redact_pairs(url)
    userinfo_end = -1
    for m in _AT_HOST_RE.finditer(rest):
        userinfo_end = m.start()
    if userinfo_end >= 0:
        rest = rest[userinfo_end + 1:]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    host, tail = rest[:cut], rest[cut:]
    path, q, query = tail.partition("?")
    if q:
        query, h, frag = query.partition("#")
        tail = f"{path}?{_redact_pairs(query)}" + (f"#{_redact_pairs(frag)}" if h else "")
    elif "#" in tail:
        path, _, frag = tail.partition("#")
        tail = f"{path}#{_redact_pairs(frag)}"
    return f"{scheme}://{REDACTED + '@' if userinfo_end >= 0 else ''}{host}{tail}"


def _redact_pairs(text: str) -> str:
    return _KV_RE.sub(lambda m: f"{m['name']}={REDACTED}" if is_secret_name(m["name"]) else m.group(0), text)


def redact_text(s: str) -> str:
    """Remove credentials from free text: URLs (userinfo, secret query parameters), bearer tokens, and
    ``name=value`` pairs whose name ends in a secret word."""
    if not s:
        return s
    parts: list[str] = []
    last = 0
    for m in _URL_RE.finditer(s):
        parts.append(_redact_pairs(s[last:m.start()]))
        parts.append(redact_url(m.group(0)))
        last = m.end()
    parts.append(_redact_pairs(s[last:]))
    return _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", "".join(parts))


def redact_value(v: Any) -> Any:
    if isinstance(v, str):
        return redact_text(v)
    if isinstance(v, dict):
        return {k: (REDACTED if isinstance(k, str) and (_SECRET_KEYS.search(k) or is_secret_name(k)) and v[k] else redact_value(x))
                for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(redact_value(x) for x in v)
    return v


def redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact every value of the event."""
    return redact_value(event_dict)


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is *now* (a test runner may swap and close the old one)."""

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = err = msg


def configure(log_format: str | None = None, *, verbose: bool = False, stream: Any = None) -> None:
    """Configure structlog for the process. ``log_format``: console, json, or None (auto)."""
    import structlog

    global _deferred, _min_level
    _deferred, _min_level = None, 0
    explicit = stream is not None
    stream = stream or sys.stderr
    if log_format is None:
        log_format = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    level = logging.DEBUG if verbose else logging.INFO
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if log_format == "json" else structlog.processors.StackInfoRenderer(),
        redact_processor,
    ]
    if log_format == "json":
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream) if explicit else (lambda *_a: _StderrLogger()),
        cache_logger_on_first_use=False,
    )


_deferred: tuple[str | None, bool] | None = None
#: While a configuration is deferred, events below this level are dropped without importing structlog.
_min_level = 0


def defer_configure(log_format: str | None = None, *, verbose: bool = False) -> None:
    """Record ``configure``'s arguments; applied by the first event at or above the level."""
    global _deferred, _min_level
    if "structlog" in sys.modules:  # already paid for: configure now
        configure(log_format, verbose=verbose)
        return
    _deferred = (log_format, verbose)
    _min_level = logging.DEBUG if verbose else logging.INFO


def clear_deferred() -> None:
    """Forget a deferred configuration (the command that recorded it has ended)."""
    global _deferred, _min_level
    _deferred, _min_level = None, 0


def ensure_configured() -> None:
    """Apply a deferred configuration now (before reading or changing structlog's config)."""
    if _deferred is not None:
        configure(_deferred[0], verbose=_deferred[1])


class _LazyLogger:
    """``structlog.get_logger(name)``, imported and configured on the first event that is printed."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def _emit(self, level: int, method: str, event: str, kw: dict[str, Any]) -> Any:
        if level < _min_level and "structlog" not in sys.modules:
            return None
        ensure_configured()
        import structlog

        return getattr(structlog.get_logger(self._name), method)(event, **kw)

    def debug(self, event: str, **kw: Any) -> Any:
        return self._emit(logging.DEBUG, "debug", event, kw)

    def info(self, event: str, **kw: Any) -> Any:
        return self._emit(logging.INFO, "info", event, kw)

    def warning(self, event: str, **kw: Any) -> Any:
        return self._emit(logging.WARNING, "warning", event, kw)

    def error(self, event: str, **kw: Any) -> Any:
        return self._emit(logging.ERROR, "error", event, kw)

    def exception(self, event: str, **kw: Any) -> Any:
        return self._emit(logging.ERROR, "exception", event, kw)

    def critical(self, event: str, **kw: Any) -> Any:
        return self._emit(logging.CRITICAL, "critical", event, kw)


def get_logger(name: str) -> Any:
    return _LazyLogger(name)
