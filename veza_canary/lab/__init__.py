"""The local staging lab: real Incus containers, HAProxy 2.6, Prometheus 2.42, stand-in nodes.

Public API (also behind ``veza-canary lab ...``)::

    lab_up(config: LabConfig | None = None, *, progress=callable) -> LabInfo
    lab_down(*, purge: bool = False, force: bool = False, progress=callable) -> None
    lab_status() -> LabStatus
    lab_env(config: LabConfig | None = None) -> dict[str, str]    # the deploy tool's env vars
    lab_info() -> LabInfo                                           # the lab recorded as up, no checks
    missing_components() -> list[str]                               # empty when the machine can run it
    build_standin(version, faults: Faults | None, out_path) -> Path # a veza-api test build
    install_build(node, path, *, restart=True) -> None              # push a build to one node
    restore_node(node, config=None) -> None                         # back to 1.0.0, ready, UP

Modules: ``config`` (names, addresses, LabConfig), ``state`` (what the lab started),
``daemon`` (incusd, preseed, nft guard), ``image`` (debootstrap + cache), ``fleet``
(containers, files, services), ``configs`` (file contents), ``standin`` (the fake
backend), ``traffic`` (load generator), ``probe`` (HAProxy/Prometheus reads),
``lifecycle`` (up/down/status/env).
"""

from __future__ import annotations

from veza_canary.lab.config import LabConfig, LabError, LabUnavailable
from veza_canary.lab.lifecycle import LabInfo, LabStatus, missing_components
from veza_canary.lab.standin import Faults, build_standin, render_standin

__all__ = [
    "Faults", "LabConfig", "LabError", "LabInfo", "LabUnavailable", "LabStatus", "build_standin", "install_build", "lab_down",
    "lab_env", "lab_info", "lab_status", "lab_up", "missing_components", "render_standin", "restore_node",
]


def lab_up(config: LabConfig | None = None, **kw: object) -> LabInfo:
    """Bring the lab up or reconcile it (idempotent). See ``lifecycle.up``."""
    from veza_canary.lab import lifecycle

    return lifecycle.up(config, **kw)  # type: ignore[arg-type]


def lab_down(*, purge: bool = False, force: bool = False, **kw: object) -> None:
    """Tear the lab down; stop only what the lab started. Refuses while a test session uses the lab
    unless ``force``. See ``lifecycle.down``."""
    from veza_canary.lab import lifecycle

    lifecycle.down(purge=purge, force=force, **kw)  # type: ignore[arg-type]


def lab_status() -> LabStatus:
    from veza_canary.lab import lifecycle

    return lifecycle.status()


def lab_env(config: LabConfig | None = None) -> dict[str, str]:
    """Env vars for the deploy tool against the lab (PROM_URL, LB_URL, CANARY_NODE, ...)."""
    from veza_canary.lab import lifecycle

    return lifecycle.env(config)


def lab_info() -> LabInfo:
    from veza_canary.lab import lifecycle

    return lifecycle.info()


def install_build(node: str, path: str, *, restart: bool = True) -> None:
    """Push a build to ``node``'s INSTALL_DIR/veza-api and restart its service."""
    from veza_canary.lab import fleet

    fleet.install_build(node, path, restart=restart)


def restore_node(node: str, config: LabConfig | None = None) -> None:
    """Put ``node`` back as ``lab up`` left it: 1.0.0 build, service running, server ready and UP."""
    from veza_canary.lab import lifecycle

    lifecycle.restore_node(node, config)
