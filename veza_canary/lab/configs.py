"""The files the lab writes into its containers, as pure functions of ``LabConfig``.

HAProxy 2.6 and Prometheus 2.42 come from Debian; the node service and the load
generator are our own systemd units.
"""

from __future__ import annotations

import json

from veza_canary.lab.config import (
    HAPROXY_METRICS_PORT,
    HAPROXY_SOCKET,
    HEALTH_PATH,
    INSTALL_DIR,
    NODE_PORT,
    POOL_BACKEND,
    PROM_PORT,
    LabConfig,
)

#: The pinned stage's map (key -> server name) and what the lab's rules read as its key
#: (docs/traffic-shaping.md): the ``X-Canary-Pin`` header, else the ``veza_canary_pin`` cookie.
PIN_MAP = "/etc/haproxy/canary-pin.map"
PIN_HEADER = "X-Canary-Pin"
PIN_COOKIE = "veza_canary_pin"
#: Every server's configured weight: fine enough for a 1 % ramp step (HAProxy's default, 1, is not).
SERVER_WEIGHT = 100

#: Job label of the node targets: the deploy tool and the runbook query by it.
NODE_JOB = "veza-backend-api"
HAPROXY_JOB = "haproxy"


def haproxy_cfg(cfg: LabConfig, *, exporter: bool) -> str:
    """haproxy.cfg: frontend :80 -> api_pool, one server per node named like its container.

    Every server is configured at weight 100, so a ramp's ``weight N%`` is N; the pin rules send a
    request whose ``X-Canary-Pin`` header (else ``veza_canary_pin`` cookie) is a key of the pin map to
    the server the map names (the map is empty on disk; the deploy tool edits it at run time).
    """
    servers = "\n".join(f"    server {n} {cfg.ip_of(n)}:{NODE_PORT} check" for n in cfg.nodes)
    metrics = (
        f"""
frontend metrics
    bind :{HAPROXY_METRICS_PORT}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
    stats refresh 5s
"""
        if exporter
        else ""
    )
    return f"""# Written by veza-canary lab; `lab up` rewrites it.
global
    stats socket {HAPROXY_SOCKET} mode 600 level admin
    stats timeout 30s
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    retries 0

frontend api
    bind :80
    default_backend {POOL_BACKEND}
{metrics}
backend {POOL_BACKEND}
    balance roundrobin
    option httpchk GET {HEALTH_PATH}
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s rise 2 fall 2 weight {SERVER_WEIGHT}
    use-server %[req.hdr({PIN_HEADER}),map({PIN_MAP})] if {{ req.hdr({PIN_HEADER}),map({PIN_MAP}) -m found }}
    use-server %[req.cook({PIN_COOKIE}),map({PIN_MAP})] if {{ req.cook({PIN_COOKIE}),map({PIN_MAP}) -m found }}
{servers}
"""


def pin_map() -> str:
    """The pin map as shipped: no entries (``add map`` / ``del map`` edit HAProxy's copy at run time)."""
    return ("# Written by veza-canary lab. Pinned traffic: <key> <server> per line; the deploy tool edits\n"
            "# HAProxy's runtime copy over the admin socket, so this file stays empty.\n")


def prometheus_yml(cfg: LabConfig, *, exporter: bool) -> str:
    """prometheus.yml: 1 s scrapes of every node (labels job, node) and of HAProxy's exporter."""
    nodes = [{"targets": [f"{cfg.ip_of(n)}:{NODE_PORT}"], "labels": {"node": n}} for n in cfg.nodes]
    jobs = [{
        "job_name": NODE_JOB,
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": nodes,
    }]
    if exporter:
        jobs.append({
            "job_name": HAPROXY_JOB,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": [f"{cfg.ip_of(cfg.haproxy)}:{HAPROXY_METRICS_PORT}"],
                                "labels": {"node": cfg.haproxy}}],
        })
    doc = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
           "scrape_configs": jobs}
    return "# Written by veza-canary lab; `lab up` rewrites it.\n" + json.dumps(doc, indent=2) + "\n"


def prometheus_defaults() -> str:
    """/etc/default/prometheus: short retention, lifecycle API (reload over HTTP)."""
    return (
        "# Written by veza-canary lab.\n"
        f'ARGS="--web.listen-address=:{PROM_PORT} --storage.tsdb.retention.time=6h --web.enable-lifecycle"\n'
    )


def prometheus_targets(cfg: LabConfig, *, exporter: bool) -> int:
    return len(cfg.nodes) + (1 if exporter else 0)


def node_unit() -> str:
    """The backend service, as the runbook expects it (restart = systemctl restart veza-backend-api)."""
    return f"""# Written by veza-canary lab.
[Unit]
Description=veza backend-api (lab stand-in)
After=network-online.target
# A crash-looping build ends up failed (3 starts in 20 s) instead of flapping forever.
StartLimitIntervalSec=20
StartLimitBurst=3

[Service]
ExecStart={INSTALL_DIR}/veza-api
Environment=VEZA_API_LISTEN=0.0.0.0:{NODE_PORT}
Restart=on-failure
RestartSec=2
TimeoutStopSec=5

[Install]
WantedBy=multi-user.target
"""


def loadgen_unit(cfg: LabConfig) -> str:
    """The load generator: bounded in time, stops by itself; `lab up` starts it again."""
    return f"""# Written by veza-canary lab.
[Unit]
Description=veza lab load generator ({cfg.rate:g} req/s through HAProxy)
After=haproxy.service

[Service]
ExecStart=/usr/bin/python3 /usr/local/bin/veza-loadgen --url http://127.0.0.1:80 --rate {cfg.rate:g} --duration {cfg.traffic_duration:g}
Restart=no
TimeoutStopSec=5
"""
