"""Transports: the one seam through which commands and files reach other machines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from veza_canary.transport.base import Result, Transport
from veza_canary.transport.incus import IncusTransport
from veza_canary.transport.local import LocalTransport

if TYPE_CHECKING:
    from veza_canary.settings import Settings

__all__ = ["IncusTransport", "LocalTransport", "Result", "Transport", "host_transport"]


def host_transport(settings: Settings) -> Transport:
    """The transport to the machine where ``incus`` runs: local, or SSH for ``INCUS_HOST=ssh://...``."""
    if not settings.ssh.incus_host or settings.ssh.incus_host == "local":
        return LocalTransport()
    from veza_canary.transport.ssh import SSHTransport  # paramiko is imported only when needed

    return SSHTransport.from_settings(settings)
