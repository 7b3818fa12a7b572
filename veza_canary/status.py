"""The fleet right now, read-only: what ``veza-canary status`` shows.

``collect(fleet)`` reads, and never changes, HAProxy (``show stat`` and ``show servers
state``), each node (sha256 of ``veza-api`` and ``veza-api.previous`` in one command,
one health request, ``veza-api --version`` only when the health body carries no
version), the fleet lock and the blocked releases, and the SLI now. It is safe to
run during a deploy. A part that cannot be read is recorded in ``errors`` (and in
the node's row), never raised: the on-call sees everything that *could* be read,
and what could not is shown as "unknown" -- never as "lock: free" or "0 in
rotation" as if it had been read.

``table(status)`` and ``status.to_dict()`` are the two renderings (``--format``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from veza_canary.errors import PrometheusError, VezaError
from veza_canary.log import get_logger, redact_text
from veza_canary.sli import (
    Queries,
    Reading,
    Sample,
    Thresholds,
    Verdict,
    judge,
    probe,
    thresholds_from_settings,
)

if TYPE_CHECKING:
    from veza_canary.fleet import Fleet
    from veza_canary.node import HealthResult, Node
    from veza_canary.prometheus import Prometheus

log = get_logger(__name__)

SHORT = 12
UNKNOWN = "unknown"
_ANSI = {"red": 31, "yellow": 33}


@dataclass
class NodeRow:
    name: str
    configured: bool  # in CANARY_NODE/PEER_NODES (else: only a server of the HAProxy backend)
    role: str  # canary | peer | other
    status: str | None = None  # HAProxy: UP, DRAIN, MAINT, DOWN, ...
    admin: str | None = None  # ready | drain | maint
    weight: int | None = None
    sessions: int | None = None
    queued: int | None = None
    check_status: str | None = None
    sha256: str | None = None
    version: str | None = None
    version_source: str | None = None  # health | --version
    previous_exists: bool | None = None
    previous_sha256: str | None = None
    health: dict[str, Any] | None = None  # ok, http_status, latency_ms, error
    odd_one_out: bool = False  # runs a binary different from most of the fleet
    errors: list[str] = field(default_factory=list)

    @property
    def in_rotation(self) -> bool:
        return self.admin == "ready" and bool(self.status and self.status.startswith("UP"))

    def rotation(self, haproxy_known: bool) -> bool | None:
        """In rotation, out of it, or None (unknown) when HAProxy could not be read."""
        return self.in_rotation if haproxy_known else None


@dataclass
class SLIRow:
    scope: str  # a node name, or "fleet"
    verdict: str
    reason: str
    p95: float | str | None
    err_ratio: float | str | None
    req_rate: float | str | None


@dataclass
class FleetStatus:
    backend: str
    nodes: list[NodeRow]
    lock: dict[str, Any] | None
    blocked_releases: list[dict[str, Any]]
    sli: list[SLIRow]
    thresholds: dict[str, float]
    versions: dict[str, list[str]]  # sha256 -> nodes running it
    errors: list[str] = field(default_factory=list)
    #: False when that part could not be read (then it is "unknown", not empty or free).
    haproxy_known: bool = True
    lock_known: bool = True
    blocked_known: bool = True
    #: Weights off their configured value and canary pins present (traffic.Skew.to_dict()); None: unknown.
    traffic: dict[str, Any] | None = None

    @property
    def in_rotation(self) -> int | None:
        """How many servers are in rotation; None when HAProxy could not be read."""
        return sum(1 for r in self.nodes if r.in_rotation) if self.haproxy_known else None

    @property
    def mixed(self) -> bool:
        return len(self.versions) > 1

    def to_dict(self) -> dict[str, Any]:
        nodes = []
        for n in self.nodes:
            d = asdict(n)
            d["in_rotation"] = n.rotation(self.haproxy_known)
            nodes.append(d)
        return {
            "backend": self.backend,
            "in_rotation": UNKNOWN if self.in_rotation is None else self.in_rotation,
            "nodes": nodes,
            "mixed": self.mixed,
            "versions": self.versions,
            "lock_state": self.lock_state,
            "lock": self.lock if self.lock_known else UNKNOWN,
            "blocked_releases": self.blocked_releases if self.blocked_known else UNKNOWN,
            "sli": {"thresholds": self.thresholds, "probes": [asdict(r) for r in self.sli]},
            "traffic": self.traffic if self.traffic is not None else UNKNOWN,
            "errors": self.errors,
        }

    @property
    def lock_state(self) -> str:
        """held, free or unknown."""
        return UNKNOWN if not self.lock_known else "held" if self.lock else "free"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)


# --- collecting ---------------------------------------------------------------------------------


def collect(fleet: Fleet, *, sli: bool = True) -> FleetStatus:
    """Read everything ``status`` shows. Never changes anything; never raises a VezaError."""
    s = fleet.settings
    errors: list[str] = []
    states: dict = {}
    stats: dict = {}
    haproxy_known = True
    try:
        states, stats = fleet.haproxy.states(), fleet.haproxy.stats()
    except VezaError as exc:
        errors.append(f"HAProxy: {exc}")
        haproxy_known = False

    names = list(s.pool.nodes) + sorted(n for n in stats if n not in s.pool.nodes)
    rows: list[NodeRow] = []
    for name in names:
        role = "canary" if name == s.pool.canary else "peer" if name in s.pool.peers else "other"
        row = NodeRow(name=name, configured=name in s.pool.nodes, role=role)
        if name in stats:
            st = stats[name]
            row.status, row.weight, row.sessions, row.queued = st.status, st.weight, st.scur, st.qcur
            row.check_status = st.check_status or None
        elif stats:
            row.errors.append(f"not a server of HAProxy backend {s.haproxy.backend!r}")
        if name in states:
            row.admin = states[name].admin
        rows.append(row)
    skew: dict[str, Any] | None = None
    if haproxy_known:
        from veza_canary.traffic import traffic_skew

        try:
            skew = traffic_skew(fleet.haproxy, str(s.traffic.pin_map)).to_dict()
        except VezaError as exc:
            errors.append(f"HAProxy weights: {exc}")

    # The SLI probes (HTTP only) run in the background while the nodes, the lock and the blocked list are
    # read one command at a time. NOTE: not side by side: Incus 6.0 loses the output of concurrent
    # `incus exec` calls now and then (measured on the lab: 58 of 400 with 8 at once, 3 of 200 with 4 at
    # once, 0 of 200 one at a time), and a lost line must never read as "file missing".
    found: dict[str, Any] = {"lock": None, "blocked": [], "sli": [], "errors": [], "lock_known": False,
                             "blocked_known": False}

    def read_lock() -> None:
        try:
            lk = fleet.lock()
            cur = lk.current()
            if cur is not None:
                info = {**asdict(cur), "age_s": _finite(cur.age_seconds(fleet.clock.now())), "stale": lk.is_stale(cur)}
                info.pop("token", None)
                info["command"] = redact_text(info["command"])
                found["lock"] = info
            found["lock_known"] = True
        except VezaError as exc:
            found["errors"].append(f"lock: {exc}")

    def read_blocked() -> None:
        try:
            found["blocked"] = fleet.blocked().all()
            found["blocked_known"] = True
        except VezaError as exc:
            found["errors"].append(f"blocked releases: {exc}")

    def read_sli() -> None:
        # Without HAProxy nobody knows which nodes serve: probe every configured one rather than none.
        found["sli"] = sli_now(fleet, [r.name for r in rows if r.configured and (r.in_rotation or not haproxy_known)])

    def read_incus() -> None:
        for r in rows:
            if r.name in fleet.nodes:
                _read_node(fleet.nodes[r.name], r)
        read_lock()
        read_blocked()

    _parallel([read_incus, *([read_sli] if sli else [])])
    for r in rows:
        errors.extend(f"{r.name}: {e}" for e in r.errors)
    errors.extend(found["errors"])
    lock_info, blocked, sli_rows = found["lock"], found["blocked"], found["sli"]

    versions: dict[str, list[str]] = {}
    for r in rows:
        if r.sha256:
            versions.setdefault(r.sha256, []).append(r.name)
    if len(versions) > 1:
        majority = Counter({sha: len(ns) for sha, ns in versions.items()}).most_common(1)[0][0]
        tied = sum(1 for ns in versions.values() if len(ns) == len(versions[majority])) > 1
        for r in rows:
            r.odd_one_out = bool(r.sha256) and (tied or r.sha256 != majority)

    t = thresholds_from_settings(s)
    errors.extend(f"SLI {r.scope}: {r.reason}" for r in sli_rows if r.verdict == Verdict.ERROR)
    return FleetStatus(backend=s.haproxy.backend, nodes=rows, lock=lock_info, blocked_releases=blocked, sli=sli_rows,
                       thresholds={"p95_s": t.p95_s, "err_ratio": t.err_ratio, "min_requests": t.min_requests},
                       versions=versions, errors=errors, haproxy_known=haproxy_known,
                       lock_known=found["lock_known"], blocked_known=found["blocked_known"], traffic=skew)


def _read_node(node: Node, row: NodeRow) -> None:
    try:
        row.sha256, prev = read_shas(node)
        row.previous_exists, row.previous_sha256 = prev is not None, prev
    except VezaError as exc:
        row.errors.append(f"binary: {exc}")
        return  # the container is unreachable: the health request would only fail the same way
    h = node.health()
    row.health = health_dict(h)
    version = version_from_body(h.body) if h.status is not None else None
    if version:
        row.version, row.version_source = version, "health"
        return
    try:
        r = node.transport.run((node.binary_path, "--version"), timeout=10, check=False)
        line = (r.stdout.strip().splitlines() or [""])[0].strip()[:64]
        if r.exit_code == 0 and line:
            row.version, row.version_source = line, "--version"
    except VezaError as exc:
        row.errors.append(f"--version: {exc}")


def read_shas(node: Node) -> tuple[str | None, str | None]:
    """sha256 of ``veza-api`` and ``veza-api.previous`` in one command; None for a missing file."""
    shas = node.sha256s(node.binary_path, node.previous_path)
    return shas[node.binary_path], shas[node.previous_path]


def version_from_body(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    v = data.get("version") if isinstance(data, dict) else None
    return str(v)[:64] if isinstance(v, str | int | float) and str(v) else None


def health_dict(h: HealthResult) -> dict[str, Any]:
    return {"ok": h.ok, "http_status": h.status, "latency_ms": round(h.latency * 1000, 1), "error": h.error}


def sli_now(fleet: Fleet, serving: list[str]) -> list[SLIRow]:
    """One probe per serving node when SLI_SELECTOR is per node, else one for the whole fleet."""
    s = fleet.settings
    t = thresholds_from_settings(s)
    scopes: list[str | None] = list(serving) if "{node}" in s.sli.selector else [None]
    rows: list[SLIRow | None] = [None] * len(scopes)

    def one(i: int, scope: str | None) -> None:
        smp = probe(fleet.prom, Queries.from_settings(s, scope or s.pool.canary), t)
        rows[i] = SLIRow(scope=scope or "fleet", verdict=str(smp.verdict), reason=smp.reason,
                         p95=_finite(smp.p95), err_ratio=_finite(smp.err_ratio), req_rate=_finite(smp.req_rate))

    _parallel([lambda i=i, sc=sc: one(i, sc) for i, sc in enumerate(scopes)])
    return [r for r in rows if r is not None]


def _parallel(calls: list, workers: int = 8) -> None:
    """Run independent read-only calls side by side; the first exception (a bug) propagates.

    For HTTP (httpx clients are thread-safe) and for one Incus reader at a time (see ``collect``).
    """
    if len(calls) <= 1:
        for c in calls:
            c()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        for f in [pool.submit(c) for c in calls]:
            f.result()


def _finite(v: float | None) -> float | str | None:
    if v is None:
        return None
    return round(v, 6) if math.isfinite(v) else str(v)


# --- rendering ---------------------------------------------------------------------------------


def table(st: FleetStatus, *, color: bool = False) -> list[str]:
    """The human rendering: one row per node, then versions, lock, blocked releases, SLI."""

    def style(text: str, *, fg: str, bold: bool = False) -> str:
        if not color:
            return text
        return f"\x1b[{'1;' if bold else ''}{_ANSI[fg]}m{text}\x1b[0m"

    head = ("NODE", "ROLE", "HAPROXY", "ADMIN", "WEIGHT", "SESS", "CHECK", "SHA256", "VERSION", "PREVIOUS",
            "HEALTH")
    body = []
    for r in st.nodes:
        health = "-"
        if r.health:
            health = (f"{r.health['http_status']} {r.health['latency_ms']:.0f}ms" if r.health["http_status"]
                      else "no answer")
        prev = "-" if r.previous_exists is None else (r.previous_sha256 or "")[:SHORT] if r.previous_exists \
            else "MISSING"
        body.append((r.name, r.role, r.status or "?", r.admin or "?", _s(r.weight), _s(r.sessions),
                     r.check_status or "-", (r.sha256 or "?")[:SHORT] + (" !" if r.odd_one_out else ""),
                     r.version or "?", prev, health))
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    if st.haproxy_known:
        lines = [f"backend {st.backend}: {len(st.nodes)} server(s), {st.in_rotation} in rotation"]
    else:
        lines = [style(f"backend {st.backend}: {len(st.nodes)} node(s), in rotation: {UNKNOWN} "
                       "(HAProxy could not be read)", fg="red", bold=True)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for r, cells in zip(st.nodes, body, strict=True):
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        bad = not st.haproxy_known or not r.in_rotation or (r.health is not None and not r.health["ok"]) or bool(r.errors)
        lines.append(style(line, fg="red", bold=True) if bad else style(line, fg="yellow") if r.odd_one_out
                     else line)
    if st.traffic and not st.traffic.get("clean", True):
        from veza_canary.traffic import Skew

        lines.append(style("TRAFFIC NOT AS CONFIGURED: " + "; ".join(Skew.from_dict(st.traffic).lines())
                           + "  (restore: veza-canary haproxy weight --restore)", fg="yellow", bold=True))
    if st.mixed:
        parts = []
        for sha, ns in sorted(st.versions.items(), key=lambda kv: -len(kv[1])):
            ver = next((r.version for r in st.nodes if r.sha256 == sha and r.version), "?")
            parts.append(f"{sha[:SHORT]} ({ver}) on {', '.join(ns)}")
        lines.append(style("MIXED VERSIONS: " + "; ".join(parts), fg="yellow", bold=True))
    elif st.versions:
        sha = next(iter(st.versions))
        lines.append(f"versions: every node runs {sha[:SHORT]}")
    if st.lock:
        lk = st.lock
        stale = " STALE" if lk.get("stale") else ""
        age = lk.get("age_s")
        age_s = f"{age:.0f}s" if isinstance(age, int | float) else "?"
        lines.append(style(f"lock: HELD{stale} by {lk['holder']}@{lk['host']} pid {lk['pid']} since "
                           f"{lk['started_at']} ({age_s} ago), artifact {str(lk['artifact_sha256'])[:SHORT]}: "
                           f"{lk['command']}", fg="yellow", bold=True))
    elif st.lock_known:
        lines.append("lock: free")
    else:
        lines.append(style(f"lock: {UNKNOWN} (could not be read)", fg="red", bold=True))
    if not st.blocked_known:
        lines.append(style(f"blocked releases: {UNKNOWN} (could not be read)", fg="red"))
    elif st.blocked_releases:
        lines.append("blocked releases:")
        for b in st.blocked_releases:
            lines.append(f"  {str(b.get('sha256', '?'))[:SHORT]}  {b.get('at', '?')}  {b.get('reason', '')}")
    else:
        lines.append("blocked releases: none")
    t = st.thresholds
    lines.append(f"SLI now (p95 < {t['p95_s']:g}s, 5xx ratio < {t['err_ratio']:g}):")
    if not st.sli:
        lines.append("  (no node in rotation to probe)" if st.haproxy_known else "  (nothing probed)")
    for r in st.sli:
        vals = f"p95 {_f(r.p95, '{:.3f}s')}  5xx {_f(r.err_ratio, '{:.4f}')}  {_f(r.req_rate, '{:.1f}')} req/s"
        verdict = r.verdict if r.verdict == "pass" else style(r.verdict.upper(), fg="red", bold=True)
        lines.append(f"  {r.scope:<16} {verdict:<7}  {vals}" + ("" if r.verdict == "pass" else f"  ({r.reason})"))
    for e in st.errors:
        lines.append(style(f"could not read: {e}", fg="red"))
    return lines


def _s(v: object) -> str:
    return "-" if v is None else str(v)


def _f(v: object, f: str) -> str:
    return f.format(v) if isinstance(v, int | float) else "-" if v is None else str(v)


# --- the SLI, one query at a time ------------------------------------------------------------------


def check_detailed(prom: Prometheus, queries: Queries, t: Thresholds) -> tuple[dict[str, Any], Sample]:
    """One probe, keeping what each query returned (``sli check`` prints it). Logs one ``sli.probe`` line."""
    readings: dict[str, Reading] = {}
    for name, expr in (("p95", queries.p95), ("errors", queries.errors), ("total", queries.total)):
        try:
            readings[name] = Reading.of(*(s.value for s in prom.query(expr)))
        except PrometheusError as exc:
            readings[name] = Reading.failed(str(exc))
    smp = judge(readings["p95"], readings["errors"], readings["total"], t)
    log.info("sli.probe", verdict=str(smp.verdict), reason=smp.reason, p95=smp.p95, p95_threshold=t.p95_s,
             err_ratio=smp.err_ratio, err_threshold=t.err_ratio, req_rate=smp.req_rate,
             queries={"p95": queries.p95, "errors": queries.errors, "total": queries.total}, at=0.0)

    def shown(r: Reading, unit: str) -> str:
        if r.error is not None:
            return f"error: {r.error}"
        if not r.values:
            return "empty vector"
        return ", ".join(f"{v:.4g}{unit}" if math.isfinite(v) else str(v) for v in r.values)

    total = readings["total"]
    total_shown = shown(total, " req/s")
    if total.error is None and len(total.values) == 1 and math.isfinite(total.values[0]):
        total_shown += (f"  (= {total.values[0] * t.rate_window_s:.0f} requests in the rate window; "
                        f"fewer than {t.min_requests:g} is no-data)")
    out = {
        "queries": {
            "p95": {"query": queries.p95, "values": _vals(readings["p95"]), "error": readings["p95"].error,
                    "shown": shown(readings["p95"], " s"), "threshold": f"< {t.p95_s:g} s"},
            "errors": {"query": queries.errors, "values": _vals(readings["errors"]),
                       "error": readings["errors"].error, "shown": shown(readings["errors"], " req/s")},
            "total": {"query": queries.total, "values": _vals(total), "error": total.error, "shown": total_shown},
        },
        "p95": _finite(smp.p95), "p95_threshold": t.p95_s,
        "err_ratio": _finite(smp.err_ratio), "err_threshold": t.err_ratio, "req_rate": _finite(smp.req_rate),
    }
    return out, smp


def _vals(r: Reading) -> list[float | str | None]:
    return [_finite(v) for v in r.values]


def watch_probe(fleet: Fleet, node: str, queries: Queries, t: Thresholds, at: float) -> Sample:
    """A probe for ``sli watch``: a node HAProxy reports DOWN is red now (as in the deploy's watch)."""
    try:
        stat = fleet.haproxy.stat(node)
    except VezaError as exc:
        log.warning("sli.haproxy_unreadable", error=str(exc))
    else:
        if stat.is_down:
            smp = Sample(Verdict.FAIL, f"{node} is {stat.status} in HAProxy ({stat.check_status or 'no check'})",
                         at=round(at, 3))
            log.info("sli.probe", verdict=str(smp.verdict), reason=smp.reason, at=smp.at)
            return smp
    return probe(fleet.prom, queries, t, at=at)
