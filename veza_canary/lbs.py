"""Several HAProxy in front of one pool (an active/standby or active/active pair): ``HAProxySet``.

``HAProxySet`` is an ``HAProxy`` whose every operation goes to each member, so the pipeline, the node
procedure, the waits, ``status`` and ``traffic`` use it unchanged (``fleet.haproxy``). The rules:

* **Writes go to every HAProxy** (``set_state``, ``set_weight``, ``shutdown_sessions``, and the raw
  command lines ``traffic.py`` sends through ``.sock``: weights in %, map edits). Each member is tried
  even when one fails, so a drain still reaches the HAProxy that answer; then the failure is raised as
  one ``HAProxyError`` naming the HAProxy that failed and those where the change was applied.
* **A node is out of rotation only when every HAProxy has it out**: ``state()`` reports the member
  state that is *most* in rotation (ready before drain before maint), so "drained" means drained
  everywhere; ``stat()`` adds the sessions up and says ``UP`` only when every HAProxy says UP (else
  the first status that is not); ``in_rotation()`` is the intersection. A server that one HAProxy does
  not know is unknown (``states()``/``stats()`` keep the servers every member has).
* **Weights must agree**: when the members differ (one reloaded during a ramp step and forgot the
  runtime weight, or a change by hand on one), ``get_weight`` reads ``DISAGREE`` (-1): skewed, so every
  restore puts the weight back on all of them. (A ramp step's own check reads each member instead and
  re-applies the weight where a reload lost it: ``traffic.check_weight``.)
* **A member that does not answer makes every read and write raise** ``HAProxyError("HAProxy <name>:
  ...")``: the deploy's failure policy for an HAProxy failure applies (docs/multi-lb.md says which
  state a deploy ends in).
* **Raw reads are per HAProxy**: a ``show ...``/``get ...`` reply describes one process (its pid, its
  weights, its map entries) and cannot be merged as text, so ``traffic.py`` reads each member with
  ``each(op)`` (``{name: op(member)}``) and combines the results itself (a weight is skewed when any
  member has it off, pins are the union, a reload of any member is seen). A raw read sent to the set
  itself has no single answer and is refused (a bug, not a fleet state).

With one HAProxy the fleet uses the plain ``HAProxy`` (``fleet.build_fleet``); nothing here runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from veza_canary.errors import HAProxyError
from veza_canary.haproxy import AdminSocket, HAProxy, ServerStat, ServerState, ServerView
from veza_canary.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: The current weight of a server the HAProxy disagree on: no single weight, never the one a ramp step or a
#: restore wants, so every caller sees it skewed -- a restore, the reconcile at the next run and
#: ``veza-canary haproxy weight`` set it again on every HAProxy.
DISAGREE = -1

#: How far in rotation an admin state is: the combined state of a server is its most-in-rotation one.
_IN_ROTATION_RANK = {"ready": 0, "drain": 1, "maint": 2}


def _is_read(command: str) -> bool:
    return command.lstrip().startswith(("show ", "get "))


class Members:
    """The named HAProxy clients, in configured order, and the one rule for calling them all."""

    def __init__(self, members: Sequence[tuple[str, HAProxy]]) -> None:
        if len(members) < 2:
            raise ValueError("an HAProxySet needs at least two HAProxy")
        backends = {h.backend for _, h in members}
        if len(backends) != 1:
            raise ValueError(f"the HAProxy of a set serve one backend, got {sorted(backends)}")
        self.items = list(members)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.items]

    def read(self, op: Callable[[HAProxy], T]) -> list[T]:
        """``op`` on every member; the first one that fails raises, named."""
        out = []
        for name, h in self.items:
            try:
                out.append(op(h))
            except HAProxyError as exc:
                raise HAProxyError(f"HAProxy {name}: {exc}", hint=_hint(name)) from exc
        return out

    def write(self, op: Callable[[HAProxy], T], what: str) -> list[T]:
        """``op`` on every member, even after one failed; then raise naming who failed and who has it."""
        out: list[T] = []
        failed: dict[str, str] = {}
        for name, h in self.items:
            try:
                out.append(op(h))
            except HAProxyError as exc:
                failed[name] = str(exc)
        if failed:
            done = [n for n in self.names if n not in failed]
            log.error("lbs.write_failed", what=what, failed=failed, applied_on=done)
            errors = "; ".join(f"HAProxy {n}: {e}" for n, e in failed.items())
            raise HAProxyError(f"{what}: {errors} (applied on {', '.join(done) or 'none'})",
                               hint=_hint(", ".join(failed)))
        return out


def _hint(name: str) -> str:
    return (f"check HAProxy {name} (veza-canary status); every HAProxy of HAPROXY_CONTAINERS must answer "
            "(docs/multi-lb.md)")


class BroadcastSocket(AdminSocket):
    """The raw command path of an ``HAProxySet``: writes go to every member; reads go through ``each``."""

    def __init__(self, members: Members) -> None:
        self.members = members

    def send(self, command: str) -> str:
        if _is_read(command):
            # Which member's reply would it be? Returning the first one's hid the others (issue 18 §2).
            raise RuntimeError(f"a raw read on several HAProxy has no single reply ({command!r}): read each one "
                               "with HAProxySet.each and combine the results")
        replies = self.members.write(lambda h: h.sock.send(command), f"{command.split(' ', 3)[:3]!r}")
        if len({r.strip() for r in replies}) == 1:
            return replies[0]
        # Members answered differently (one refused, or "Key not found." on one only): the caller's check
        # of the reply sees every non-empty answer, each with its HAProxy's name.
        return "".join(f"[{n}] {r.strip()}\n" for n, r in zip(self.members.names, replies, strict=True) if r.strip())


def combine_state(states: Sequence[ServerState]) -> ServerState:
    """One server's admin state over every HAProxy: the one most in rotation (drained only if drained on all).

    ``op_state`` is running (2) only when every HAProxy says so, else the first that does not.
    """
    most = min(states, key=lambda s: _IN_ROTATION_RANK[s.admin])
    op = next((s.op_state for s in states if s.op_state != 2), 2)
    return replace(most, op_state=op)


def combine_stat(stats: Sequence[ServerStat]) -> ServerStat:
    """One server's ``show stat`` row over every HAProxy: sessions and queue summed, UP only when all are UP."""
    worst = next((s for s in stats if not s.is_up), stats[0])
    return replace(worst, scur=sum(s.scur for s in stats), qcur=sum(s.qcur for s in stats),
                   weight=min(s.weight for s in stats))


def _common(maps: Sequence[dict[str, T]]) -> list[str]:
    """Server names every member knows, in the first member's order."""
    return [k for k in maps[0] if all(k in m for m in maps[1:])]


class HAProxySet(HAProxy):
    """``HAProxy``'s public surface over several HAProxy instances (see the module docstring for the rules).

    ``HAProxySet([("haproxy", HAProxy(...)), ("haproxy-2", HAProxy(...))])``; members in configured order.
    """

    def __init__(self, members: Sequence[tuple[str, HAProxy]]) -> None:
        self.members = Members(members)
        # Anything not overridden below still goes through every member (the broadcast socket).
        super().__init__(BroadcastSocket(self.members), members[0][1].backend)

    @property
    def names(self) -> list[str]:
        return self.members.names

    def each(self, op: Callable[[HAProxy], T]) -> dict[str, T]:
        """``op`` on every member, by name in configured order; the first member that fails raises, named."""
        return dict(zip(self.names, self.members.read(op), strict=True))

    # -- reads -----------------------------------------------------------------------------
    def stats(self) -> dict[str, ServerStat]:
        per = self.members.read(lambda h: h.stats())
        return {n: combine_stat([m[n] for m in per]) for n in _common(per)}

    def stat(self, server: str) -> ServerStat:
        return combine_stat(self.members.read(lambda h: h.stat(server)))

    def states(self) -> dict[str, ServerState]:
        per = self.members.read(lambda h: h.states())
        return {n: combine_state([m[n] for m in per]) for n in _common(per)}

    def state(self, server: str) -> ServerState:
        return combine_state(self.members.read(lambda h: h.state(server)))

    def view(self, server: str) -> ServerView:
        views = self.members.read(lambda h: h.view(server))
        return ServerView(combine_state([v.state for v in views]), combine_stat([v.stat for v in views]))

    def in_rotation(self) -> set[str]:
        """Servers every HAProxy sends new traffic to (ready and UP on each)."""
        return set.intersection(*self.members.read(lambda h: h.in_rotation()))

    def get_weight(self, server: str) -> tuple[int, int]:
        """``(current, initial)`` when every HAProxy agrees; else ``(DISAGREE, initial)`` (see ``DISAGREE``)."""
        got = self.members.read(lambda h: h.get_weight(server))
        if len(set(got)) == 1:
            return got[0]
        seen = {n: {"current": c, "initial": i} for n, (c, i) in zip(self.names, got, strict=True)}
        log.warning("lbs.weights_disagree", server=server, weights=seen,
                    msg="the HAProxy disagree on this weight (a reload of one, or a change by hand)")
        return DISAGREE, got[0][1]

    # -- writes ----------------------------------------------------------------------------
    def set_state(self, server: str, state: str) -> None:
        self.members.write(lambda h: h.set_state(server, state), f"set {server} {state}")

    def set_weight(self, server: str, weight: int) -> None:
        self.members.write(lambda h: h.set_weight(server, weight), f"set {server} weight {weight}")

    def shutdown_sessions(self, server: str) -> None:
        self.members.write(lambda h: h.shutdown_sessions(server), f"shutdown sessions of {server}")
