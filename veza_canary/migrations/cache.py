"""Content-hash cache of analysed files, so an unchanged file is never parsed twice.

Key: sha256 of (analyzer version, sqlglot version, dialect, file bytes). Value: the
file's ``AnalyzedFile`` (schema-independent changes), pickled. A second kind of
entry holds the schema model replayed from a whole history (keyed by the ordered
file keys), so linting 1-3 new files against an unchanged history reads one entry. Lives under
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
from typing import Any

from veza_canary.migrations.changes import AnalyzedFile


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

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pickle"

    def get(self, key: str, kind: type = AnalyzedFile) -> Any:
        if not self.enabled:
            return None
        try:
            with open(self._path(key), "rb") as fh:
                value = pickle.load(fh)  # noqa: S301 - written by us, see module docstring
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
            self.misses += 1
            return None
        if not isinstance(value, kind):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
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
