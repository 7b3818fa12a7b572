"""Parsing HAProxy 2.6 runtime-API replies and building commands from validated names."""

from __future__ import annotations

import pytest

from veza_canary.errors import HAProxyError
from veza_canary.haproxy import AdminSocket, HAProxy, parse_servers_state, parse_show_stat

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
