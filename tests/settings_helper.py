"""Settings for tests: the real loader, validated, with no environment and no config file."""

from __future__ import annotations

from typing import Any

from veza_canary.settings import Settings, load_settings


def make_settings(**knobs: Any) -> Settings:
    """``make_settings(canary_node="n2", sli_window=10, allow_short_window=True)``: knob names, real validation."""
    return load_settings(flags=knobs, env={}, config={})
