"""veza-canary: canary releases of backend-api behind HAProxy, with automatic rollback."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
