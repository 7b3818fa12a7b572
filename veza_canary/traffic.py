"""Blast radius: the canary's weighted ramp and its pinned stage, over HAProxy's runtime API.

Two ways to give an unproven binary less than its full share of production:

* **weighted ramp** -- ``set_weight(haproxy, canary, 5)`` sends ``set server B/S weight 5%``; the
  steps come from ``CANARY_STEPS`` (``s.traffic.steps``), the last one (100) restores the
  configured weight. ``check_ramp`` refuses a ramp where HAProxy cannot do one, before any change.
* **pinned stage** -- ``PinMap`` edits an HAProxy map file (key -> server name) that a
  ``use-server`` rule in the HAProxy config reads, so only requests carrying a chosen header or
  cookie value reach the canary (docs/traffic-shaping.md has the config snippet).

Safety invariant support: ``traffic_skew`` lists every server whose weight differs from its
configured one and every pin present (for ``status``); ``restore_all`` puts all of it back (for
``veza-canary haproxy weight --restore`` and the reconcile at the start of the next deploy).

Several HAProxy (``lbs.HAProxySet``, issue 18 §2): every function here takes one HAProxy or the set.
Writes go to every HAProxy (the set's broadcast). Reads that describe the fleet are taken from *each*
HAProxy with ``haproxy.each(op)`` and combined here: a server's weight is skewed when it is off on any
HAProxy (``weights``: ``lbs.DISAGREE`` when they differ; ``weights_each`` and ``traffic_skew`` name the
HAProxy), a step's weight is checked and re-applied per HAProxy with a ``RuntimeMarker`` each (a reload
of any of them is seen), pins are the union (``Skew`` names a pin some HAProxy lack), and a static
algorithm on any HAProxy refuses the ramp.

HAProxy 2.6 facts this relies on (measured on 2.6.12, the lab's and Debian 12's version):

* ``set server B/S weight N%`` sets ``initial * N / 100`` with integer arithmetic (so a server
  configured with HAProxy's default ``weight 1`` drops to 0 at any step below 100 %: refused here);
  absolute weights are 0-256; success is an empty reply.
* ``get weight B/S`` answers ``"<current> (initial <initial>)"``; ``show servers state B`` has the
  same two numbers for every server in one read (columns ``srv_uweight``, ``srv_iweight``).
* A static algorithm accepts only a weight of 0 or the initial one, anything else is refused with
  ``Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.`` and nothing
  changes. ``show stat`` has the backend's ``algo`` column (``roundrobin``, ``static-rr``,
  ``leastconn``, ``first``, ``source``, ``uri``, ``url_param``, ``hdr``, ``rdp-cookie``, ``hash``;
  ``balance random`` reads ``unknown``), but not the ``hash-type``: a hash algorithm is static
  with ``hash-type map-based`` (the default) and dynamic with ``hash-type consistent``. For those
  ``check_ramp`` asks HAProxy itself with ``probe_dynamic`` (one command line that sets the weight
  one off and straight back; on a static backend the first half is refused and nothing changes).
* A reload or restart without a server-state file forgets runtime weights (and admin states and
  runtime map entries): the worker's ``Pid`` in ``show info`` changes and every server is back at
  its configured weight. ``check_weight`` tells that apart from a weight changed by someone else.
* ``use-server %[<sample>,map(<file>)] if { <sample>,map(<file>) -m found }`` is accepted by 2.6
  (a dynamic server name); a name that is no server of the backend falls through to the balancer.
  A pinned request reaches a server that is at weight 0 or DRAIN, never one in MAINT or DOWN (it
  then falls through to the balancer, i.e. the old binary). ``show map`` lists each loaded map
  with ``used by map at file '<cfg>' line <n>`` when the config reads it.
* Map edits: ``add map FILE KEY VALUE`` and ``clear map FILE`` answer empty; ``del map FILE KEY``
  answers ``Key not found.`` for a missing key; an unknown file is ``Unknown map identifier.``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from veza_canary.errors import HAProxyError, PreflightError, PrometheusError
from veza_canary.lbs import DISAGREE
from veza_canary.log import get_logger

if TYPE_CHECKING:
    from veza_canary.haproxy import HAProxy
    from veza_canary.prometheus import Prometheus
    from veza_canary.settings import Settings

log = get_logger(__name__)

MAX_WEIGHT = 256

#: ``show stat``'s algo column for algorithms whose weights can change at run time.
DYNAMIC_ALGOS = frozenset({"roundrobin", "leastconn", "first"})
#: ... for algorithms that never can.
STATIC_ALGOS = frozenset({"static-rr"})
#: ... for algorithms that depend on ``hash-type`` (map-based: static; consistent: dynamic), and
#: ``unknown`` (``balance random`` on 2.6, which is dynamic, or anything newer): HAProxy is asked.
AMBIGUOUS_ALGOS = frozenset({"source", "uri", "url_param", "hdr", "rdp-cookie", "hash", "unknown"})

STATIC_REFUSAL = "static LB algorithm"

_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_KEY_RE = re.compile(r"[A-Za-z0-9_.:@+=/-]{1,100}")
_PATH_RE = re.compile(r"/[A-Za-z0-9_.@+=/-]{1,250}")


# --- the runtime API: commands haproxy.py has no method for ---------------------------------------------------


def _check_empty(reply: str, line: str) -> None:
    if reply.strip():
        raise HAProxyError(f"HAProxy refused {line!r}: {_first_line(reply)}")


def _first_line(reply: str) -> str:
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
    return lines[0][:200] if lines else "(empty reply)"


def _name(v: str, what: str) -> str:
    if not _NAME_RE.fullmatch(v):
        raise HAProxyError(f"refusing HAProxy {what} name {v!r}")
    return v


def _lb(haproxy_name: str) -> str:
    """``HAProxy NAME`` for one HAProxy of several; ``HAProxy`` with a single one (its name is "")."""
    return f"HAProxy {haproxy_name}" if haproxy_name else "HAProxy"


def _on(haproxy_name: str) -> str:
    """`` on HAProxy NAME`` for one HAProxy of several; nothing with a single one."""
    return f" on {_lb(haproxy_name)}" if haproxy_name else ""


# --- weights ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Weight:
    """A server's runtime weight and its configured (initial) one."""

    server: str
    current: int
    initial: int
    #: The HAProxy this was read on when there are several ("": the only one, or every one agrees).
    haproxy: str = ""

    @property
    def skewed(self) -> bool:
        """The runtime weight differs from the configured one (a ramp in progress, or one left behind)."""
        return self.current != self.initial

    @property
    def percent(self) -> float | None:
        """The current weight in percent of the configured one (None for a server configured at 0)."""
        return 100.0 * self.current / self.initial if self.initial else None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"server": self.server, "current": self.current, "initial": self.initial}
        if self.haproxy:
            out["haproxy"] = self.haproxy
        return out


def parse_weights(reply: str, backend: str) -> dict[str, Weight]:
    """Every server's (current, initial) weight from a ``show servers state BACKEND`` reply."""
    lines = [ln for ln in reply.splitlines() if ln.strip()]
    head = lines[1] if len(lines) > 1 else ""
    if not head.startswith("# "):
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    cols = head[2:].split()
    try:
        ix = {n: cols.index(n) for n in ("be_name", "srv_name", "srv_uweight", "srv_iweight")}
    except ValueError as exc:
        raise HAProxyError(f"HAProxy: show servers state has no weight columns ({exc})") from None
    out = {}
    for line in lines[2:]:
        f = line.split()
        if len(f) <= max(ix.values()) or f[ix["be_name"]] != backend:
            continue
        try:
            out[f[ix["srv_name"]]] = Weight(f[ix["srv_name"]], int(f[ix["srv_uweight"]]), int(f[ix["srv_iweight"]]))
        except ValueError:
            raise HAProxyError(f"HAProxy: a non-numeric weight in {line[:120]!r}") from None
    return out


def weights_each(haproxy: HAProxy) -> dict[str, dict[str, Weight]]:
    """Each HAProxy's weight table, one read of each: HAProxy name -> server -> Weight (naming its HAProxy)."""
    tables = haproxy.each(lambda h: parse_weights(h.command(f"show servers state {h.backend}"), h.backend))
    return {name: {srv: replace(w, haproxy=name) for srv, w in table.items()} for name, table in tables.items()}


def combine_weights(tables: Mapping[str, Mapping[str, Weight]]) -> dict[str, Weight]:
    """One weight per server over every HAProxy: theirs when they all agree, else current ``DISAGREE`` (skewed).

    A server some HAProxy does not know is left out (as ``HAProxySet.states`` does).
    """
    first, *others = tables.values()
    out = {}
    for server, w in first.items():
        seen = [w, *(t[server] for t in others if server in t)]
        if len(seen) != len(tables):
            continue
        if len({(x.current, x.initial) for x in seen}) == 1:
            out[server] = replace(w, haproxy="")
        else:
            log.warning("traffic.weights_disagree", server=server, weights=[x.to_dict() for x in seen],
                        msg="the HAProxy disagree on this weight (a reload of one, or a change by hand)")
            out[server] = Weight(server, DISAGREE, w.initial)
    return out


def weights(haproxy: HAProxy) -> dict[str, Weight]:
    """Every server of the backend, current and configured weight, one read of each HAProxy (see combine_weights)."""
    return combine_weights(weights_each(haproxy))


def read_weight(haproxy: HAProxy, server: str) -> Weight:
    """One server's weight (``get weight B/S``); ``DISAGREE`` when several HAProxy differ (``HAProxySet``)."""
    current, initial = haproxy.get_weight(server)
    return Weight(server, current, initial)


def step_weight(initial: int, percent: int) -> int:
    """The weight HAProxy sets for ``weight <percent>%``: ``initial * percent / 100`` in integers."""
    return initial * percent // 100


def set_weight(haproxy: HAProxy, server: str, percent: int) -> Weight:
    """Set the server's weight to ``percent`` % of its configured weight; read it back and check it.

    Raises HAProxyError when HAProxy refuses (a static algorithm, an unknown server) or the weight
    read back is not the one asked for.
    """
    _name(server, "server")
    if not 0 <= percent <= 100:
        raise ValueError("percent must be 0..100")
    line = f"set server {haproxy.backend}/{server} weight {percent}%"
    _check_empty(haproxy.command(line), line)
    w = read_weight(haproxy, server)
    want = step_weight(w.initial, percent)
    if w.current != want:
        raise HAProxyError(f"HAProxy: {server} is at weight {w.current} after {line!r}, expected {want}")
    log.info("traffic.set_weight", server=server, percent=percent, weight=w.current, initial=w.initial)
    return w


def restore_weight(haproxy: HAProxy, server: str) -> Weight:
    """Put the server back at its configured weight (``weight 100%``)."""
    return set_weight(haproxy, server, 100)


def rotation_weights(haproxy: HAProxy) -> dict[str, int]:
    """The current weight of every server in rotation (ready and running; drained, in maintenance or down left out).

    A weight the HAProxy disagree on counts as its configured one: the deploy's reconcile puts it back first.
    """
    states = haproxy.states()
    return {name: w.initial if w.current == DISAGREE else w.current for name, w in weights(haproxy).items()
            if name in states and states[name].admin == "ready" and states[name].op_state == 2}


def expected_share(current: Mapping[str, int], server: str) -> float | None:
    """The share of new requests a weighted balancer sends to ``server``: its weight over the sum.

    ``current`` maps every server *in rotation* to its effective weight (leave out servers that are
    down, drained or in maintenance). None when no server has weight.
    """
    total = sum(current.values())
    return current.get(server, 0) / total if total > 0 else None


# --- the algorithm -----------------------------------------------------------------------------------------


def parse_backend_algo(reply: str, backend: str) -> str:
    """The ``algo`` column of the backend's own row in a ``show stat`` reply."""
    text = reply.strip("\n")
    if not text.startswith("# "):
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    rows = list(csv.reader(io.StringIO(text[2:])))
    header = rows[0]
    if "algo" not in header:
        raise HAProxyError("HAProxy: show stat has no algo column (HAProxy older than 1.9?)")
    px, sv, algo = header.index("pxname"), header.index("svname"), header.index("algo")
    for row in rows[1:]:
        if len(row) > algo and row[px] == backend and row[sv] == "BACKEND":
            return row[algo]
    raise HAProxyError(f"HAProxy: no backend {backend!r} in show stat")


def backend_algo(haproxy: HAProxy) -> str:
    """One HAProxy's load-balancing algorithm for the backend, as ``show stat`` names it (several: ``each``)."""
    return parse_backend_algo(haproxy.command(f"show stat {haproxy.backend} 2 -1"), haproxy.backend)


def probe_dynamic(haproxy: HAProxy, server: str) -> bool:
    """Ask one HAProxy whether the backend takes weights other than 0 % and 100 % (several: ``each``).

    One command line, ``set server B/S weight P; set server B/S weight C`` (C the current weight, P one
    off it and not the initial one): a static backend refuses the first command and changes nothing;
    a dynamic one runs both within the same call, so the weight is P for microseconds.
    """
    w = read_weight(haproxy, server)
    probe = next(p for p in (w.current + 1, w.current - 1, w.current + 2)
                 if 0 < p <= MAX_WEIGHT and p != w.initial)
    be = f"{haproxy.backend}/{_name(server, 'server')}"
    reply = haproxy.command(f"set server {be} weight {probe}; set server {be} weight {w.current}")
    after = read_weight(haproxy, server)
    if after.current != w.current:  # never leave the probe behind
        haproxy.set_weight(server, w.current)
    if STATIC_REFUSAL in reply:
        return False
    if reply.strip():
        raise HAProxyError(f"HAProxy refused the weight probe on {server}: {_first_line(reply)}")
    return True


@dataclass(frozen=True, slots=True)
class RampPlan:
    """What ``check_ramp`` found: the weight and the expected share of requests at each step."""

    server: str
    algo: str
    initial: int
    steps: tuple[int, ...]
    weights: tuple[int, ...]
    #: Expected share of requests at each step, with every other server at its current weight.
    shares: tuple[float | None, ...]
    probed: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"server": self.server, "algo": self.algo, "initial": self.initial, "steps": list(self.steps),
                "weights": list(self.weights), "expected_shares": list(self.shares), "probed": self.probed}


def check_ramp(haproxy: HAProxy, server: str, steps: Iterable[int], *, probe: bool = True) -> RampPlan:
    """Refuse, before any change, a ramp HAProxy would not do; else return the plan.

    PreflightError when the backend's algorithm is static on any HAProxy (``static-rr``, or a hash with
    the default ``hash-type map-based``), when the server's configured weight is too coarse for a step
    (a step that would come out as weight 0), or when the server is unknown. A ramp of the single step
    100 is today's behaviour and needs nothing. ``probe=False`` skips asking HAProxy when the ``algo``
    column cannot tell (a hash algorithm): such a backend is then refused.
    """
    steps = tuple(steps)
    ws = weights(haproxy)
    if server not in ws:
        raise PreflightError(f"HAProxy has no server {server!r} in backend {haproxy.backend!r}")
    w = ws[server]
    algos = haproxy.each(backend_algo)
    plan_weights = tuple(step_weight(w.initial, p) for p in steps)
    others = {s: x for s, x in rotation_weights(haproxy).items() if s != server}
    shares = tuple(expected_share({**others, server: x}, server) for x in plan_weights)
    plan = RampPlan(server, _agreed(algos), w.initial, steps, plan_weights, shares)
    if steps == (100,):
        return plan
    hint = "use CANARY_STEPS=100 (no ramp) or a dynamic algorithm (docs/traffic-shaping.md)"
    be = haproxy.backend
    for name, algo in algos.items():
        if algo in STATIC_ALGOS:
            raise PreflightError(f"backend {be} balances with {algo}{_on(name)}, a static algorithm: HAProxy takes "
                                 "only 0 % or 100 % there, so the canary cannot be ramped", hint=hint)
    unsure = {name: algo for name, algo in algos.items() if algo not in DYNAMIC_ALGOS}
    if unsure:
        name, algo = next(iter(unsure.items()))
        if not probe:
            raise PreflightError(f"backend {be} balances with {algo}{_on(name)}: a ramp needs hash-type "
                                 "consistent, which the runtime API does not show", hint=hint)
        dynamic = haproxy.each(lambda h: probe_dynamic(h, server))
        static = [n for n, ok in dynamic.items() if not ok]
        if static:
            raise PreflightError(f"backend {be} balances with {algos[static[0]]}{_on(static[0])} and a static "
                                 "hash-type (map-based): HAProxy takes only 0 % or 100 %, so the canary cannot be "
                                 "ramped", hint="add 'hash-type consistent' to the backend, or " + hint)
        plan = replace(plan, probed=True)
    zero = [p for p, x in zip(steps, plan_weights, strict=True) if x == 0]
    if zero:
        raise PreflightError(
            f"{server} is configured at weight {w.initial}: the {zero[0]} % step would be weight 0 "
            "(HAProxy rounds down), i.e. no traffic at all",
            hint="configure the pool's servers with 'weight 100' (default-server weight 100), or use larger steps")
    log.info("traffic.ramp_plan", **plan.to_dict())
    return plan


def _agreed(values: Mapping[str, str]) -> str:
    """The value every HAProxy has, else each one's (``haproxy: roundrobin, haproxy-2: static-rr``)."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{n}: {v}" for n, v in values.items())


# --- a reload or restart loses runtime weights --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeMarker:
    """Which HAProxy process answers: a reload or a restart starts a new one (and forgets runtime state)."""

    pid: int
    start_time: int

    def to_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time}


def parse_info(reply: str) -> RuntimeMarker:
    """``Pid`` and ``Start_time_sec`` (``Uptime_sec`` on replies without it) from ``show info``."""
    fields = dict(ln.split(": ", 1) for ln in reply.splitlines() if ": " in ln)
    try:
        pid = int(fields["Pid"])
    except (KeyError, ValueError):
        raise HAProxyError(f"HAProxy: show info without a Pid: {_first_line(reply)}") from None
    try:
        start = int(fields.get("Start_time_sec", "0"))
    except ValueError:
        start = 0
    return RuntimeMarker(pid, start)


def runtime_marker(haproxy: HAProxy) -> dict[str, RuntimeMarker]:
    """The answering process of each HAProxy (name -> marker; ``{"": marker}`` with one HAProxy).

    Keep it when a weight is set and pass it to ``check_weight``: a reload of any HAProxy changes its entry.
    """
    return haproxy.each(lambda h: parse_info(h.command("show info")))


@dataclass(frozen=True, slots=True)
class WeightCheck:
    """Is the server still at the weight the ramp set?"""

    server: str
    percent: int
    expected: int
    weight: Weight  # as read on one HAProxy (``weight.haproxy`` names it when there are several)
    reloaded: bool  # another HAProxy process answers than when the weight was set
    reason: str  # "" when ok

    @property
    def ok(self) -> bool:
        return not self.reason

    @property
    def lost(self) -> bool:
        """The runtime weight is gone (a reload/restart put the configured weight back)."""
        return not self.ok and (self.reloaded or self.weight.current == self.weight.initial)

    def to_dict(self) -> dict[str, object]:
        return {"server": self.server, "percent": self.percent, "expected": self.expected,
                "weight": self.weight.to_dict(), "reloaded": self.reloaded, "ok": self.ok, "lost": self.lost,
                "reason": self.reason}


def judge_weight(w: Weight, percent: int, *, reloaded: bool = False) -> WeightCheck:
    """Pure: compare a weight read (on one HAProxy, ``w.haproxy``) with the step's. See ``check_weight``."""
    want = step_weight(w.initial, percent)
    on, lb = _on(w.haproxy), _lb(w.haproxy)
    reason = ""
    if w.current != want:
        if w.current == w.initial or reloaded:
            reason = (f"{w.server} is back at weight {w.current}{on} instead of the step's {want} ({percent} %): "
                      f"{lb} reloaded or restarted and forgot the runtime weight (no server-state file)")
        else:
            reason = (f"{w.server} is at weight {w.current}{on}, not the step's {want} ({percent} %): "
                      "someone else changed it")
    elif reloaded:
        reason = (f"{lb} reloaded or restarted during the step ({w.server} is at weight {w.current}, as set): "
                  "its other runtime state (drain, pins) may be gone")
    return WeightCheck(w.server, percent, want, w, reloaded, reason)


def _severity(c: WeightCheck) -> int:
    """Which check speaks for the fleet: someone else's weight, then a lost one, then a reload, then ok."""
    if c.ok:
        return 3
    if not c.lost:
        return 0
    return 1 if c.weight.current != c.expected else 2


def check_weight(haproxy: HAProxy, server: str, percent: int, *,
                 since: Mapping[str, RuntimeMarker] | None = None) -> WeightCheck:
    """Whether ``server`` still has the step's weight on every HAProxy; ``since`` is the marker taken when it was set.

    Each HAProxy is judged on its own weight and its own process; the check returned is the one that
    matters most (``_severity``), naming its HAProxy. A lost weight (``.lost``) is re-applied with
    ``set_weight`` or answered with a rollback by the caller; at 100 % a reload changes nothing for the
    weight, but ``.reloaded`` still says so.
    """
    read = haproxy.each(lambda h: h.get_weight(server))
    now = runtime_marker(haproxy) if since is not None else {}
    checks = [judge_weight(Weight(server, cur, ini, name), percent,
                           reloaded=since is not None and now[name] != since.get(name))
              for name, (cur, ini) in read.items()]
    result = min(checks, key=_severity)
    if not result.ok:
        log.warning("traffic.weight_check", **result.to_dict())
    return result


class StepGuard:
    """One ramp step held: the weight set, the HAProxy processes it was set on, and re-applies after a reload.

    ``StepGuard.enter(h, canary, 25)`` sets the weight; ``guard.check()`` (at every SLI probe) reads it
    back on every HAProxy. A lost weight is put back at once when ``reapply`` (the default) and the check
    says so (``.lost``, with ``guard.reapplied`` counting; the weight is set again on every HAProxy,
    which changes only those that lost it); a weight someone else changed on any HAProxy is only
    reported (``not .ok and not .lost``): the caller rolls back or stops.
    """

    def __init__(self, haproxy: HAProxy, server: str, percent: int, *, reapply: bool = True) -> None:
        self.haproxy, self.server, self.percent, self.reapply = haproxy, server, percent, reapply
        self.weight: Weight | None = None
        self.marker: dict[str, RuntimeMarker] | None = None  # one per HAProxy
        self.reapplied = 0

    @classmethod
    def enter(cls, haproxy: HAProxy, server: str, percent: int, *, reapply: bool = True) -> StepGuard:
        guard = cls(haproxy, server, percent, reapply=reapply)
        guard.apply()
        return guard

    def apply(self) -> Weight:
        self.weight = set_weight(self.haproxy, self.server, self.percent)
        self.marker = runtime_marker(self.haproxy)
        return self.weight

    def check(self) -> WeightCheck:
        result = check_weight(self.haproxy, self.server, self.percent, since=self.marker)
        if result.reloaded and result.weight.current == result.expected:
            self.marker = runtime_marker(self.haproxy)  # at 100 %: nothing to put back; remember the new process
        elif result.lost and self.reapply:
            self.apply()
            self.reapplied += 1
            log.warning("traffic.weight_reapplied", server=self.server, percent=self.percent, times=self.reapplied)
        return result


# --- the canary's measured share of requests ---------------------------------------------------------------------


#: ``{nodes}`` becomes an RE2 alternation of node names, ``{range}`` a PromQL range (``300s``).
DEFAULT_SHARE_TEMPLATE = ('sum(increase(veza_gin_http_request_duration_seconds_count'
                          '{node=~"{nodes}",path!="/api/v1/health"}[{range}]))')


def share_template(s: Settings) -> str:
    """The share query template for these settings: the SLI's metric family, health checks left out."""
    from veza_canary.evidence import DEFAULT_EXCLUDE, DEFAULT_METRIC, render

    metric = str(getattr(s.sli, "metric", DEFAULT_METRIC))
    health_path = s.service.health_path.replace("\\", "\\\\").replace('"', '\\"')
    exclude = render(str(getattr(s.sli, "exclude", DEFAULT_EXCLUDE)), health_path=health_path)
    matchers = ",".join(p for p in ('node=~"{nodes}"', exclude.strip(" ,")) if p)
    return f"sum(increase({metric}_count{{{matchers}}}[{{range}}]))"


def _nodes_regex(nodes: Iterable[str]) -> str:
    from veza_canary.evidence import peers_regex  # the SLI's own escaping (RE2 in a PromQL string)

    return peers_regex(nodes)


def share_queries(template: str, canary: str, pool: Iterable[str], window_s: float) -> tuple[str, str]:
    """The canary's and the pool's query from the template."""
    rng = f"{max(1, math.ceil(window_s))}s"

    def fill(nodes: Iterable[str]) -> str:
        return template.replace("{nodes}", _nodes_regex(nodes)).replace("{range}", rng)

    return fill([canary]), fill(pool)


@dataclass(frozen=True, slots=True)
class Share:
    """Requests that reached the canary and the whole pool over a window, and their ratio."""

    canary: float | None
    pool: float | None
    window_s: float
    error: str = ""

    @property
    def share(self) -> float | None:
        """canary / pool; None (no data) when the pool saw nothing or a count is not a number."""
        if self.canary is None or self.pool is None or not self.pool > 0:
            return None
        return min(1.0, self.canary / self.pool)

    def to_dict(self) -> dict[str, object]:
        return {"canary": self.canary, "pool": self.pool, "window_s": self.window_s, "share": self.share,
                "error": self.error or None}


def measured_share(prom: Prometheus, template: str, *, canary: str, pool: Iterable[str],
                   window_s: float) -> Share:
    """The canary's measured share of the pool's requests over the last ``window_s`` seconds.

    Never raises for Prometheus trouble: an error is in ``.error`` and the share is None, like an
    empty answer (the share is shown, not judged; no data is never a number).
    """
    q_canary, q_pool = share_queries(template, canary, list(pool), window_s)
    try:
        c, p = _one(prom.query(q_canary)), _one(prom.query(q_pool))
    except PrometheusError as exc:
        return Share(None, None, window_s, error=str(exc))
    result = Share(c, p, window_s)
    log.info("traffic.share", query=q_canary, **result.to_dict())
    return result


def _one(series: list) -> float | None:
    if len(series) != 1:
        return 0.0 if not series else None
    v = series[0].value
    return v if math.isfinite(v) and v >= 0 else None


# --- the pinned stage -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapInfo:
    """One line of ``show map``: a map file HAProxy loaded, and what in the config reads it."""

    id: str
    path: str
    description: str

    @property
    def used(self) -> bool:
        return "used by map at" in self.description


def parse_map_list(reply: str) -> list[MapInfo]:
    """``show map`` (no argument): every loaded map file."""
    out = []
    for line in reply.splitlines():
        m = re.match(r"^(\d+) \((.*?)\) ?(.*)$", line.strip())
        if m:
            out.append(MapInfo(m.group(1), m.group(2), m.group(3)))
    if not out and reply.strip() and not reply.lstrip().startswith("# id"):
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    return out


def parse_map_entries(reply: str) -> dict[str, str]:
    """``show map FILE``: ``<ref> <key> <value>`` lines -> {key: value}."""
    if "Unknown map identifier" in reply:
        raise HAProxyError(f"HAProxy: {_first_line(reply)}")
    out = {}
    for line in reply.splitlines():
        f = line.strip().split(" ", 2)
        if len(f) == 3 and f[0].startswith("0x"):
            out[f[1]] = f[2]
    return out


class PinMap:
    """The pin map: keys (header or cookie values) routed to a server by the config's ``use-server`` rule.

    Each HAProxy has its own copy in memory: edits go to every HAProxy, reads are the union of theirs
    (a pin on any HAProxy is a pin), and ``ensure`` puts a pin back wherever it is missing.
    """

    def __init__(self, haproxy: HAProxy, path: str) -> None:
        if not _PATH_RE.fullmatch(path) or "/../" in path + "/":
            raise HAProxyError(f"refusing HAProxy map path {path!r}")
        self.haproxy = haproxy
        self.path = path

    def preflight(self) -> MapInfo:
        """Check every HAProxy loaded the map and its config reads it; PreflightError with the fix when not."""
        hint = ("add the map file and the use-server rule to the HAProxy config "
                "(docs/traffic-shaping.md), reload HAProxy, or leave CANARY_PINS unset")
        infos = []
        for name, maps in self.haproxy.each(lambda h: parse_map_list(h.command("show map"))).items():
            info = next((m for m in maps if m.path == self.path), None)
            if info is None:
                loaded = ", ".join(m.path for m in maps) or "none"
                raise PreflightError(f"{_lb(name)} has no map {self.path} loaded (maps: {loaded}): a pinned stage "
                                     "cannot route anything", hint=hint)
            if not info.used:
                raise PreflightError(f"{_lb(name)} loaded the map {self.path} but no rule reads it", hint=hint)
            infos.append(info)
        return infos[0]

    def pins_each(self) -> dict[str, dict[str, str]]:
        """Each HAProxy's entries: HAProxy name -> key -> server."""
        return self.haproxy.each(lambda h: parse_map_entries(h.command(f"show map {self.path}")))

    def pins(self) -> dict[str, str]:
        """Every entry of the map on any HAProxy: key -> server (the first HAProxy's server on a conflict)."""
        return union_pins(self.pins_each())

    def add(self, key: str, server: str) -> None:
        """Route requests carrying ``key`` to ``server`` (replaces an entry for the same key)."""
        _key(key)
        _name(server, "server")
        if key in self.pins():
            self.remove(key)
        line = f"add map {self.path} {key} {server}"
        _check_empty(self.haproxy.command(line), line)
        log.info("traffic.pin_added", map=self.path, key=key, server=server)

    def remove(self, key: str) -> bool:
        """Remove one key; False when it was not there (idempotent)."""
        _key(key)
        line = f"del map {self.path} {key}"
        reply = self.haproxy.command(line)
        if "Key not found" in reply:
            return False
        _check_empty(reply, line)
        log.info("traffic.pin_removed", map=self.path, key=key)
        return True

    def ensure(self, keys: Iterable[str], server: str) -> list[str]:
        """Put back every key that is missing or points elsewhere on any HAProxy (a reload empties its map);
        return those."""
        each = self.pins_each()
        redo = [k for k in keys if any(have.get(k) != server for have in each.values())]
        for k in redo:
            self.add(k, server)
        if redo:
            log.warning("traffic.pins_reapplied", map=self.path, keys=redo, server=server)
        return redo

    def clear(self) -> dict[str, str]:
        """Remove every entry from every HAProxy (idempotent); return what was there (on any of them)."""
        before = self.pins()
        if before:
            line = f"clear map {self.path}"
            _check_empty(self.haproxy.command(line), line)
            log.info("traffic.pins_cleared", map=self.path, removed=sorted(before))
        return before


def union_pins(each: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The pins of every HAProxy together: key -> server (the first HAProxy's server on a conflict)."""
    out: dict[str, str] = {}
    for entries in each.values():
        for k, v in entries.items():
            out.setdefault(k, v)
    return out


def pins_not_everywhere(each: Mapping[str, Mapping[str, str]]) -> dict[str, list[str]]:
    """Pins some HAProxy lack (or route elsewhere): key -> the HAProxy that have it as the union says."""
    union = union_pins(each)
    out = {}
    for k, v in union.items():
        have = [name for name, entries in each.items() if entries.get(k) == v]
        if len(have) != len(each):
            out[k] = have
    return out


def _key(key: str) -> None:
    # A key goes into a runtime-API command line: spaces would split it, ';' would chain commands.
    if not _KEY_RE.fullmatch(key):
        raise HAProxyError(f"refusing pin key {key!r}")


# --- the plan ------------------------------------------------------------------------------------------------------


def plan_lines(s: Settings) -> list[str]:
    """The traffic stages of a deploy, in words and runtime-API commands, from the settings alone (dry run)."""
    t, be, canary = s.traffic, s.haproxy.backend, s.pool.canary
    out: list[str] = []
    if not t.pins and not t.ramped:
        return [f"canary {canary} takes its full configured weight at once (CANARY_STEPS=100)"]
    out.append(f"preflight: show stat {be} (algo), show servers state {be} (weights)"
               + (f", show map (is {t.pin_map} loaded and read by a rule?)" if t.pins else "")
               + ": a static algorithm, a weight too coarse for a step or a missing map is refused")
    first = 0 if t.pins else t.steps[0]
    out.append(f"before ready: set server {be}/{canary} weight {first}% (the canary is still drained)")
    if t.pins:
        keys = " ".join(t.pins)
        out.append(f"pinned stage, {t.pin_hold:g}s: add map {t.pin_map} KEY {canary} for {keys}; only requests "
                   "carrying a pinned key reach the canary; judged; then clear map " + str(t.pin_map))
    for i, p in enumerate(t.steps):
        hold = f"SLI_WINDOW ({s.sli.window:g}s)" if i == len(t.steps) - 1 else f"{t.step_hold:g}s"
        out.append(f"step {i + 1}/{len(t.steps)}: set server {be}/{canary} weight {p}%, held and judged for {hold}"
                   + (" (the configured weight)" if p == 100 else ""))
    out.append("every exit path: clear map, every server back at its configured weight")
    return out


# --- the safety invariant: nothing left skewed -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skew:
    """What differs from the configured traffic split: weights off their configured value, pins present."""

    #: One entry per HAProxy a server is off on (``Weight.haproxy`` names it when there are several).
    weights: tuple[Weight, ...] = ()
    #: Every pin on any HAProxy.
    pins: Mapping[str, str] = field(default_factory=dict)
    pin_map: str | None = None
    #: Why the pins could not be read (the map is not loaded: nothing can be pinned either).
    pins_unknown: str = ""
    #: Pins some HAProxy lack: key -> the HAProxy that have it.
    pins_only_on: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.weights and not self.pins

    def lines(self) -> list[str]:
        """One line per skew, for ``status`` and logs."""
        out = [f"{w.server}: weight {w.current}, configured {w.initial}{_on(w.haproxy)}" for w in self.weights]
        for k, v in sorted(self.pins.items()):
            only = self.pins_only_on.get(k)
            where = "" if only is None else f", only on {', '.join(only) or 'none'}"
            out.append(f"pin {k} -> {v} (map {self.pin_map}{where})")
        return out

    def to_dict(self) -> dict[str, object]:
        return {"weights": [w.to_dict() for w in self.weights], "pins": dict(self.pins), "pin_map": self.pin_map,
                "pins_unknown": self.pins_unknown or None, "pins_only_on": dict(self.pins_only_on),
                "clean": self.clean}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Skew:
        """Back from ``to_dict`` (``status`` keeps the dict for its JSON and prints ``lines()``)."""
        return cls(tuple(Weight(**w) for w in d.get("weights") or ()), dict(d.get("pins") or {}),  # type: ignore[arg-type]
                   d.get("pin_map"), d.get("pins_unknown") or "", dict(d.get("pins_only_on") or {}))  # type: ignore[arg-type]


def traffic_skew(haproxy: HAProxy, pin_map: str | None = None) -> Skew:
    """Every server whose weight differs from its configured one on any HAProxy (one entry per HAProxy it is
    off on), and every pin in ``pin_map`` on any HAProxy (``pins_only_on`` names those some HAProxy lack).

    A map HAProxy has not loaded holds no pins: ``pins_unknown`` says so instead of raising, so a
    fleet without the pinned stage configured still shows its weights.
    """
    skewed = tuple(w for table in weights_each(haproxy).values() for w in table.values() if w.skewed)
    each: dict[str, dict[str, str]] = {}
    unknown = ""
    if pin_map:
        try:
            each = PinMap(haproxy, pin_map).pins_each()
        except HAProxyError as exc:
            unknown = str(exc)
    return Skew(skewed, union_pins(each), pin_map, unknown, pins_not_everywhere(each))


def restore_all(haproxy: HAProxy, pin_map: str | None = None) -> Skew:
    """Put every server back at its configured weight and remove every pin; return what was skewed.

    Idempotent: on a clean fleet it changes nothing. Raises HAProxyError if HAProxy refuses.
    """
    found = traffic_skew(haproxy, pin_map)
    if found.pins and pin_map:
        PinMap(haproxy, pin_map).clear()
    for server in dict.fromkeys(w.server for w in found.weights):  # once per server: a restore reaches every HAProxy
        restore_weight(haproxy, server)
    if not found.clean:
        log.warning("traffic.restored", **found.to_dict())
    return found
