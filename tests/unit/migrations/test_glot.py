"""``glot``: sqlglot imported with ``importlib.metadata`` deferred, and nothing else changed."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import sys
import veza_canary.migrations.analyze
m = sys.modules["importlib.metadata"]
print("stand-in" if "Stand-in" in (m.__doc__ or "") else "real")
import sqlglot
sqlglot.parse_one("SELECT 1", read="postgres")            # known dialects never touch it
print("stand-in" if sys.modules["importlib.metadata"] is m else "real")
import importlib.metadata
print(importlib.metadata.version("sqlglot") == sqlglot.__version__)   # first real use: the real module
print(type(sys.modules["importlib.metadata"].distribution).__name__, sys.modules["importlib.metadata"] is not m)
from importlib.metadata import entry_points
print(callable(entry_points))
"""


def test_metadata_is_a_stand_in_until_first_used_then_the_real_module() -> None:
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["stand-in", "stand-in", "True", "function", "True", "True"]


def test_an_already_imported_metadata_is_left_alone() -> None:
    code = ("import importlib.metadata as real, sys; import veza_canary.migrations.analyze; "
            "print(sys.modules['importlib.metadata'] is real)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_sqlglot_plugin_lookup_still_works_through_the_stand_in() -> None:
    code = """
import veza_canary.migrations.analyze, sqlglot
try:
    sqlglot.Dialect.get_or_raise("no_such_dialect_veza")
except ValueError as exc:
    print("refused:", "no_such_dialect_veza" in str(exc))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "refused: True"
