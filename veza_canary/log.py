"""structlog, configured once from the CLI callback.

Console output for people on a TTY, JSON lines otherwise (or with
``--log-format json``). A redaction processor runs last before rendering, so no
renderer ever sees a secret: URL credentials, bearer tokens, passwords and any
key that looks like a secret.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

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


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
