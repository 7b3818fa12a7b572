"""Lint real, public Postgres migration histories with ``--all`` and measure the gate on them.

    # 1. local git copies of the projects (any clone works; --mirror-root holds <owner>+<name>/repo)
    git clone --bare https://github.com/rust-lang/crates.io /var/cache/veza-canary-corpora/git/rust-lang+crates.io/repo
    ...                                               # one per project of PROJECTS below
    # 2. rebuild the corpora (flat golang-migrate layout) and lint them
    .venv/bin/python bench/real_corpora.py --mirror-root /var/cache/veza-canary-corpora/git \\
        --out /var/cache/veza-canary-corpora/flat [--sample 60 --seed 15]

Each project's history is read at a pinned commit straight from git (nothing is copied into
this repository) and rewritten as ``NNNNNN_<name>.up.sql`` files in migration order:

* golang-migrate: ``*.up.sql`` as they are (Go template placeholders replaced by a schema name);
* diesel: ``<version>/up.sql``;
* sql-migrate: the part of each file between ``-- +migrate Up`` and ``-- +migrate Down``;
* dbmate: the part between ``-- migrate:up`` and ``-- migrate:down``.

Then ``veza-canary lint-migrations --all --format json --no-cache`` runs on each corpus, and this
prints per project: files, files with a blocking finding, blocking findings per rule, and the
fail-closed (VC001) findings and files; with ``--sample N``, a reproducible random sample of N
blocking findings (project, file, line, rule, message, statement) to judge by hand; with
``--json PATH`` every finding is written there for later comparison. Nothing is written to
the repository.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Project:
    name: str
    repo: str  # owner/name on GitHub
    commit: str
    layout: str  # golang-migrate | diesel | sql-migrate | dbmate
    directory: str
    template_schema: str = ""  # a value for Go template placeholders ({{ ... }}) in the SQL


PROJECTS = [
    Project("crates.io", "rust-lang/crates.io", "57fa000662f511321daa61e6769f190ea0e80771", "diesel", "migrations"),
    Project("lemmy", "LemmyNet/lemmy", "439734dd638a2c06a2f907beab7dcf4646e88f86", "diesel", "migrations"),
    Project("cds", "ovh/cds", "ea9589f42f2b30dcffac20d676097a5fd931a80e", "sql-migrate", "engine/sql/api"),
    Project("subway", "UPchieve/subway", "3a5f8fa85999144cdb3e04076257e83783f18dcf", "dbmate", "database/migrations"),
    Project("supabase-auth", "supabase/auth", "bc32168e13fdc928c98b449fc76bc3fdb9a293c5", "golang-migrate",
            "migrations", template_schema="auth"),
]


def git(gitdir: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={gitdir}", *args], check=True, capture_output=True,
                          text=True, errors="replace").stdout


def _order_key(name: str) -> tuple[int, str]:
    """The tool's order: the numeric version prefix (diesel's ``2017-10-06-234455`` is 20171006234455)."""
    m = re.match(r"[\d-]+", name)
    digits = m.group(0).replace("-", "") if m else ""
    return (int(digits) if digits else -1, name)


def _between(text: str, start: str, end: str) -> str:
    """The part of ``text`` after the ``start`` marker line up to the ``end`` marker line."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    on = False
    for ln in lines:
        key = ln.strip().lower().replace(" ", "")
        if key.startswith(start):
            on = True
            out.append("\n")  # keep line numbers
            continue
        if key.startswith(end):
            break
        out.append(ln if on else "\n")
    return "".join(out)


def up_sources(p: Project, gitdir: Path) -> list[tuple[str, str]]:
    """``(name, up SQL)`` of every migration of ``p``, in the order its tool runs them."""
    paths = [ln for ln in git(gitdir, "ls-tree", "-r", "--name-only", p.commit, "--", p.directory).splitlines()]
    rel = sorted((x[len(p.directory) + 1:] for x in paths), key=_order_key)
    out = []
    for r in rel:
        if p.layout == "golang-migrate" and r.endswith(".up.sql") and "/" not in r:
            name, sql = r[: -len(".up.sql")], git(gitdir, "show", f"{p.commit}:{p.directory}/{r}")
            if p.template_schema:
                sql = re.sub(r"\{\{[^}]*\}\}", p.template_schema, sql)
        elif p.layout == "diesel" and r.endswith("/up.sql") and r.count("/") == 1:
            name, sql = r.split("/")[0], git(gitdir, "show", f"{p.commit}:{p.directory}/{r}")
        elif p.layout == "sql-migrate" and r.endswith(".sql") and "/" not in r:
            name = r[:-4]
            sql = _between(git(gitdir, "show", f"{p.commit}:{p.directory}/{r}"), "--+migrateup", "--+migratedown")
        elif p.layout == "dbmate" and r.endswith(".sql") and "/" not in r:
            name = r[:-4]
            sql = _between(git(gitdir, "show", f"{p.commit}:{p.directory}/{r}"), "--migrate:up", "--migrate:down")
        else:
            continue
        out.append((name, sql))
    return out


def build(p: Project, mirror_root: Path, out_root: Path) -> Path:
    gitdir = mirror_root / p.repo.replace("/", "+") / "repo"
    if not gitdir.is_dir():
        gitdir = mirror_root / p.repo.replace("/", "+")
    dest = out_root / p.name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for i, (name, sql) in enumerate(up_sources(p, gitdir), start=1):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]
        (dest / f"{i:06d}_{safe}.up.sql").write_text(sql, encoding="utf-8")
    return dest


def lint(dest: Path, code: Path | None = None) -> dict:
    """``--all`` on one corpus; with ``code``, the veza_canary package found in that directory (another commit)."""
    import os

    argv = [str(VENV_BIN / "veza-canary")]
    env = dict(os.environ)
    if code is not None:
        argv = [sys.executable, "-m", "veza_canary"]
        env["PYTHONPATH"] = str(code)
    proc = subprocess.run([*argv, "lint-migrations", "--dir", str(dest), "--all", "--format", "json", "--no-cache"],
                          capture_output=True, text=True, check=False, cwd=dest, env=env)
    if proc.returncode not in (0, 4):
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "exit": proc.returncode}
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("/var/cache/veza-canary-corpora/flat"))
    ap.add_argument("--only", nargs="*", help="project names (default: all)")
    ap.add_argument("--sample", type=int, default=0, help="print a random sample of N blocking findings")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--json", type=Path, help="write every finding here")
    ap.add_argument("--code", type=Path, help="lint with the package in this directory, e.g. an older commit "
                                              "exported with `git archive <commit> veza_canary | tar -x -C DIR`")
    args = ap.parse_args()
    rows = []
    blocking_all: list[tuple[str, dict]] = []
    dump: dict[str, object] = {}
    for p in PROJECTS:
        if args.only and p.name not in args.only:
            continue
        dest = build(p, args.mirror_root, args.out)
        n = len(list(dest.glob("*.up.sql")))
        r = lint(dest, args.code)
        dump[p.name] = r
        if "error" in r:
            rows.append((p, n, None, r["error"]))
            continue
        blocking = [f for f in r["findings"] if f["severity"] == "block" and not f.get("suppressed")]
        blocking_all.extend((p.name, f) for f in blocking)
        rows.append((p, n, r, blocking))
    print("| project | layout | files | files blocked | blocking findings | fail-closed (VC001) findings | "
          "files with VC001 | suppressed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    tot = collections.Counter()
    for p, n, r, blocking in rows:
        if r is None:
            print(f"| {p.name} | {p.layout} | {n} | could not run: {blocking} | | | | |")
            continue
        bf = len({f["path"] for f in blocking})
        vc1 = [f for f in blocking if f["code"] == "VC001"]
        vf = len({f["path"] for f in vc1})
        sup = r["counts"].get("suppressed", 0)
        tot.update(files=n, bf=bf, b=len(blocking), v=len(vc1), vf=vf, s=sup)
        print(f"| {p.name} | {p.layout} | {n} | {bf} ({bf / n:.1%}) | {len(blocking)} | {len(vc1)} "
              f"({len(vc1) / n:.1%} of files) | {vf} | {sup} |")
    if tot["files"]:
        print(f"| all | | {tot['files']} | {tot['bf']} ({tot['bf'] / tot['files']:.1%}) | {tot['b']} | {tot['v']} "
              f"({tot['v'] / tot['files']:.1%} of files) | {tot['vf']} | {tot['s']} |")
    print("\nblocking findings per rule:",
          dict(collections.Counter(f["code"] for _, f in blocking_all).most_common()))
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))
    if args.sample:
        # A stable sample: ordered by a seeded hash of each finding, so a finding that a later fix removes
        # leaves the rest of the sample as it was (re-judging only what is new).
        def rank(item: tuple[str, dict]) -> str:
            name, f = item
            key = f"{args.seed}|{name}|{f['path']}|{f['line']}|{f['code']}|{f['message']}"
            return hashlib.sha256(key.encode()).hexdigest()

        sample = sorted(blocking_all, key=rank)[:args.sample]
        for k, (name, f) in enumerate(sample, 1):
            print(f"\n[{k}] {name} {f['path']}:{f['line']} {f['code']}: {f['message']}\n    {f.get('statement', '')[:300]}")


if __name__ == "__main__":
    main()
