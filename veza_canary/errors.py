"""The exception tree and the exit codes, in one place.

Every error the tool raises on purpose is a ``VezaError``; each class carries the
process exit code the CLI turns it into. Nothing else in the package calls
``sys.exit`` or ``typer.Exit`` with a number.

Foreign errors (paramiko, httpx, socket, sqlglot, OSError) are translated at the
boundary where they happen: ``raise HAProxyError(...) from exc``.

::

    VezaError                          1  (base; a bare VezaError is a bug)
    +-- ConfigError                    2  a knob, flag, env var or config file is wrong
    +-- PreflightError                 3  a precondition failed; nothing was changed
    |   +-- ReleaseBlocked             9  this artifact was rolled back before
    |   +-- HookRefused               13  a pre-deploy hook said no
    +-- LintBlocked                    4  a migration would break the old binary
    +-- LintInputError                12  the linter could not read or parse its input
    +-- LockHeld                       8  another deploy holds the fleet lock
    +-- InfraError                    10  an external system misbehaved
    |   +-- TransportError                a command could not be run or failed
    |   |   +-- CommandFailed                 ... exited non-zero (check=True)
    |   |   +-- CommandTimedOut               ... did not finish in time
    |   |   +-- IncusError                    ... Incus itself refused (no such instance, stopped)
    |   |   +-- SSHError                      ... SSH connect/auth/host-key failure
    |   +-- HAProxyError                  the runtime API answered an error or nonsense
    |   +-- PrometheusError               Prometheus unreachable or answered an error
    |   +-- PushError                     a binary push failed or arrived corrupted
    +-- CheckFailed                   11  a check is red (on-call commands; inside a deploy
    |   |                                 these are causes that trigger the rollback policy)
    |   +-- DrainTimedOut                     sessions did not reach 0 before DRAIN_TIMEOUT
    |   +-- HealthCheckFailed                 node/LB health or HAProxy UP not reached in time
    |   +-- SLIBreached                       the SLI watch went red
    |   +-- FleetIncident                     baseline as bad as the canary (not blamed, not blocked)
    +-- DeployFailed                      outcomes of a deploy that changed things
    |   +-- CanaryRolledBack           5  canary rolled back; fleet consistent on the old binary
    |   +-- PeerRollFailed             6  a peer failed; fleet is mixed, roll stopped
    |   +-- RollbackFailed             7  the rollback itself failed; a human is needed
    +-- Interrupted                  130  SIGINT/SIGTERM; fleet brought to a known state first
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes. Documented in README.md and docs/runbooks/CANARY_RELEASE.md."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    PREFLIGHT = 3
    LINT_BLOCKED = 4
    ROLLED_BACK = 5
    PEER_FAILED = 6
    ROLLBACK_FAILED = 7
    LOCKED = 8
    RELEASE_BLOCKED = 9
    INFRA = 10
    CHECK_FAILED = 11
    LINT_INPUT = 12
    HOOK_REFUSED = 13
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success: every step passed",
    ExitCode.INTERNAL: "internal error (a bug): report it with the JSON report",
    ExitCode.USAGE: "usage or configuration error; nothing was changed",
    ExitCode.PREFLIGHT: "preflight failed; nothing was changed",
    ExitCode.LINT_BLOCKED: "a migration would break the old binary; nothing was changed",
    ExitCode.ROLLED_BACK: "canary rolled back; fleet consistent on the last-known-good binary",
    ExitCode.PEER_FAILED: "a peer failed; roll stopped, fleet mixed (see report to resume)",
    ExitCode.ROLLBACK_FAILED: "the rollback itself failed; canary left drained; a human is needed",
    ExitCode.LOCKED: "another deploy holds the fleet lock",
    ExitCode.RELEASE_BLOCKED: "this artifact was rolled back before; refused without --force",
    ExitCode.INFRA: "HAProxy, Prometheus, Incus or SSH failed (outside a deploy's rollback policy)",
    ExitCode.CHECK_FAILED: "an on-call check (health, SLI) is red",
    ExitCode.LINT_INPUT: "the migration linter could not read or parse its input",
    ExitCode.HOOK_REFUSED: "a pre-deploy hook refused the deploy; nothing was changed",
    ExitCode.INTERRUPTED: "interrupted (SIGINT/SIGTERM); fleet brought to a known state first",
}


class VezaError(Exception):
    """Root of every error the tool raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL
    #: Whether a run ending with this error may have changed the fleet, so it must say how to resume
    #: (re-running the same command reconciles from live state). False: nothing was changed; fix and re-run.
    resumable: bool = True

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(VezaError):
    """A knob has a bad value; names the knob."""

    exit_code = ExitCode.USAGE
    resumable = False

    def __init__(self, knob: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{knob}: {problem}", hint=hint)
        self.knob = knob


class PreflightError(VezaError):
    exit_code = ExitCode.PREFLIGHT
    resumable = False


class ReleaseBlocked(PreflightError):
    exit_code = ExitCode.RELEASE_BLOCKED


class HookRefused(PreflightError):
    """A gate hook (pre-deploy, confirm-promotion) said no: non-zero exit, timeout, or it could not run.

    Before any change (pre-deploy) it is exit 13; at confirm-promotion the canary is rolled back (exit 5).
    """

    exit_code = ExitCode.HOOK_REFUSED

    def __init__(self, message: str, *, hint: str | None = None, result: object | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


class LintBlocked(VezaError):
    exit_code = ExitCode.LINT_BLOCKED
    resumable = False


class LintInputError(VezaError):
    exit_code = ExitCode.LINT_INPUT
    resumable = False


class LockHeld(VezaError):
    exit_code = ExitCode.LOCKED
    resumable = False


class InfraError(VezaError):
    exit_code = ExitCode.INFRA


class TransportError(InfraError):
    pass


class CommandFailed(TransportError):
    def __init__(self, message: str, *, result: object | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


class CommandTimedOut(TransportError):
    pass


class IncusError(TransportError):
    """Incus itself refused the request (no such instance, instance not running, ...)."""


class SSHError(TransportError):
    pass


class HAProxyError(InfraError):
    pass


class PrometheusError(InfraError):
    pass


class PushError(InfraError):
    pass


class CheckFailed(VezaError):
    exit_code = ExitCode.CHECK_FAILED


class DrainTimedOut(CheckFailed):
    pass


class HealthCheckFailed(CheckFailed):
    pass


class SLIBreached(CheckFailed):
    pass


class FleetIncident(CheckFailed):
    """The baseline was as bad as the canary for too long: not the build's fault. The canary is rolled back
    (exit 5) but the release is not blocked."""


class DeployFailed(VezaError):
    """A deploy outcome after something was changed; carries the report when one exists."""

    def __init__(self, message: str, *, hint: str | None = None, report: object | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class CanaryRolledBack(DeployFailed):
    exit_code = ExitCode.ROLLED_BACK


class PeerRollFailed(DeployFailed):
    exit_code = ExitCode.PEER_FAILED


class RollbackFailed(DeployFailed):
    exit_code = ExitCode.ROLLBACK_FAILED


class Interrupted(DeployFailed):
    exit_code = ExitCode.INTERRUPTED
