#!/usr/bin/env python3
"""Rewrite the knob tables of README.md and docs/runbooks/CANARY_RELEASE.md from ``settings.KNOBS``.

The env name, flag and default columns come from the settings (said once, there); a row's
meaning is kept when the table already has one (the runbook adds "when to change" notes),
else it is the knob's help text. Run after adding a knob: ``.venv/bin/python scripts/knob-tables.py``.
tests/unit/test_runbooks.py checks the tables against the settings.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from veza_canary.settings import KNOBS  # noqa: E402

ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| `[^`]*` \| `[^`]*` \| (.*) \|$")


def rewrite(path: Path) -> None:
    lines = path.read_text().splitlines()
    rows = [i for i, ln in enumerate(lines) if ROW.match(ln)]
    if not rows:
        raise SystemExit(f"{path}: no knob table")
    first, last = rows[0], rows[-1]
    meaning = {m.group(1): m.group(2) for ln in lines[first:last + 1] if (m := ROW.match(ln))}
    table = [f"| `{k.env}` | `{k.flag}` | `{k.shown_default}` | {meaning.get(k.env, k.help)} |"
             for k in KNOBS]
    path.write_text("\n".join([*lines[:first], *table, *lines[last + 1:]]) + "\n")


for p in (ROOT / "README.md", ROOT / "docs" / "runbooks" / "CANARY_RELEASE.md"):
    rewrite(p)
