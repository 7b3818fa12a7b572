"""Content-hash cache of analysed files, so an unchanged file is never parsed twice.

Key: sha256 of (analyzer version, sqlglot version, dialect, file bytes). Value: the
file's ``AnalyzedFile`` (schema-independent changes), pickled. A second kind of
entry holds the schema model replayed from a whole history (keyed by the ordered
file keys), so linting 1-3 new files against an unchanged history reads one entry.

Storage: one SQLite file, ``$XDG_CACHE_HOME/veza-canary/lint/cache.sqlite3``
(default ``~/.cache/...``), never in the repository. One file rather than a file per
entry because creating thousands of small files costs more than parsing them on
some filesystems; SQLite also makes concurrent runs safe. It is written without
fsync (a cache needs no durability): a file a crash left damaged is deleted and
rebuilt. Every failure to read or write the cache is ignored: the cache can only
make a run faster, never change its result.
"""

from __future__ import annotations

import hashlib
import os
import pickle  # noqa: S403 - our own cache, in a 0700 directory of the user
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from veza_canary.migrations.changes import AnalyzedFile

_SCHEMA = "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL)"


def sqlglot_version() -> str:
    """sqlglot's version without importing sqlglot (a warm run never needs the parser)."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("sqlglot")
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                text = (Path(loc) / "_version.py").read_text(encoding="utf-8")
                m = re.search(r"""__version__\s*=\s*version\s*=\s*['"]([^'"]+)['"]""", text) or \
                    re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
                if m:
                    return m.group(1)
    except (OSError, ImportError, ValueError):
        pass
    import sqlglot

    return str(sqlglot.__version__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "veza-canary" / "lint"


def cache_key(data: bytes, dialect: str, analyzer_version: str, sqlglot_version: str) -> str:
    h = hashlib.sha256()
    h.update(f"{analyzer_version}\0{sqlglot_version}\0{dialect}\0".encode())
    h.update(data)
    return h.hexdigest()


class Cache:
    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = root or default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._db: Any = None

    @property
    def path(self) -> Path:
        return self.root / "cache.sqlite3"

    def _conn(self) -> Any:
        if self._db is None:
            import sqlite3

            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            self._db = db
            # A rollback journal, not WAL: closing a WAL database checkpoints it, which costs
            # more than the whole write. No fsync: a crash may corrupt the
            # file, and a corrupt cache is deleted (``_broken``) and rebuilt by the next run.
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(_SCHEMA)
        return self._db

    def get_many(self, keys: Sequence[str], kind: type = AnalyzedFile) -> list[Any]:
        """Values for ``keys`` (None where missing or unreadable), in order."""
        out: list[Any] = [None] * len(keys)
        if not self.enabled or not keys:
            return out
        found: dict[str, bytes] = {}
        try:
            db = self._conn()
            uniq = list(dict.fromkeys(keys))
            for i in range(0, len(uniq), 500):
                chunk = uniq[i:i + 500]
                q = f"SELECT key, value FROM entries WHERE key IN ({','.join('?' * len(chunk))})"  # noqa: S608
                found.update(db.execute(q, chunk).fetchall())
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error, OSError: a broken cache is no cache
            self._broken(exc)
        for i, k in enumerate(keys):
            blob = found.get(k)
            value = None
            if blob is not None:
                try:
                    value = pickle.loads(blob)  # noqa: S301 - written by us, see module docstring
                except Exception:  # noqa: BLE001 - stale or corrupt entry
                    value = None
            if value is not None and isinstance(value, kind):
                out[i] = value
                self.hits += 1
            else:
                self.misses += 1
        return out

    def get(self, key: str, kind: type = AnalyzedFile) -> Any:
        return self.get_many([key], kind)[0]

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Store values; a ``bytes`` value is taken as already pickled."""
        if not self.enabled:
            return
        try:
            rows = [(k, v if isinstance(v, bytes) else pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL))
                    for k, v in items]
            if not rows:
                return
            db = self._conn()
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO entries (key, value) VALUES (?, ?)", rows)
            db.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001
            self._broken(exc)

    def put(self, key: str, value: Any) -> None:
        self.put_many([(key, value)])

    def close(self) -> None:
        """Close the database (it is reopened if used again)."""
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass
            self._db = None

    def _broken(self, exc: BaseException | None = None) -> None:
        """Stop using the cache for this run; delete it if SQLite says the file itself is damaged."""
        try:
            if self._db is not None:
                self._db.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken connection
            pass
        self._db = None
        self.enabled = False
        msg = str(exc or "")
        if type(exc).__name__ == "DatabaseError" and ("malformed" in msg or "not a database" in msg):
            for p in (self.path, self.path.with_name(self.path.name + "-journal")):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
