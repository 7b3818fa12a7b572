"""sqlglot, imported without paying for ``importlib.metadata`` up front.

``sqlglot.dialects.dialect`` does ``from importlib.metadata import entry_points`` at
import time, to look up third-party dialect plugins -- which it only does for a dialect
it does not know, never for postgres or mysql. Importing ``importlib.metadata`` costs
~15 ms (email, zipfile, csv...), a sixth of sqlglot's import, in every process that
parses: the lint's own and its worker's. So, unless something imported it already,
``importlib.metadata`` is a stand-in module until first really used: ``entry_points()``
and any other attribute import the real module then, and replace the stand-in in
``sys.modules`` and on the ``importlib`` package, so later imports get the real one.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def _defer_metadata() -> None:
    if "importlib.metadata" in sys.modules:
        return
    import importlib

    stub = types.ModuleType("importlib.metadata", "Stand-in until first use (veza_canary.migrations.glot).")

    def real() -> Any:
        if sys.modules.get("importlib.metadata") is stub:
            del sys.modules["importlib.metadata"]
        if getattr(importlib, "metadata", None) is stub:
            delattr(importlib, "metadata")
        return importlib.import_module("importlib.metadata")

    def entry_points(**params: Any) -> Any:
        return real().entry_points(**params)

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's attribute hook
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)

    stub.entry_points = entry_points  # type: ignore[attr-defined]
    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["importlib.metadata"] = stub
    importlib.metadata = stub  # type: ignore[attr-defined]


_defer_metadata()

import sqlglot  # noqa: E402 - after the stand-in, on purpose
from sqlglot import exp  # noqa: E402
from sqlglot.errors import ParseError, TokenError  # noqa: E402

__all__ = ["sqlglot", "exp", "ParseError", "TokenError"]
