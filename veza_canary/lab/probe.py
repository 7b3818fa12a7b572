"""Read-only looks at the running lab: HAProxy's runtime API and Prometheus's HTTP API.

HAProxy: one command per connection through ``socat`` inside the haproxy container;
replies are parsed, never judged by exit code. Prometheus: ``httpx`` from the host to
the prom container's address.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import httpx

from veza_canary.errors import HAProxyError, PrometheusError
from veza_canary.lab.config import HAPROXY_SOCKET, POOL_BACKEND, PROM_PORT, LabConfig
from veza_canary.lab.fleet import ct


def haproxy_command(cfg: LabConfig, command: str, *, timeout: float = 10.0, container: str | None = None) -> str:
    """Send one runtime-API command to HAProxy (``container``: another of ``cfg.haproxies``); return the reply."""
    r = ct(container or cfg.haproxy).run(("socat", "-t", "2", "stdio", f"UNIX-CONNECT:{HAPROXY_SOCKET}"),
                            input=command.rstrip("\n") + "\n", check=False, timeout=timeout)
    if not r.ok:
        raise HAProxyError(f"HAProxy admin socket: {r.describe()}")
    return r.stdout


@dataclass(frozen=True, slots=True)
class ServerStat:
    name: str
    status: str
    check_status: str
    scur: int
    weight: int

    @property
    def up(self) -> bool:
        return self.status.startswith("UP")


def parse_show_stat(text: str, backend: str = POOL_BACKEND) -> list[ServerStat]:
    """Servers of ``backend`` from ``show stat`` CSV (parsed by column name)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# pxname"):
        raise HAProxyError(f"unexpected `show stat` reply: {text.strip()[:200]!r}")
    rows = csv.DictReader(io.StringIO(lines[0][2:] + "\n" + "\n".join(lines[1:])))
    out = []
    for row in rows:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        out.append(ServerStat(name=row["svname"], status=row.get("status", ""),
                              check_status=row.get("check_status", ""),
                              scur=int(row.get("scur") or 0), weight=int(row.get("weight") or 0)))
    return out


def server_stats(cfg: LabConfig, container: str | None = None) -> list[ServerStat]:
    return parse_show_stat(haproxy_command(cfg, f"show stat {POOL_BACKEND} 4 -1", container=container))


def set_servers_ready(cfg: LabConfig, container: str | None = None) -> None:
    """Put every node back to ready with its full weight (a failed test may have left one drained)."""
    cmds = ";".join(f"set server {POOL_BACKEND}/{n} state ready;set server {POOL_BACKEND}/{n} weight 100"
                    for n in cfg.nodes)
    reply = haproxy_command(cfg, cmds, container=container)
    if reply.strip():
        raise HAProxyError(f"HAProxy refused to set servers ready: {reply.strip()[:300]}")


# --- Prometheus ----------------------------------------------------------------------------------------

def prom_url(cfg: LabConfig) -> str:
    return f"http://{cfg.ip_of(cfg.prom)}:{PROM_PORT}"


def prom_query(cfg: LabConfig, query: str, *, timeout: float = 5.0) -> list[dict]:
    """Run an instant query; return the result vector (possibly empty)."""
    try:
        r = httpx.get(f"{prom_url(cfg)}/api/v1/query", params={"query": query}, timeout=timeout)
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusError(f"Prometheus query failed: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus answered {r.status_code}: {body.get('error', body)}")
    return body["data"]["result"]


def prom_scalar(cfg: LabConfig, query: str) -> float | None:
    """The first sample's value as a float; None for an empty vector or NaN."""
    result = prom_query(cfg, query)
    if not result:
        return None
    v = float(result[0]["value"][1])
    return None if math.isnan(v) else v


@dataclass(frozen=True, slots=True)
class Target:
    job: str
    node: str
    url: str
    health: str
    last_error: str


def prom_targets(cfg: LabConfig) -> list[Target]:
    try:
        r = httpx.get(f"{prom_url(cfg)}/api/v1/targets", params={"state": "active"}, timeout=5)
        data = r.json()["data"]["activeTargets"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise PrometheusError(f"Prometheus targets: {exc}") from exc
    return [Target(job=t["labels"].get("job", ""), node=t["labels"].get("node", ""), url=t.get("scrapeUrl", ""),
                   health=t.get("health", ""), last_error=t.get("lastError", "")) for t in data]


def targets_up(cfg: LabConfig, *, fresh_within: float = 5.0) -> int:
    """Targets whose latest ``up`` sample is 1 and recent.

    After a hard kill Prometheus still returns pre-kill samples for up to 5 min (no staleness
    markers were written), so a bare ``count(up == 1)`` can count dead targets.
    """
    v = prom_scalar(cfg, f"count(time() - timestamp(up == 1) < {fresh_within:g})")
    return int(v) if v is not None else 0
