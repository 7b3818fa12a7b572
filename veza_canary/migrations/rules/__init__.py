"""Rules: one small module per rule, named by its code, and a registry.

A rule module defines one ``Rule`` subclass decorated with ``@register``. The
module docstring is the rule's documentation (``lint-migrations --explain CODE``):
a one-line summary, then the sections ``Anti-pattern:``, ``Safe pattern:`` and
``Why it breaks the old binary:`` (``Why it matters:`` for operational warnings).
The text output quotes the first paragraph of the last two.

A rule declares the change kinds it looks at (``kinds``) and yields messages from
``check(change, ctx)``; the context shows the schema *before* the change. The
registry refuses two rules with the same code or name.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from veza_canary.migrations.changes import Change, ColumnSpec, QName
from veza_canary.migrations.schema import Schema

SEVERITIES = ("block", "warn", "off")


@dataclass(slots=True)
class Finding:
    """One problem in one file. ``severity`` is ``block`` or ``warn``."""

    code: str
    name: str
    severity: str
    path: str
    line: int
    col: int
    message: str
    why: str = ""
    fix: str = ""
    snippet: str = ""
    suppressed: str | None = None  # the reason, when a directive allowed it
    cancel_if: Callable[[Schema], bool] | None = field(default=None, repr=False, compare=False)

    @property
    def blocking(self) -> bool:
        return self.severity == "block" and self.suppressed is None

    def to_dict(self) -> dict[str, Any]:
        d = {"code": self.code, "rule": self.name, "severity": self.severity, "path": self.path,
             "line": self.line, "col": self.col, "message": self.message, "why": self.why, "fix": self.fix,
             "statement": self.snippet}
        if self.suppressed is not None:
            d["suppressed"] = self.suppressed
        return d


@dataclass(slots=True)
class Hit:
    """What a rule's ``check`` yields: a message and, optionally, a cancel test."""

    message: str
    cancel_if: Callable[[Schema], bool] | None = None


class RuleContext:
    """What a rule may look at: the schema before the change, and what is new."""

    def __init__(self, schema: Schema, dialect: str) -> None:
        self.schema = schema
        self.dialect = dialect

    @property
    def new(self) -> Any:
        return self.schema.new

    def is_new(self, *key: Any) -> bool:
        return self.schema.new is not None and key in self.schema.new

    def table_is_new(self, qn: QName | None) -> bool:
        return qn is not None and self.is_new("table", qn)

    def column_is_new(self, qn: QName | None, col: str | None) -> bool:
        return self.table_is_new(qn) or self.is_new("column", qn, col)

    def column(self, qn: QName | None, col: str | None) -> ColumnSpec | None:
        return self.schema.column(qn, col)


class Rule:
    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    severity: ClassVar[str] = "block"
    kinds: ClassVar[frozenset[str]] = frozenset()
    dialects: ClassVar[tuple[str, ...]] = ("postgres", "mysql")

    def check(self, ch: Change, ctx: RuleContext) -> Iterable[Hit | str]:
        return ()

    # -- documentation ------------------------------------------------------------
    @classmethod
    def doc(cls) -> str:
        mod = sys.modules[cls.__module__]
        return (mod.__doc__ or cls.__doc__ or "").strip()

    @classmethod
    def summary(cls) -> str:
        return cls.doc().splitlines()[0].strip() if cls.doc() else cls.name

    @classmethod
    def section(cls, title: str) -> str:
        """First prose paragraph of a docstring section."""
        text = cls.doc()
        m = re.search(rf"^{re.escape(title)}:?\s*$", text, re.MULTILINE | re.IGNORECASE)
        if not m:
            return ""
        lines: list[str] = []
        for line in text[m.end():].splitlines():
            if not line.strip():
                if lines:
                    break
                continue
            if re.match(r"^[A-Z][A-Za-z -]+:\s*$", line):
                break
            lines.append(line.strip())
        return " ".join(lines).rstrip(":")

    @classmethod
    def why(cls) -> str:
        return cls.section("Why it breaks the old binary") or cls.section("Why it matters")

    @classmethod
    def fix(cls) -> str:
        return cls.section("Safe pattern")


REGISTRY: dict[str, type[Rule]] = {}
_BY_NAME: dict[str, str] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule; refuse a duplicate code or name."""
    if not re.fullmatch(r"VC\d{3}", cls.code):
        raise ValueError(f"rule {cls.__name__}: bad code {cls.code!r}")
    if cls.code in REGISTRY and REGISTRY[cls.code] is not cls:
        raise ValueError(f"duplicate rule code {cls.code} ({REGISTRY[cls.code].__name__}, {cls.__name__})")
    if cls.name in _BY_NAME and _BY_NAME[cls.name] != cls.code:
        raise ValueError(f"duplicate rule name {cls.name!r}")
    if cls.severity not in ("block", "warn"):
        raise ValueError(f"rule {cls.code}: bad severity {cls.severity!r}")
    REGISTRY[cls.code] = cls
    _BY_NAME[cls.name] = cls.code
    return cls


_loaded = False


def load_rules() -> dict[str, type[Rule]]:
    """Import every rule module of this package once; return the registry."""
    global _loaded
    if not _loaded:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
            if re.fullmatch(r"vc\d{3}_\w+", info.name):
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return REGISTRY


def resolve(code_or_name: str) -> str | None:
    """Rule code for a code or a name (case-insensitive), or None."""
    load_rules()
    s = code_or_name.strip()
    if s.upper() in REGISTRY:
        return s.upper()
    return _BY_NAME.get(s.lower())


def rules_for(dialect: str) -> Iterator[type[Rule]]:
    for code in sorted(load_rules()):
        r = REGISTRY[code]
        if dialect in r.dialects:
            yield r
