"""Copy the latest benchmark figures into docs/benchmarks.md.

    .venv/bin/python bench/report.py [--out DIR] [--doc PATH]

Each ``DIR/<name>.json`` written by a benchmark (``DIR``: ``$BENCH_OUT`` or /tmp/veza-bench) holds
a rendered Markdown block. In the document, the block goes between ``<!-- bench:<name> -->`` and
``<!-- /bench:<name> -->``; everything outside those markers (the prose, other engineers' sections)
is left as it is. A result without markers in the document is reported, not inserted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, out_dir  # noqa: E402


def update(doc: str, name: str, block: str) -> tuple[str, bool]:
    pat = re.compile(rf"(<!-- bench:{re.escape(name)} -->)\n(?:.*?\n)?(<!-- /bench:{re.escape(name)} -->)", re.S)
    if not pat.search(doc):
        return doc, False
    return pat.sub(lambda m: f"{m.group(1)}\n{block.strip()}\n{m.group(2)}", doc, count=1), True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = ap.parse_args()
    out = args.out or out_dir()
    doc = args.doc.read_text()
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if "markdown" not in data:
            continue
        doc, ok = update(doc, data["name"], data["markdown"])
        print(f"{'updated' if ok else 'no markers for'} {data['name']} ({path})")
    args.doc.write_text(doc)


if __name__ == "__main__":
    main()
