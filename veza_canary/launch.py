"""The ``veza-canary`` console script: fork a cold lint's parse workers first, then run the CLI.

A cold ``lint-migrations`` spends its first ~0.1 s importing the CLI and reading files,
and each parse worker ~0.09 s importing sqlglot. Forked here, before even the CLI is
imported, a worker's import overlaps all of that, and it is ready when the files are.
Every other command goes straight to ``veza_canary.cli.main``; so does a lint that will
likely read its results from the cache. Kept tiny: everything imported before the fork is
paid once more by nobody, but delays the fork.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    prefork_if_cold(argv)
    from veza_canary.cli import main as cli_main

    if command(argv) == "lint-migrations":
        cli_main(("lint",))  # only what a lint needs: ~20 ms less start-up
    else:
        cli_main()


def command(argv: list[str]) -> str | None:
    """The command word of ``argv``: the first word that is not a root option (or its value)."""
    at = _command_at(argv)
    return None if at is None else argv[at]


def _command_at(argv: list[str]) -> int | None:
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a == "--log-format":
            skip = True
        elif not a.startswith("-"):
            return i
    return None


def cache_file() -> str:
    """Where the lint cache lives; ``migrations.cache.default_cache_dir`` without importing it (tested equal)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "veza-canary", "lint", "cache.sqlite3")


def _option(args: list[str], names: tuple[str, ...]) -> str | None:
    """The last value given to an option (``--name V``, ``--name=V``, ``-xV``), or None."""
    value = None
    for k, a in enumerate(args):
        for name in names:
            if a == name and k + 1 < len(args):
                value = args[k + 1]
            elif name.startswith("--") and a.startswith(name + "="):
                value = a.split("=", 1)[1]
            elif not name.startswith("--") and a.startswith(name) and a != name:
                value = a[len(name):]
    return value


def _up_files(directory: str) -> int:
    """How many ``*.up.sql`` files ``directory`` holds (0 if it cannot be read)."""
    try:
        with os.scandir(directory) as it:
            return sum(1 for e in it if e.name.endswith(".up.sql"))
    except OSError:
        return 0


def prefork_if_cold(argv: list[str]) -> None:
    """Fork the parse workers now if ``argv`` is a lint that will likely parse from scratch.

    Any lint also gets ``forked.keep_until_exit``: the process ends with ``os._exit``.

    Likely cold: ``--no-cache``, or no cache file yet; and worth it: the migrations
    directory (``--dir``, ``MIGRATIONS_DIR``, else ``migrations``; not the config file's)
    holds at least ``forked.PARALLEL_THRESHOLD`` files. A wrong guess costs a fork and an
    import on another core; the run closes workers it does not want
    (``engine._early_pool``), and ``cli.main`` closes them if the command never gets
    that far. A bad ``--jobs`` value forks nothing: the command reports it.
    """
    at = _command_at(argv)
    if at is None or argv[at] != "lint-migrations":
        return
    from veza_canary.migrations import forked

    forked.keep_until_exit()  # a lint ends with os._exit: freeing its analysis first is wasted time
    rest = argv[at + 1:]
    if any(a in ("--help", "--list-rules") or a.startswith("--explain") for a in rest):
        return
    jobs = _option(rest, ("--jobs", "-j"))
    if "--no-cache" not in rest and os.path.exists(cache_file()):
        return
    if _up_files(_option(rest, ("--dir", "--migrations-dir")) or os.environ.get("MIGRATIONS_DIR")
                 or "migrations") < forked.PARALLEL_THRESHOLD:
        return  # a small history parses faster than a worker imports sqlglot
    try:
        n = int(jobs) if jobs is not None else forked.default_jobs()
    except ValueError:
        return
    forked.prefork(n - 1)
