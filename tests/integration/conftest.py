"""Integration fixtures: the real lab (Incus, HAProxy 2.6, Prometheus 2.42, stand-in nodes).

``lab`` (session scope) brings the lab up once through the Python API, or reconciles the
one already running (a few seconds: restores the 1.0.0 build everywhere, every server
ready, traffic running), and yields a ``LabHandle``. At session end it tears the lab down
only if this session started it and ``VEZA_LAB_KEEP`` is not set.

A missing component (not root, no Incus, no debootstrap, ...) skips the lab tests with the
reason, or fails them under ``CI=true``, where nothing may be skipped silently.

Tests that change the shared lab hold ``exclusive_lab()`` (a flock on
``/run/veza-canary-lab.test-lock``, the same lock the deploy tests take), and put what they
changed back before releasing it. Each session also holds a shared flock on
``/run/veza-canary-lab.users``: the teardown and the down/up cycle test run only when no
other session uses the lab.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

LOCK_PATH = "/run/veza-canary-lab.test-lock"  # == veza_canary.lab.config.CHANGE_LOCK
#: Every test session using the lab holds a shared flock here; only the last one may take it down.
USERS_LOCK_PATH = "/run/veza-canary-lab.users"  # == veza_canary.lab.config.USERS_LOCK
LAST_MARK = "lab_last"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{LAST_MARK}: runs after every other test (it cycles the lab down and up)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move tests marked ``lab_last`` to the very end of the session, whatever their module."""
    last = [i for i in items if i.get_closest_marker(LAST_MARK)]
    if last:
        items[:] = [i for i in items if not i.get_closest_marker(LAST_MARK)] + last


@contextmanager
def exclusive_lab() -> Iterator[None]:
    """Serialise tests (and engineers) that change the shared lab."""
    with open(LOCK_PATH, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class LabUsers:
    """A shared flock held by each test session that uses the lab (several may run at once)."""

    def __init__(self) -> None:
        self._fh = open(USERS_LOCK_PATH, "w")  # noqa: SIM115 - held for the whole session
        fcntl.flock(self._fh, fcntl.LOCK_SH)

    def try_sole(self) -> bool:
        """Upgrade to exclusive without waiting; False (shared lock kept) if another session uses the lab."""
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            # A failed conversion drops the old lock (flock(2)): take the shared one back.
            fcntl.flock(self._fh, fcntl.LOCK_SH)
            return False

    @contextmanager
    def sole(self, timeout: float = 600.0) -> Iterator[bool]:
        """Be the only session using the lab for a while (yields False if that never happened)."""
        deadline = time.monotonic() + timeout
        got = self.try_sole()
        while not got and time.monotonic() < deadline:
            time.sleep(2)
            got = self.try_sole()
        try:
            yield got
        finally:
            if got:
                fcntl.flock(self._fh, fcntl.LOCK_SH)

    def close(self) -> None:
        self._fh.close()


@dataclass(frozen=True)
class LabHandle:
    """What the ``lab`` fixture yields."""

    nodes: tuple[str, ...]          # backend-api-1..3
    canary: str                     # backend-api-2
    peers: tuple[str, ...]          # the other nodes
    haproxy: str                    # container name of HAProxy ("haproxy")
    prom: str                       # container name of Prometheus ("prom")
    ips: dict[str, str]             # container name -> IPv4 (the host reaches containers by IP)
    prom_url: str                   # http://<prom-ip>:9090
    lb_url: str                     # http://<haproxy-ip>
    env: dict[str, str]             # `veza-canary lab env` as a dict: feed it to load_settings(env=...)
    started_by_fixture: bool        # True: this session brought the lab up (and will take it down)
    users: LabUsers                 # the session's share of the lab (see LabUsers.sole)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"lab unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"lab unavailable: {reason}")


def _lab_running() -> bool:
    from veza_canary.lab import daemon
    from veza_canary.lab.state import LabState

    return daemon.incusd_answers() and LabState.load().config is not None


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    from veza_canary.lab import LabConfig, LabUnavailable, lab_down, lab_up, missing_components
    from veza_canary.lab.lifecycle import INSTALL_SCRIPT

    missing = missing_components()
    if missing and not (os.geteuid() == 0 and INSTALL_SCRIPT.is_file()):
        _unavailable("missing " + ", ".join(missing) + " (run: bash scripts/install-system-deps.sh as root)")
    users = LabUsers()
    was_running = _lab_running()
    with exclusive_lab():
        try:
            info = lab_up(LabConfig(), progress=lambda line: print(f"lab: {line}", flush=True))
        except LabUnavailable as exc:
            _unavailable(f"{exc} ({exc.hint})")
    handle = LabHandle(nodes=info.nodes, canary=info.canary, peers=info.peers, haproxy=info.haproxy,
                       prom=info.prom, ips=dict(info.ips), prom_url=info.prom_url, lb_url=info.lb_url,
                       env=dict(info.env), started_by_fixture=not was_running, users=users)
    try:
        yield handle
        if handle.started_by_fixture and not os.environ.get("VEZA_LAB_KEEP"):
            if users.try_sole():
                with exclusive_lab():
                    lab_down(force=True)  # we hold the users lock ourselves, exclusively
            else:
                print("lab: left up: another test session is using it", flush=True)
    finally:
        users.close()
