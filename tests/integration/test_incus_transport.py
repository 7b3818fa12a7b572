"""IncusTransport against real Incus: directly, and through SSHTransport to a local sshd.

The tests never change the lab's containers (one read-only exec). They launch a
throwaway container of their own from the lab's image, ``vc-transport-test``
(no network device at all, so it is isolated whatever the bridge does), plus
``vc-transport-test-stopped`` (created, never started), and delete both at the end.
They hold the lab lock while these exist, so no lab teardown runs meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import sshd_fixture
from tests.integration.conftest import LabHandle, exclusive_lab
from tests.integration.sshd_fixture import Sshd
from veza_canary.errors import CommandFailed, CommandTimedOut, IncusError, PushError
from veza_canary.node import Node
from veza_canary.transport import IncusTransport, LocalTransport, Transport

pytestmark = [pytest.mark.integration, pytest.mark.lab]

CONTAINER = "vc-transport-test"
STOPPED = "vc-transport-test-stopped"
MISSING = "vc-transport-test-missing"
WORK = "/opt/vc-transport-test"

sshd = sshd_fixture.sshd


def _incus(*args: str, check: bool = True, timeout: float = 180) -> str:
    return LocalTransport().run(("incus", *args), timeout=timeout, check=check).stdout


def _delete_ours() -> None:
    for name in (CONTAINER, STOPPED):
        _incus("delete", "--force", name, check=False)


def _create(name: str) -> None:
    from veza_canary.lab.config import IMAGE_ALIAS

    _incus("init", IMAGE_ALIAS, name)
    # A "none" device masks the default profile's NIC: the container has no network at all.
    _incus("config", "device", "add", name, "eth0", "none")


@pytest.fixture(scope="module")
def containers(lab: LabHandle) -> Iterator[str]:
    """Our own running container (and a stopped one), for the whole module."""
    from veza_canary.lab import daemon
    from veza_canary.lab.config import IMAGE_ALIAS

    with exclusive_lab():
        assert daemon.guard_loaded(), "the lab's nft guard is not loaded; refusing to start a container"
        assert IMAGE_ALIAS in _incus("image", "list", "--format", "csv", "-c", "l"), f"no image {IMAGE_ALIAS}"
        _delete_ours()  # leftovers of a killed earlier run
        try:
            _create(CONTAINER)
            _create(STOPPED)
            _incus("start", CONTAINER)
            _wait_booted(CONTAINER)
            yield CONTAINER
        finally:
            _delete_ours()


def _wait_booted(name: str, timeout: float = 90) -> None:
    t = IncusTransport(name)
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = t.run(("systemctl", "is-system-running"), check=False, timeout=20).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.2)
    pytest.fail(f"{name} did not boot: systemd says {state!r}")


class CLIOnlyLocal(LocalTransport):
    """This machine, but IncusTransport must use the ``incus`` CLI (its REST API path wants a plain LocalTransport)."""


@pytest.fixture(scope="module", params=["local", "local-cli", "ssh"])
def host(request: pytest.FixtureRequest, containers: str) -> Iterator[Transport]:
    """Where ``incus`` runs: this process (REST API on the local socket, or the CLI), or this machine over SSH."""
    if request.param == "local":
        yield LocalTransport()
        return
    if request.param == "local-cli":
        yield CLIOnlyLocal()
        return
    server: Sshd = request.getfixturevalue("sshd")
    t = server.transport()
    yield t
    t.close()


@pytest.fixture
def ct(host: Transport) -> IncusTransport:
    t = IncusTransport(CONTAINER, host)
    assert (t.api is not None) == (type(host) is LocalTransport)  # each path is really the one under test
    return t


@pytest.fixture
def workdir(ct: IncusTransport) -> Iterator[str]:
    ct.run(("rm", "-rf", "--", WORK))
    yield WORK
    ct.run(("rm", "-rf", "--", WORK))


# -- exec ---------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "code"), [
    (["true"], 0),
    (["sh", "-c", "exit 3"], 3),
    (["no-such-command-vc"], 127),
    (["sh", "-c", "kill -9 $$"], 137),
])
def test_exec_exit_status_passes_through(ct: IncusTransport, argv: list[str], code: int) -> None:
    r = ct.run(argv, check=False)
    assert r.exit_code == code, r.stderr


def test_exec_nonzero_is_command_failed_not_incus_error(ct: IncusTransport) -> None:
    with pytest.raises(CommandFailed) as info:
        ct.run(["sh", "-c", "echo 'Error: my own failure' >&2; exit 1"])
    assert not isinstance(info.value, IncusError)


def test_exec_streams_and_stdin(ct: IncusTransport) -> None:
    r = ct.run(["sh", "-c", "cat; echo err >&2"], input="from stdin\n")
    assert (r.stdout, r.stderr) == ("from stdin\n", "err\n")


def test_exec_argv_arrives_intact(ct: IncusTransport, tmp_path: Path) -> None:
    args = ["with space", "it's", 'dq"', "$HOME", "$(touch /tmp/vc-injected)", "a; touch /tmp/vc-injected", "*", ""]
    r = ct.run(["printf", "%s\\0", *args])
    assert r.stdout.split("\0")[:-1] == args
    assert ct.run(["test", "-e", "/tmp/vc-injected"], check=False).exit_code == 1


def test_exec_timeout_is_command_timed_out(ct: IncusTransport, host: Transport) -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimedOut):
        ct.run(["sleep", "300"], timeout=1)
    assert time.monotonic() - start < 5
    if host.is_local:
        # Killing the local incus client makes incusd kill the command in the container; through the REST
        # API, the command ran under ``timeout``, which kills it there.
        _eventually(lambda: ct.run(["pgrep", "-x", "sleep"], check=False).exit_code == 1)
    else:
        ct.run(["pkill", "-x", "sleep"], check=False)  # see the report: no kill through a root SSH login


def test_read_only_exec_in_a_lab_container(lab: LabHandle, host: Transport) -> None:
    assert IncusTransport(lab.canary, host).run(["cat", "/etc/hostname"]).stdout.strip() == lab.canary


# -- files --------------------------------------------------------------------------


def test_push_with_mode_and_create_dirs(ct: IncusTransport, workdir: str, tmp_path: Path) -> None:
    src = tmp_path / "veza-api"
    src.write_bytes(b"\x7fELF" + bytes(range(256)) * 4000)
    dst = f"{workdir}/a/b/veza-api"
    ct.push(src, dst, mode=0o750, create_dirs=True)
    assert ct.run(["stat", "-c", "%a %u %g", dst]).stdout.split() == ["750", "0", "0"]
    assert ct.run(["sha256sum", dst]).stdout.split()[0] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert ct.run(["ls", "-A", f"{workdir}/a/b"]).stdout.split() == ["veza-api"]  # no temp left


def test_push_without_create_dirs_into_a_missing_dir_is_an_incus_error(ct: IncusTransport, workdir: str,
                                                                       tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(IncusError, match="incus file push"):
        ct.push(src, f"{workdir}/missing/f")
    assert ct.run(["test", "-e", f"{workdir}/missing"], check=False).exit_code == 1


def test_push_replaces_a_running_binary(ct: IncusTransport, workdir: str, tmp_path: Path, host: Transport) -> None:
    """``incus file push`` alone fails here with "text file busy"; push renames a new file over it."""
    prog = f"{workdir}/prog"
    ct.run(["mkdir", "-p", workdir])
    ct.run(["cp", "/bin/sleep", prog])
    ct.run(["sh", "-c", f"setsid {prog} 300 </dev/null >/dev/null 2>&1 &"])
    _eventually(lambda: ct.run(["pgrep", "-f", prog], check=False).ok)
    new = tmp_path / "new"
    new.write_bytes(b"#!/bin/sh\necho new build\n")
    if host.is_local:
        raw = host.run(("incus", "-q", "file", "push", str(new), f"{CONTAINER}{prog}"), check=False)
        assert "text file busy" in raw.stderr  # why IncusTransport does not push in place
    ct.push(new, prog, mode=0o755)
    assert ct.run([prog]).stdout == "new build\n"
    assert ct.run(["pgrep", "-f", prog], check=False).ok  # the old process kept running meanwhile
    ct.run(["pkill", "-f", prog], check=False)
    assert ct.run(["ls", "-A", workdir]).stdout.split() == ["prog"]


def test_install_verifies_on_the_node_and_renames_in_one_command(ct: IncusTransport, workdir: str,
                                                                 tmp_path: Path) -> None:
    node = Node(CONTAINER, ct, install_dir=workdir, restart_argv=("true",), health_url="http://127.0.0.1:1/")
    src = tmp_path / "veza-api"
    src.write_bytes(b"#!/bin/sh\necho v2\n")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert node.install(src, sha) is True
    assert ct.run([node.binary_path]).stdout == "v2\n"
    assert ct.run(["stat", "-c", "%a", node.binary_path]).stdout.strip() == "755"
    assert node.install(src, sha) is False  # identical: nothing pushed
    # A pushed file whose sha256 differs is refused on the node and never renamed into place.
    other = tmp_path / "other"
    other.write_bytes(b"#!/bin/sh\necho corrupted\n")
    with pytest.raises(PushError, match="corrupted"):
        node.install(other, "0" * 64)
    assert ct.run([node.binary_path]).stdout == "v2\n"
    assert ct.run(["ls", "-A", workdir]).stdout.split() == ["veza-api"]  # the temp file was removed


@pytest.mark.parametrize("direct", [True, False])
def test_haproxy_reads_in_the_lab(lab: LabHandle, host: Transport, direct: bool) -> None:
    """The same answers through socat in the container and, for a local container, straight to its socket."""
    from veza_canary.haproxy import HAProxy, IncusSocat

    hap_t = IncusTransport(lab.haproxy, host)
    sock = IncusSocat(hap_t, lab.env.get("HAPROXY_SOCKET", "/run/haproxy/admin.sock"), direct=direct)
    h = HAProxy(sock, lab.env.get("POOL_BACKEND", "api_pool"))
    execs: list[tuple[str, ...]] = []
    real_run = hap_t._run
    hap_t._run = lambda argv, input, timeout: (execs.append(argv), real_run(argv, input, timeout))[1]  # type: ignore[method-assign]
    states, stats = h.states(), h.stats()
    v = h.view(lab.canary)
    assert (v.state.server, v.stat.server) == (lab.canary, lab.canary)
    assert v.state.srv_id == states[lab.canary].srv_id and v.stat.status.split()[0] in ("UP", "DOWN", "DRAIN", "MAINT")
    assert h.stat(lab.canary).server == lab.canary and h.state(lab.canary).admin == states[lab.canary].admin
    assert set(stats) == set(states)
    assert h.in_rotation() == {n for n, st in states.items() if st.admin == "ready" and stats[n].is_up}
    # Directly only where the container is local to the API (not over SSH, nor through the CLI-only host).
    assert (execs == []) == (direct and hap_t.api is not None), execs[:2]
    sock.close()


def test_pull(ct: IncusTransport, workdir: str, tmp_path: Path) -> None:
    ct.run(["mkdir", "-p", workdir])
    ct.run(["sh", "-c", f"printf 'pulled\\000bytes' > {workdir}/src"])
    ct.pull(f"{workdir}/src", tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == b"pulled\x00bytes"


# -- Incus's own errors --------------------------------------------------------------


def test_stopped_container_is_an_incus_error(host: Transport, tmp_path: Path) -> None:
    t = IncusTransport(STOPPED, host)
    with pytest.raises(IncusError, match=r"^\[vc-transport-test-stopped\] incus: Instance is not running$"):
        t.run(["true"], check=False)
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(IncusError, match="Instance is not running"):
        t.push(src, "/root/f")
    # The file API works on a stopped container: the temp name was deleted again.
    listing = json.loads(_incus("query", f"/1.0/instances/{STOPPED}/files?path=/root"))
    assert ".bashrc" in listing
    assert not [n for n in listing if "veza-tmp" in n]


def test_missing_container_is_an_incus_error(host: Transport, tmp_path: Path) -> None:
    t = IncusTransport(MISSING, host)
    with pytest.raises(IncusError, match=r"^\[vc-transport-test-missing\] incus: .*Instance not found$"):
        t.run(["true"], check=False)
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(IncusError, match="Instance not found"):
        t.push(src, "/root/f")
    with pytest.raises(IncusError, match="Instance not found"):
        t.pull("/etc/hostname", tmp_path / "never")
    assert not (tmp_path / "never").exists()


def _eventually(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.1)
