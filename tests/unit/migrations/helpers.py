"""Test helpers: lint SQL strings as a small migration history in a temp dir."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from veza_canary.migrations.engine import LintOptions, LintResult, run


def write_history(d: Path, files: Sequence[str], start: int = 1) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i, sql in enumerate(files, start=start):
        p = d / f"{i:06d}_m{i}.up.sql"
        p.write_text(sql, encoding="utf-8")
        out.append(p)
    return out


def lint_sql(tmp: Path, history: Sequence[str], new: Sequence[str], dialect: str = "postgres",
             **opts) -> LintResult:
    d = tmp / "migrations"
    hist = write_history(d, history)
    fresh = write_history(d, new, start=len(history) + 1)
    return run(fresh, hist, LintOptions(dialect=dialect, cache=False, **opts), root=tmp)


def codes(result: LintResult, *, active_only: bool = True) -> list[str]:
    return [f.code for f in result.findings if not active_only or f.suppressed is None]
