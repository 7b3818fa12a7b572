"""Pure parts of the lab: config values, rendered files, apt sources, parsers, the load generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from veza_canary.lab import configs, traffic
from veza_canary.lab.config import CHANGE_LOCK, USERS_LOCK, LabConfig, LabError
from veza_canary.lab.daemon import guard_ruleset, preseed
from veza_canary.lab.image import apt_sources
from veza_canary.lab.lifecycle import env
from veza_canary.lab.probe import parse_show_stat
from veza_canary.lab.standin import build_standin
from veza_canary.lab.state import LabState
from veza_canary.lab.wait import wait_until
from veza_canary.settings import load_settings

# --- LabConfig --------------------------------------------------------------------------------------


def test_default_lab_has_three_nodes_and_backend_api_2_as_canary() -> None:
    cfg = LabConfig()
    assert cfg.nodes == ("backend-api-1", "backend-api-2", "backend-api-3")
    assert cfg.canary_node == "backend-api-2" and cfg.peers == ("backend-api-1", "backend-api-3")
    assert cfg.containers[-2:] == ("haproxy", "prom")


def test_addresses_are_static_and_distinct() -> None:
    cfg = LabConfig.with_nodes(5)
    ips = [cfg.ip_of(n) for n in cfg.containers]
    assert len(set(ips)) == len(ips)
    assert cfg.ip_of("haproxy") == "10.213.77.10" and cfg.ip_of("backend-api-1") == "10.213.77.101"
    with pytest.raises(LabError):
        cfg.ip_of("nope")


@pytest.mark.parametrize("kwargs", [
    {"nodes": ("only-one",)}, {"nodes": ("a-1", "a-1")}, {"nodes": ("Bad_Name", "b")}, {"rate": 0},
    {"rate": 10_000}, {"nodes": ("haproxy", "b")},
])
def test_bad_lab_configs_are_refused(kwargs: dict) -> None:
    with pytest.raises(LabError):
        LabConfig(**kwargs)


def test_config_round_trips_through_the_state_file(tmp_path: Path) -> None:
    cfg = LabConfig.with_nodes(4, rate=7.5)
    st = LabState(incusd_started=True, incusd_pid=42, ip_forward_before="0", config=cfg.to_dict())
    st.save(tmp_path / "state.json")
    back = LabState.load(tmp_path / "state.json")
    assert back == st and LabConfig.from_dict(back.config) == cfg
    assert LabState.load(tmp_path / "missing.json") == LabState()


# --- env ---------------------------------------------------------------------------------------------

def test_env_uses_ips_and_builds_valid_settings() -> None:
    e = env(LabConfig())
    assert e["PROM_URL"] == "http://10.213.77.11:9090" and e["LB_URL"] == "http://10.213.77.10"
    assert e["PEER_NODES"] == "backend-api-1 backend-api-3"
    s = load_settings({}, e, None, config={})
    assert s.pool.canary == "backend-api-2" and s.pool.peers == ("backend-api-1", "backend-api-3")
    assert s.sli.window == 30 and s.safety.allow_short_window and s.sli.rate_window == "10s"
    assert s.haproxy.container == "haproxy" and s.haproxy.backend == "api_pool"


# --- rendered files -----------------------------------------------------------------------------------------

def test_haproxy_cfg_has_one_checked_server_per_node_named_like_its_container() -> None:
    cfg = LabConfig()
    text = configs.haproxy_cfg(cfg, exporter=False)
    servers = re.findall(r"^\s+server (\S+) (\S+) check$", text, re.M)
    assert servers == [(n, f"{cfg.ip_of(n)}:8080") for n in cfg.nodes]
    assert "option httpchk GET /api/v1/health" in text
    assert "inter 1s fastinter 500ms" in text and "rise 2 fall 2" in text
    assert "stats socket /run/haproxy/admin.sock mode 600 level admin" in text
    assert "prometheus-exporter" not in text
    assert "use-service prometheus-exporter" in configs.haproxy_cfg(cfg, exporter=True)


def test_prometheus_scrapes_each_node_with_job_and_node_labels_every_second() -> None:
    cfg = LabConfig()
    doc = json.loads(configs.prometheus_yml(cfg, exporter=True).split("\n", 1)[1])
    assert doc["global"]["scrape_interval"] == "1s"
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    nodes = {sc["labels"]["node"]: sc["targets"] for sc in jobs["veza-backend-api"]["static_configs"]}
    assert nodes == {n: [f"{cfg.ip_of(n)}:8080"] for n in cfg.nodes}
    assert "haproxy" in jobs
    assert configs.prometheus_targets(cfg, exporter=True) == 4
    assert configs.prometheus_targets(cfg, exporter=False) == 3


def test_node_unit_runs_the_runbook_path_and_stops_crash_loops() -> None:
    unit = configs.node_unit()
    assert "ExecStart=/opt/veza/backend-api/veza-api\n" in unit
    assert "Restart=on-failure" in unit and "StartLimitBurst=3" in unit


def test_guard_drops_both_directions_at_priority_minus_100_and_avoids_the_fwd_keyword() -> None:
    rules = guard_ruleset()
    assert "hook forward priority -100" in rules
    assert re.search(r'iifname "vezabr0" oifname != "vezabr0" .*drop', rules)
    assert re.search(r'oifname "vezabr0" iifname != "vezabr0" .*drop', rules)
    assert not re.search(r"chain fwd\b", rules)


def test_preseed_keeps_incus_off_the_network() -> None:
    p = preseed()
    assert p["config"]["core.proxy_https"] == "http://127.0.0.1:9"
    assert p["config"]["images.auto_update_interval"] == "0"
    net = p["networks"][0]["config"]
    assert net["ipv4.nat"] == "false" and net["ipv6.address"] == "none" and net["raw.dnsmasq"] == "no-resolv"
    assert p["storage_pools"][0]["driver"] == "dir"


# --- apt sources --------------------------------------------------------------------------------------------

def test_mirror_is_read_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "off.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://elsewhere.example/debian\nSuites: bookworm\n")
    src = apt_sources(tmp_path, "bookworm")
    assert src.mirror == "http://mirror.example/debian"
    assert src.suites == ("bookworm", "bookworm-updates")
    assert src.security == "http://mirror.example/debian-security"
    assert "deb http://mirror.example/debian-security bookworm-security main" in src.sources_list()


def test_mirror_is_read_from_a_one_line_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64] http://one.example/debian bookworm main contrib\n")
    src = apt_sources(tmp_path, "bookworm")
    assert src.mirror == "http://one.example/debian" and src.security is None


def test_no_mirror_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LabError):
        apt_sources(tmp_path, "bookworm")


# --- parsers and waits ----------------------------------------------------------------------------------------

SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status
api_pool,backend-api-1,0,0,1,3,,10,0,0,,0,,0,0,0,0,UP,100,1,0,0,0,5,0,,1,3,1,,10,,2,0,,2,L7OK
api_pool,backend-api-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,100,1,0,2,1,1,1,,1,3,2,,0,,2,0,,0,L7STS
"""


def test_show_stat_is_parsed_by_column_name() -> None:
    stats = parse_show_stat(SHOW_STAT)
    assert [(s.name, s.status, s.up, s.scur, s.check_status) for s in stats] == [
        ("backend-api-1", "UP", True, 1, "L7OK"), ("backend-api-2", "DOWN", False, 0, "L7STS")]


def test_show_stat_error_reply_is_an_haproxy_error() -> None:
    from veza_canary.errors import HAProxyError

    with pytest.raises(HAProxyError):
        parse_show_stat("No such proxy.\n")


def test_wait_until_returns_the_first_truthy_value_or_raises_lab_error() -> None:
    calls = iter([0, None, 7])
    assert wait_until(lambda: next(calls), 5, "x", interval=0.01) == 7
    with pytest.raises(LabError, match="waiting for never"):
        wait_until(lambda: False, 0.05, "never", interval=0.01)


# --- the load generator, against a stand-in on loopback -----------------------------------------------------------

def test_loadgen_sends_about_its_rate_and_stops_by_itself(tmp_path: Path) -> None:
    exe = build_standin("1.0.0", None, tmp_path / "veza-api")
    api = subprocess.Popen([str(exe), "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    try:
        port = re.search(r":(\d+)$", api.stderr.readline().strip()).group(1)
        prog = tmp_path / "veza-loadgen"
        prog.write_text(traffic.loadgen_program())
        r = subprocess.run([sys.executable, str(prog), "--url", f"http://127.0.0.1:{port}", "--rate", "20",
                            "--duration", "1.5"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and "duration reached" in r.stdout
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        api.kill()
        api.wait(timeout=5)
        api.stderr.close()
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
              if ln.startswith("veza_gin_http_request_duration_seconds_count{")]
    assert 25 <= sum(counts) <= 31
    paths = set(re.findall(r'path="([^"]+)"', metrics))
    assert {"/api/v1/tracks", "/api/v1/users/me", "/api/v1/tracks/:id", "/api/v1/playlists"} <= paths


def test_loadgen_refuses_an_unbounded_run(tmp_path: Path) -> None:
    prog = tmp_path / "veza-loadgen"
    prog.write_text(traffic.loadgen_program())
    r = subprocess.run([sys.executable, str(prog), "--duration", "0"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0


def test_lock_paths_match_the_test_fixture() -> None:
    from tests.integration.conftest import LOCK_PATH, USERS_LOCK_PATH

    assert str(USERS_LOCK) == USERS_LOCK_PATH
    assert str(CHANGE_LOCK) == LOCK_PATH
