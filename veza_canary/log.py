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

_URL_CRED_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/@\s:]*(?::[^/@\s]*)?)@")
_BEARER_RE = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_KV_SECRET_RE = re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)=([^\s&]+)")
_SECRET_KEYS = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|authorization|private[_-]?key)")

REDACTED = "[REDACTED]"


def redact_text(s: str) -> str:
    """Remove credentials from free text (URLs with user:pass@, tokens, key=value secrets)."""
    if not s:
        return s
    s = _URL_CRED_RE.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", s)
    s = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", s)
    s = _KV_SECRET_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", s)
    return s


def redact_value(v: Any) -> Any:
    if isinstance(v, str):
        return redact_text(v)
    if isinstance(v, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) and v[k] else redact_value(x))
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
