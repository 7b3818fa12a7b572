from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """CliRunner tests configure structlog onto a stream that closes with the runner."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
