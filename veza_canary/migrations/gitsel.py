"""Which migration files are new: added since the merge base with a ref (default ``origin/main``).

New files are the ``*.up.sql`` files under the migrations directory that the
merge base does not have: committed on this branch, staged, or untracked (but not
ignored). Files that exist at the merge base and changed since are reported
separately (editing an applied migration is a warning of its own). ``.down.sql``
files are never linted.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from veza_canary.errors import LintInputError

_GIT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Selection:
    base: str
    new: list[Path]
    modified: list[Path]


def _git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT, check=False)
    except FileNotFoundError:
        raise LintInputError("git is not installed; pass migration files explicitly or use --all") from None
    except subprocess.TimeoutExpired:
        raise LintInputError(f"git {' '.join(args)} timed out") from None
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise _GitFailed(msg)
    return proc.stdout


class _GitFailed(Exception):
    pass


def is_up_migration(name: str) -> bool:
    return name.endswith(".up.sql")


def select_new(repo: Path, mig_dir: Path, since: str) -> Selection:
    """New and modified ``*.up.sql`` files under ``mig_dir`` since the merge base with ``since``."""
    try:
        top = Path(_git(repo, "rev-parse", "--show-toplevel").strip())
    except _GitFailed as exc:
        raise LintInputError(f"{repo}: not a git repository ({exc}); pass files explicitly or use --all") from None
    if since.startswith("-"):
        raise LintInputError(f"--since {since!r}: not a git ref")
    try:
        _git(top, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}")
    except _GitFailed:
        raise LintInputError(
            f"--since {since}: no such git ref", hint="fetch it (git fetch origin main) or pass --since REF / --all"
        ) from None
    try:
        base = _git(top, "merge-base", "HEAD", since).strip()
    except _GitFailed as exc:
        raise LintInputError(f"no merge base between HEAD and {since} ({exc})") from None
    try:
        rel = mig_dir.resolve().relative_to(top.resolve())
    except ValueError:
        raise LintInputError(f"{mig_dir}: the migrations directory is outside the git repository {top}") from None
    spec = str(rel) if str(rel) != "." else "."
    added = _z(_git(top, "diff", "--name-only", "--no-renames", "--diff-filter=A", "-z", base, "--", spec))
    untracked = _z(_git(top, "ls-files", "--others", "--exclude-standard", "-z", "--", spec))
    modified = _z(_git(top, "diff", "--name-only", "--no-renames", "--diff-filter=M", "-z", base, "--", spec))
    new = sorted({top / p for p in added + untracked if is_up_migration(p) and (top / p).is_file()})
    mod = sorted({top / p for p in modified if is_up_migration(p) and (top / p).is_file()})
    return Selection(base, new, mod)


def _z(out: str) -> list[str]:
    return [p for p in out.split("\0") if p]
