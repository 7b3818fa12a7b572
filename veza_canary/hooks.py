"""Local hook scripts: let a team plug its own checks and chores into fixed points of a run.

A hook is an executable file named after its point, in the hooks directory
(``HOOKS_DIR``, default ``.veza-canary/hooks`` under the repository root, i.e. the
deploy's working directory)::

    pre-deploy          after preflight, the migration gate and the lock, before the first change: GATE
    confirm-promotion   canary green, before the first peer is touched:                           GATE
    post-canary         the canary passed its SLI watch (after confirm-promotion)
    on-rollback         the canary was rolled back (or the rollback failed); a manual rollback
    post-deploy         at the end of every run that sent deploy-started, with its exit code

A **gate** that exits non-zero (or times out, or cannot be started) raises
``HookRefused``: ``pre-deploy`` stops the run with nothing changed; ``confirm-promotion``
fails the canary phase, so the canary is settled as on any canary failure. Other
hooks only inform: their failure is logged and recorded, never raised.

A hook runs with argv ``[path]`` (no shell), stdin from /dev/null, in the repository
root, with this process's environment plus the run's facts as ``VEZA_*`` variables
(``hook_env``), for at most ``HOOK_TIMEOUT`` seconds: on timeout its whole process
group is killed. Its output (stdout and stderr merged) is logged line by line,
redacted, and its tail kept in the ``HookResult``.

A hook listed in ``REQUIRED_HOOKS`` must exist and be executable: ``Hooks.validate``
(called by preflight) raises ``PreflightError`` otherwise. An absent hook that is
not required is skipped; a present one without the execute bit is skipped with a
warning (git does the same; the warning says how to fix it).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veza_canary.errors import HookRefused, PreflightError
from veza_canary.log import get_logger, redact_text
from veza_canary.notify import Event
from veza_canary.transport.local import kill_group

if TYPE_CHECKING:
    from veza_canary.settings import Settings

log = get_logger(__name__)

PRE_DEPLOY = "pre-deploy"
CONFIRM_PROMOTION = "confirm-promotion"
POST_CANARY = "post-canary"
POST_DEPLOY = "post-deploy"
ON_ROLLBACK = "on-rollback"

#: Every hook point, in the order a run reaches them.
HOOK_NAMES: tuple[str, ...] = (PRE_DEPLOY, CONFIRM_PROMOTION, POST_CANARY, ON_ROLLBACK, POST_DEPLOY)
#: Hooks whose non-zero exit stops the run.
GATES = frozenset({PRE_DEPLOY, CONFIRM_PROMOTION})

DEFAULT_HOOKS_DIR = ".veza-canary/hooks"
DEFAULT_TIMEOUT = 300.0
#: Output kept in a HookResult (the log gets every line, up to ``_MAX_LOGGED_LINES``).
_TAIL_LINES = 20
_MAX_LOGGED_LINES = 500
_MAX_OUTPUT = 1 << 20
_MAX_LINE_CHARS = 2000
_MAX_ENV_CHARS = 8000
#: After killing a timed-out hook's group, wait this long for its pipes to close.
_REAP_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class HookResult:
    name: str
    path: str
    ran: bool
    exit_code: int | None = None  # shell convention: 128+N when killed by signal N
    timed_out: bool = False
    duration_s: float = 0.0
    output_tail: tuple[str, ...] = ()
    error: str | None = None  # could not start / skipped reason

    @property
    def ok(self) -> bool:
        return not self.ran or (self.exit_code == 0 and not self.timed_out and self.error is None)

    def describe(self) -> str:
        if not self.ran:
            return f"hook {self.name}: skipped ({self.error or 'absent'})"
        if self.timed_out:
            return f"hook {self.name} timed out after {self.duration_s:g}s and was killed"
        if self.error:
            return f"hook {self.name} could not run: {self.error}"
        last = f": {self.output_tail[-1]}" if self.output_tail and self.exit_code else ""
        return f"hook {self.name} exited {self.exit_code}{last}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "ran": self.ran, "exit_code": self.exit_code,
                "timed_out": self.timed_out, "duration_s": self.duration_s, "output_tail": list(self.output_tail),
                "error": self.error, "ok": self.ok}


def hook_env(name: str, event: Event | None = None, **extra: object) -> dict[str, str]:
    """The ``VEZA_*`` variables a hook receives (documented in docs/hooks-and-notifications.md).

    ``extra`` keys become ``VEZA_<KEY>`` (upper case); None values are left out,
    other values are strings (lists space-separated, dicts as JSON).
    """
    env: dict[str, Any] = {"VEZA_HOOK": name}
    if event is not None:
        f = event.facts
        env.update({
            "VEZA_EVENT": event.name,
            "VEZA_SUMMARY": event.summary,
            "VEZA_COMMAND": f.command,
            "VEZA_RUN_ID": f.run_id,
            "VEZA_OPERATOR": f.operator,
            "VEZA_ARTIFACT": f.artifact_path,
            "VEZA_SHA256": f.sha256,
            "VEZA_VERSION": f.version,
            "VEZA_NODES": list(f.nodes),
            "VEZA_CANARY": f.canary,
            "VEZA_PEERS": [n for n in f.nodes if n != f.canary],
            "VEZA_REPORT": f.report_path,
            "VEZA_EXIT_CODE": event.exit_code,
            "VEZA_VERDICT": event.data.get("verdict"),
            "VEZA_CAUSE": event.data.get("cause"),
            "VEZA_FLEET_STATE": event.fleet_state or None,
        })
    env.update({f"VEZA_{k.upper()}": v for k, v in extra.items()})
    return {k: _env_str(v) for k, v in env.items() if v is not None}


def _env_str(v: object) -> str:
    if isinstance(v, list | tuple):
        return " ".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    # NUL cannot be in an environment variable; nothing of ours has one, but never crash on it.
    return redact_text(str(v)[:_MAX_ENV_CHARS]).replace("\x00", "")


class Hooks:
    """The hooks of one run: ``validate`` at preflight, ``run(name, event)`` at each point."""

    def __init__(self, directory: Path, *, timeout: float = DEFAULT_TIMEOUT, required: Sequence[str] = (),
                 cwd: Path | None = None, base_env: Mapping[str, str] | None = None) -> None:
        unknown = [n for n in required if n not in HOOK_NAMES]
        if unknown:
            # Settings check this first (ConfigError naming the knob); this guards library use.
            raise ValueError(f"unknown hook name(s) {unknown}; known: {', '.join(HOOK_NAMES)}")
        self.dir = directory
        self.timeout = timeout
        self.required = tuple(required)
        self.cwd = cwd
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.results: list[HookResult] = []

    @classmethod
    def from_settings(cls, s: Settings, repo_root: Path, **kw: Any) -> Hooks:
        """HOOKS_DIR (relative to ``repo_root``), HOOK_TIMEOUT, REQUIRED_HOOKS; hooks run in ``repo_root``."""
        n = s.notify
        return cls(repo_root / n.hooks_dir, timeout=n.hook_timeout, required=n.required_hooks or (),
                   cwd=repo_root, **kw)

    def path(self, name: str) -> Path:
        if name not in HOOK_NAMES:
            raise ValueError(f"unknown hook {name!r}")
        return self.dir / name

    def problem(self, name: str) -> str | None:
        """Why hook ``name`` cannot run (absent, not a file, not executable), or None when it can."""
        p = self.path(name)
        try:
            st = p.stat()
        except FileNotFoundError:
            return f"{p} does not exist"
        except OSError as exc:
            return f"{p}: cannot stat ({exc.strerror})"
        if not stat.S_ISREG(st.st_mode):
            return f"{p} is not a regular file"
        if not os.access(p, os.X_OK):
            return f"{p} is not executable (chmod +x {p})"
        return None

    def validate(self) -> list[str]:
        """Preflight: every required hook is present and executable; return the hooks that will run.

        Raises PreflightError naming every problem. A present but non-executable
        optional hook is a warning (it will be skipped).
        """
        problems = [pr for n in self.required if (pr := self.problem(n))]
        if problems:
            raise PreflightError("required hook(s) unusable: " + "; ".join(problems),
                                 hint=f"add the executable(s) under {self.dir}, or drop them from REQUIRED_HOOKS")
        present = []
        for n in HOOK_NAMES:
            pr = self.problem(n)
            if pr is None:
                present.append(n)
            elif self.path(n).exists() or self.path(n).is_symlink():
                log.warning("hook.unusable", hook=n, problem=pr, msg="it will be skipped")
        log.info("hooks.found", dir=str(self.dir), hooks=present, required=list(self.required))
        return present

    def run(self, name: str, event: Event | None = None, **extra: object) -> HookResult:
        """Run hook ``name`` if present. A gate's failure raises HookRefused; other failures are returned."""
        problem = self.problem(name)
        if problem is not None:
            if name in self.required:  # validate() passed, so it went away mid-run: refuse, don't skip
                r = HookResult(name, str(self.path(name)), ran=False, error=problem)
                self.results.append(r)
                if name in GATES:
                    raise HookRefused(f"required hook {name}: {problem}", result=r)
                log.error("hook.missing", hook=name, problem=problem)
                return r
            log.debug("hook.skipped", hook=name, reason=problem)
            return HookResult(name, str(self.path(name)), ran=False, error=problem)
        r = self._exec(name, {**self.base_env, **hook_env(name, event, **extra)})
        self.results.append(r)
        if name in GATES and not r.ok:
            raise HookRefused(
                f"{r.describe()}: the {name} gate refused" + (
                    "; nothing was changed" if name == PRE_DEPLOY else "; the peers are not touched"),
                hint=f"see the hook's output above; fix what it checks, or change {self.path(name)}",
                result=r)
        return r

    def _exec(self, name: str, env: dict[str, str]) -> HookResult:
        path = self.path(name)
        log.info("hook.start", hook=name, path=str(path), timeout=self.timeout)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list of one operator-provided executable
                [str(path)], cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            why = redact_text(exc.strerror or str(exc))
            log.error("hook.cannot_start", hook=name, path=str(path), error=why)
            return HookResult(name, str(path), ran=True, duration_s=_since(start), error=why)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc)
            try:
                out, _ = proc.communicate(timeout=_REAP_WAIT)
            except subprocess.TimeoutExpired:  # a descendant left the group and holds the pipe: stop reading
                proc.kill()
                out = b""
                if proc.stdout is not None:
                    proc.stdout.close()
                proc.wait()
        except BaseException:
            # A signal (the deploy's interrupt) while a hook runs: never leave it behind.
            kill_group(proc)
            proc.wait()
            raise
        code = proc.returncode
        code = 128 - code if code < 0 else code
        # Lines clipped before redaction (its regexes are slow on very long strings).
        lines = [ln[:_MAX_LINE_CHARS] for ln in out[-_MAX_OUTPUT:].decode("utf-8", "replace").splitlines()]
        for i, line in enumerate(lines[:_MAX_LOGGED_LINES]):
            log.info("hook.output", hook=name, line=redact_text(line), n=i + 1)
        if len(lines) > _MAX_LOGGED_LINES:
            log.info("hook.output.truncated", hook=name, lines=len(lines), logged=_MAX_LOGGED_LINES)
        r = HookResult(name, str(path), ran=True, exit_code=code, timed_out=timed_out, duration_s=_since(start),
                       output_tail=tuple(redact_text(ln) for ln in lines[-_TAIL_LINES:]))
        (log.info if r.ok else log.warning)("hook.done", hook=name, exit_code=code, timed_out=timed_out,
                                            duration_s=r.duration_s)
        return r


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)
