"""Content-hash cache of analysed files, so an unchanged file is never parsed twice.

Key: sha256 of (analyzer version, sqlglot version, dialect, file bytes). Value: the
file's ``AnalyzedFile`` (schema-independent changes), pickled. Lives under
``$XDG_CACHE_HOME/veza-canary/lint`` (default ``~/.cache/veza-canary/lint``), never in
the repository. Every failure to read or write the cache is ignored: the cache can
only make a run faster, never change its result.
"""

from __future__ import annotations

import hashlib
import os
import pickle  # noqa: S403 - our own cache files in a 0700 directory of the user
import tempfile
from pathlib import Path

from veza_canary.migrations.changes import AnalyzedFile


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

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pickle"

    def get(self, key: str) -> AnalyzedFile | None:
        if not self.enabled:
            return None
        try:
            with open(self._path(key), "rb") as fh:
                value = pickle.load(fh)  # noqa: S301 - written by us, see module docstring
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
            self.misses += 1
            return None
        if not isinstance(value, AnalyzedFile):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: AnalyzedFile) -> None:
        if not self.enabled:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            try:
                os.unlink(tmp)  # type: ignore[possibly-undefined]
            except (OSError, NameError):
                pass
