"""Test-wide setup: structlog at INFO in human format (the CLI configures itself per run)."""

from __future__ import annotations

from veza_canary.log import configure

configure("console", verbose=False)
