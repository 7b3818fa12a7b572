"""Settings: flag > env > config file > default, and validation that names the knob."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from veza_canary.errors import ConfigError
from veza_canary.settings import KNOBS, KNOBS_BY_ENV, KNOBS_BY_NAME, Settings, load_settings


def test_defaults_follow_the_runbook():
    s = load_settings({}, {}, config={})
    assert s.pool.canary == "backend-api-2" and s.pool.peers == ("backend-api-1",)
    assert s.haproxy.backend == "api_pool" and s.sli.window == 3600 and s.sli.probe_interval == 30
    assert s.prometheus.url == "http://prom.lxd:9090" and s.sli.p95_threshold_s == 0.5
    assert s.sli.err_ratio_threshold == 0.005 and s.service.health_path == "/api/v1/health"
    assert s.service.install_dir == "/opt/veza/backend-api" and s.migrations.force is False
    assert s.service.restart_argv == ("systemctl", "restart", "veza-backend-api")


def test_every_knob_is_one_settings_field_and_its_default_is_the_fields_default():
    defaults = Settings()
    seen = set()
    for k in KNOBS:
        group = getattr(defaults, k.group) if k.group else defaults
        assert k.field in group.__dataclass_fields__, k.name
        assert k.read(defaults) == k.default, k.name
        assert k.flag == "--" + k.name.replace("_", "-")
        seen.add((k.group, k.field))
    assert len(seen) == len(KNOBS) == len(KNOBS_BY_NAME) == len(KNOBS_BY_ENV)


def test_defaults_load_and_validate_with_no_environment_and_no_file():
    assert load_settings({}, {}, config={}) == Settings()


def test_precedence_flag_over_env_over_config_over_default(tmp_path: Path):
    cfg = tmp_path / "veza-canary.toml"
    cfg.write_text('sli_window = 900\nsli_probe_interval = 15\ncanary_node = "from-config"\n')
    env = {"SLI_WINDOW": "1200", "CANARY_NODE": "from-env"}
    s = load_settings({"sli_window": "1500"}, env, cfg)
    assert s.sli.window == 1500 and s.sources["sli_window"] == "flag"
    assert s.pool.canary == "from-env" and s.sources["canary_node"] == "env"
    assert s.sli.probe_interval == 15 and s.sources["sli_probe_interval"] == "config"
    assert s.haproxy.backend == "api_pool" and s.sources["pool_backend"] == "default"


def test_empty_env_var_counts_as_unset():
    assert load_settings({}, {"CANARY_NODE": ""}, config={}).pool.canary == "backend-api-2"


def test_peer_nodes_split_on_spaces_and_commas():
    s = load_settings({}, {"PEER_NODES": "backend-api-1, backend-api-3 backend-api-4"}, config={})
    assert s.pool.peers == ("backend-api-1", "backend-api-3", "backend-api-4")


@pytest.mark.parametrize("env,knob", [
    ({"CANARY_NODE": "backend-api-2; rm -rf /"}, "CANARY_NODE"),
    ({"CANARY_NODE": "../etc"}, "CANARY_NODE"),
    ({"CANARY_NODE": "a" * 70}, "CANARY_NODE"),
    ({"CANARY_NODE": "backend api"}, "CANARY_NODE"),
    ({"CANARY_NODE": "backend-\u00e9"}, "CANARY_NODE"),
    ({"PEER_NODES": "backend-api-1\nbackend-api-3"}, "PEER_NODES"),
    ({"PEER_NODES": "backend-api-1 $(reboot)"}, "PEER_NODES"),
    ({"PEER_NODES": "backend-api-2"}, "PEER_NODES"),  # the canary itself
    ({"HAPROXY_CONTAINER": "haproxy;id"}, "HAPROXY_CONTAINER"),
    ({"POOL_BACKEND": "api pool"}, "POOL_BACKEND"),
    ({"PROM_URL": "prom.lxd:9090"}, "PROM_URL"),
    ({"PROM_URL": "http://"}, "PROM_URL"),
    ({"PROM_URL": "http://prom:99999"}, "PROM_URL"),
    ({"LB_URL": "ftp://haproxy"}, "LB_URL"),
    ({"INCUS_HOST": "deploy@host"}, "INCUS_HOST"),
    ({"SLI_WINDOW": "-5"}, "SLI_WINDOW"),
    ({"SLI_WINDOW": "60"}, "SLI_WINDOW"),
    ({"SLI_WINDOW": "1e12"}, "SLI_WINDOW"),
    ({"SLI_WINDOW": "abc"}, "SLI_WINDOW"),
    ({"SLI_WINDOW": "nan"}, "SLI_WINDOW"),
    ({"SLI_PROBE_INTERVAL": "0"}, "SLI_PROBE_INTERVAL"),
    ({"SLI_PROBE_INTERVAL": "4000"}, "SLI_PROBE_INTERVAL"),
    ({"PROM_ERR_RATE_THRESHOLD": "2"}, "PROM_ERR_RATE_THRESHOLD"),
    ({"FORCE_MIGRATE": "maybe"}, "FORCE_MIGRATE"),
    ({"DRAIN_TIMEOUT_ACTION": "ignore"}, "DRAIN_TIMEOUT_ACTION"),
    ({"INSTALL_DIR": "opt/veza"}, "INSTALL_DIR"),
    ({"INSTALL_DIR": "/opt/../etc"}, "INSTALL_DIR"),
    ({"HEALTH_PATH": "api/health"}, "HEALTH_PATH"),
    ({"SLI_RATE_WINDOW": "1 minute"}, "SLI_RATE_WINDOW"),
])
def test_bad_values_are_one_line_naming_the_knob(env, knob):
    with pytest.raises(ConfigError) as ei:
        load_settings({}, env, config={})
    assert ei.value.knob == knob
    assert "\n" not in str(ei.value)


def test_short_window_needs_the_explicit_lab_flag():
    s = load_settings({}, {"SLI_WINDOW": "30", "SLI_PROBE_INTERVAL": "3", "ALLOW_SHORT_SLI_WINDOW": "1"}, config={})
    assert s.sli.window == 30


def test_flag_errors_name_the_flag():
    with pytest.raises(ConfigError) as ei:
        load_settings({"sli_window": "x"}, {}, config={})
    assert ei.value.knob == "--sli-window"


@pytest.mark.parametrize("text,needle", [
    ("sli_window = [", "malformed TOML"),
    ("sli_windw = 300", "unknown key(s): sli_windw"),
    ('canary_node = "a;b"', "canary_node (in"),
])
def test_config_file_problems(tmp_path: Path, text, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_settings({}, {}, cfg)


def test_missing_and_non_utf8_config_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings({}, {}, tmp_path / "nope.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'canary_node = "caf\xe9"')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings({}, {}, bad)


def test_default_config_file_is_read_from_the_working_directory(tmp_path: Path, monkeypatch):
    (tmp_path / "veza-canary.toml").write_text('pool_backend = "web_pool"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings({}, {}).haproxy.backend == "web_pool"


def test_public_dict_redacts_credentials_in_urls():
    s = load_settings({}, {"PROM_URL": "https://alice:s3cret@prom.example:9090"}, config={})
    d = s.public_dict()
    assert "s3cret" not in str(d) and "alice" not in str(d)
