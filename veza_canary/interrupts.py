"""SIGINT/SIGTERM during a command that changes the fleet.

A signal outside cleanup becomes ``DeployInterrupt`` (a ``BaseException``, so no
``except Exception`` swallows it) at the point the main thread is; the command's
failure policy then brings the fleet to a known state. While that cleanup runs,
further signals are refused with a message: stopping mid-step (between a drain and
a re-enable) is exactly what would leave a node out of rotation. Only SIGKILL can
cut a cleanup short, and every command reconciles from live state on its next run.

Used by ``deploy`` and ``rollback`` alike.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class DeployInterrupt(BaseException):
    """SIGINT/SIGTERM arrived outside cleanup."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"{signame} received")
        self.signame = signame


class InterruptGuard:
    """Turns SIGINT/SIGTERM into DeployInterrupt; during cleanup, refuses them with a message."""

    def __init__(self) -> None:
        self.cleaning = False
        self.received: list[str] = []

    def _handler(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if self.cleaning:
            sys.stderr.write(
                f"veza-canary: {name} received while bringing the fleet to a safe state; not stopping "
                "mid-step (SIGKILL would leave a node drained). Cleanup continues.\n"
            )
            sys.stderr.flush()
            return
        raise DeployInterrupt(name)

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Install the handlers for the duration (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._handler)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextmanager
    def cleanup(self) -> Iterator[None]:
        """A section that must not be cut short by a signal (signals are recorded, not raised)."""
        prev, self.cleaning = self.cleaning, True
        try:
            yield
        finally:
            self.cleaning = prev
