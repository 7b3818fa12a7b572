"""Parsing HAProxy 2.6 runtime-API replies and building commands from validated names."""

from __future__ import annotations

import os

import pytest

from veza_canary.errors import HAProxyError
from veza_canary.haproxy import (
    SOCAT_SCRIPT,
    AdminSocket,
    HAProxy,
    IncusSocat,
    find_server_state,
    open_dir_nofollow,
    parse_servers_state,
    parse_show_stat,
    split_replies,
)
from veza_canary.transport.base import Transport
from veza_canary.transport.incus_api import IncusAPI

SHOW_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,"
    "weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,"
    "rate_lim,rate_max,check_status,\n"
    "api_pool,backend-api-1,0,0,2,5,,120,1,1,,0,,0,0,0,0,UP,1,1,0,0,0,10,0,,1,3,1,,120,,2,3,,9,L7OK,\n"
    "api_pool,backend-api-2,1,1,0,3,,80,1,1,,0,,0,0,0,0,DRAIN,1,1,0,0,0,10,0,,1,3,2,,80,,2,0,,9,L7OK,\n"
    "api_pool,backend-api-3,0,0,0,3,,80,1,1,,0,,0,0,0,0,DOWN 1/2,1,1,0,1,1,10,0,,1,3,3,,80,,2,0,,9,L7STS,\n"
    "api_pool,BACKEND,0,0,2,5,,280,1,1,0,0,,0,0,0,0,UP,3,3,0,,0,10,0,,1,3,0,,280,,1,3,,9,,\n\n"
)
SERVERS_STATE = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 api_pool 1 backend-api-1 10.213.77.11 2 0 1 1 30 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n"
    "3 api_pool 2 backend-api-2 10.213.77.12 2 8 1 1 30 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n"
    "3 api_pool 3 backend-api-3 10.213.77.13 0 1 1 1 30 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n\n"
)


def test_show_stat_is_parsed_by_header_name():
    rows = {r.server: r for r in parse_show_stat(SHOW_STAT)}
    assert set(rows) == {"backend-api-1", "backend-api-2", "backend-api-3"}
    assert rows["backend-api-1"].is_up and rows["backend-api-1"].scur == 2
    assert rows["backend-api-2"].status == "DRAIN" and rows["backend-api-2"].qcur == 1
    assert rows["backend-api-3"].is_down and rows["backend-api-3"].check_status == "L7STS"


def test_servers_state_reads_drain_and_maint_from_the_bitmask():
    st = {s.server: s for s in parse_servers_state(SERVERS_STATE)}
    assert st["backend-api-1"].admin == "ready"
    assert st["backend-api-2"].admin == "drain" and st["backend-api-2"].drained
    assert st["backend-api-3"].admin == "maint" and st["backend-api-3"].op_state == 0


@pytest.mark.parametrize("reply", ["No such proxy.\n", "Can't find backend.\n", "Unknown command...\n", ""])
def test_error_replies_raise(reply):
    with pytest.raises(HAProxyError):
        parse_show_stat(reply)
    with pytest.raises(HAProxyError):
        parse_servers_state(reply)


class Canned(AdminSocket):
    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.sent: list[str] = []

    def send(self, command: str) -> str:
        self.sent.append(command)
        return self.reply


def test_set_state_accepts_only_the_empty_reply():
    ok = Canned("\n")
    HAProxy(ok, "api_pool").set_state("backend-api-1", "drain")
    assert ok.sent == ["set server api_pool/backend-api-1 state drain"]
    with pytest.raises(HAProxyError, match="No such server"):
        HAProxy(Canned("No such server.\n"), "api_pool").set_state("backend-api-9", "ready")


@pytest.mark.parametrize("name", ["a;shutdown sessions server x/y", "a b", "", "x\nshow info"])
def test_hostile_names_never_reach_the_socket(name):
    sock = Canned("\n")
    with pytest.raises(HAProxyError):
        HAProxy(sock, "api_pool").set_state(name, "drain")
    assert sock.sent == []


def test_get_weight_parses_current_and_initial():
    assert HAProxy(Canned("100 (initial 100)\n"), "api_pool").get_weight("backend-api-1") == (100, 100)


# -- reads that cost the same for 3 servers and for 500 ---------------------------------------------


class RuntimeAPI(AdminSocket):
    """HAProxy's runtime API over a list of servers, with the 2.6 reply shapes and numeric server ids.

    ``reload(order)`` renumbers the servers as a reload with a changed configuration does.
    """

    STAT_HEADER = "# pxname,svname,qcur,qmax,scur,smax,status,weight,iid,sid,check_status,"

    def __init__(self, names: list[str], backend: str = "api_pool") -> None:
        self.backend = backend
        self.ids = {n: i for i, n in enumerate(names, 1)}
        self.admin = dict.fromkeys(names, 0)
        self.scur = dict.fromkeys(names, 0)
        self.sent: list[str] = []

    def reload(self, names: list[str]) -> None:
        self.ids = {n: i for i, n in enumerate(names, 1)}
        self.admin = {n: self.admin.get(n, 0) for n in names}
        self.scur = {n: self.scur.get(n, 0) for n in names}

    def send(self, command: str) -> str:
        self.sent.append(command)
        return "".join(self._one(c.strip()) for c in command.split(";"))

    def _one(self, command: str) -> str:
        p = command.split()
        if p[:3] == ["show", "servers", "state"]:
            if p[3] != self.backend:
                return "Can't find backend.\n\n"
            lines = [f"4 {self.backend} {i} {n} 10.0.0.{i} 2 {self.admin[n]} 1 1 5 6 3 4 6 0 0 0 {n}.lxd 8080 - 0 0 - - 0"
                     for n, i in sorted(self.ids.items(), key=lambda kv: kv[1])]
            return "1\n" + SERVERS_STATE.splitlines()[1] + "\n" + "\n".join(lines) + "\n\n"
        if p[:2] == ["show", "stat"]:
            if p[2] != self.backend:
                return "No such proxy.\n\n"
            sid = int(p[4])
            rows = [f"{self.backend},{n},0,0,{self.scur[n]},5,{'DRAIN' if self.admin[n] else 'UP'},1,4,{i},L7OK,"
                    for n, i in sorted(self.ids.items(), key=lambda kv: kv[1]) if sid in (-1, i)]
            return "\n".join([self.STAT_HEADER, *rows]) + "\n\n"
        return "Unknown command.\n"


NAMES = [f"backend-api-{i}" for i in range(1, 501)]


def test_stat_learns_the_ids_once_then_asks_for_one_row():
    api = RuntimeAPI(NAMES)
    h = HAProxy(api, "api_pool")
    assert h.stat("backend-api-7").server == "backend-api-7"
    assert h.stat("backend-api-400").server == "backend-api-400"
    assert api.sent == ["show servers state api_pool", "show stat api_pool 4 7", "show stat api_pool 4 400"]


def test_state_parses_only_the_servers_line():
    api = RuntimeAPI(NAMES)
    api.admin["backend-api-250"] = 8
    st = HAProxy(api, "api_pool").state("backend-api-250")
    assert (st.server, st.admin, st.srv_id) == ("backend-api-250", "drain", 250)


def test_find_server_state_skips_the_name_seen_in_another_field():
    # backend-api-1's fqdn column holds "backend-api-2": the search must not take that line for backend-api-2.
    reply = SERVERS_STATE.replace("0 0 0 - 8080", "0 0 0 backend-api-2 8080", 1)
    st = find_server_state(reply, "api_pool", "backend-api-2")
    assert st is not None and st.srv_id == 2 and st.admin == "drain"
    assert find_server_state(reply, "api_pool", "backend-api-9") is None
    with pytest.raises(HAProxyError):
        find_server_state("Can't find backend.\n\n", "api_pool", "backend-api-2")


def test_view_reads_state_and_stat_in_one_call():
    api = RuntimeAPI(NAMES[:3])
    h = HAProxy(api, "api_pool")
    h.states()  # preflight's whole read: the ids come with it
    api.sent.clear()
    api.admin["backend-api-2"], api.scur["backend-api-2"] = 8, 3
    v = h.view("backend-api-2")
    assert (v.state.admin, v.stat.scur, v.stat.server) == ("drain", 3, "backend-api-2")
    assert api.sent == ["show servers state api_pool; show stat api_pool 4 2"]


def test_a_reload_that_renumbers_the_servers_is_detected_and_the_ids_read_again():
    api = RuntimeAPI(NAMES[:3])
    h = HAProxy(api, "api_pool")
    h.states()
    api.reload(["backend-api-3", "backend-api-1", "backend-api-2"])  # now backend-api-1 is 2, -2 is 3, -3 is 1
    api.scur["backend-api-1"] = 5
    assert h.stat("backend-api-1").scur == 5  # id 1 now answers backend-api-3's row: refused, ids re-read
    assert api.sent[-3:] == ["show stat api_pool 4 1", "show servers state api_pool", "show stat api_pool 4 2"]
    api.reload(["backend-api-2", "backend-api-1", "backend-api-3"])
    api.admin["backend-api-2"] = 1
    v = h.view("backend-api-2")
    assert (v.state.srv_id, v.state.admin, v.stat.server) == (1, "maint", "backend-api-2")


def test_a_server_gone_after_a_reload_is_an_error_not_another_servers_row():
    api = RuntimeAPI(NAMES[:3])
    h = HAProxy(api, "api_pool")
    h.states()
    api.reload(["backend-api-1", "backend-api-3"])  # backend-api-2 removed; id 2 is now backend-api-3
    with pytest.raises(HAProxyError, match="no server 'backend-api-2'"):
        h.stat("backend-api-2")
    with pytest.raises(HAProxyError, match="no server 'backend-api-2'"):
        h.view("backend-api-2")


def test_split_replies_needs_one_reply_per_command():
    assert split_replies("a\n\nb\n\n", 2) == ["a\n\n", "b\n\n"]
    with pytest.raises(HAProxyError):
        split_replies("Unknown command.\n", 2)


# -- the admin socket of a local container, reached without an exec --------------------------------


class _PidAPI(IncusAPI):
    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def instance_pid(self, container: str) -> int | None:
        return self.pid


class _Socat(Transport):
    """A container transport answering every exec like socat would; counts them."""

    name = "incus:haproxy"
    container = "haproxy"

    def __init__(self, api: IncusAPI) -> None:
        self.api = api
        self.argvs: list[tuple[str, ...]] = []

    def _run(self, argv, input, timeout):  # type: ignore[no-untyped-def]
        self.argvs.append(argv)
        return 0, b"\n", b""


@pytest.mark.parametrize("pid", [None, os.getpid()])
def test_direct_socket_falls_back_to_socat_when_the_container_root_is_not_usable(pid):
    """No PID (stopped, a VM), or a 'container' whose root is this host's own root: never a direct connect."""
    t = _Socat(_PidAPI(pid))
    sock = IncusSocat(t, "/run/haproxy/admin.sock")
    assert sock.send("set server api_pool/backend-api-1 state drain") == "\n"
    assert sock._dir is None
    assert t.argvs == [("sh", "-c", SOCAT_SCRIPT, "veza-haproxy", "set server api_pool/backend-api-1 state drain",
                        "/run/haproxy/admin.sock")]


def test_direct_socket_is_off_without_the_local_api_or_when_asked():
    t = _Socat(_PidAPI(os.getpid()))
    assert IncusSocat(t, "/run/haproxy/admin.sock", direct=False)._api is None
    t.api = None  # type: ignore[assignment]  # e.g. incus over SSH: the CLI, no API here
    assert IncusSocat(t, "/run/haproxy/admin.sock")._api is None


def test_in_rotation_is_ready_and_up_from_one_read():
    """The status column alone tells ready-and-UP apart from drained, maintenance, down, NOLB, unchecked."""
    reply = SHOW_STAT.replace("api_pool,BACKEND", "api_pool,backend-api-4,0,0,0,0,,0,0,0,,0,,0,0,0,0,NOLB,1,1,0,0,0,"
                                                  "10,0,,1,3,4,,0,,2,0,,9,L7OK,\napi_pool,backend-api-5,0,0,0,0,,0,0,"
                                                  "0,,0,,0,0,0,0,UP 1/2,1,1,0,0,0,10,0,,1,3,5,,0,,2,0,,9,L7OK,\n"
                                                  "api_pool,backend-api-6,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,"
                                                  "0,10,0,,1,3,6,,0,,2,0,,9,,\nother,backend-api-7,0,0,0,0,,0,0,0,,0,"
                                                  ",0,0,0,0,UP,1,1,0,0,0,10,0,,1,3,6,,0,,2,0,,9,,\napi_pool,BACKEND")
    sock = Canned(reply)
    assert HAProxy(sock, "api_pool").in_rotation() == {"backend-api-1", "backend-api-5"}
    assert sock.sent == ["show stat api_pool 4 -1"]
    # The same verdict as states() + stats() (admin ready and is_up) on every row of the reply.
    rows = {r.server: r for r in parse_show_stat(reply) if r.backend == "api_pool"}
    assert {n for n, r in rows.items() if r.is_up} == {"backend-api-1", "backend-api-5"}
    with pytest.raises(HAProxyError):
        HAProxy(Canned("No such proxy.\n"), "api_pool").in_rotation()


def test_the_walk_to_the_socket_never_follows_a_symlink_or_dot_dot(tmp_path):
    """An absolute symlink inside a container (say /var/run -> /run) would resolve against this host's root."""
    (tmp_path / "run" / "haproxy").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = open_dir_nofollow(root, "/run/haproxy")
        assert os.path.samefile(f"/proc/self/fd/{fd}", tmp_path / "run" / "haproxy")
        os.close(fd)
        for bad in ("/var/run/haproxy", "/run/../run/haproxy", "/run/missing"):
            with pytest.raises(OSError):
                open_dir_nofollow(root, bad)
    finally:
        os.close(root)


def test_direct_socket_with_dot_dot_goes_through_socat():
    t = _Socat(_PidAPI(12345))
    sock = IncusSocat(t, "/run/../run/haproxy/admin.sock")
    assert sock.send("show info") == "\n" and sock._api is None and len(t.argvs) == 1
