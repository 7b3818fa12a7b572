"""What every command shares: knob options, global options, the fleet factory, and the one place exit codes are made.

A command is declared with ``with_knobs(*names)`` (or ``guarded`` when it has no knobs). The
decorator adds one option per knob the command uses (typed by the knob's parser: DURATION,
FLOAT, INTEGER, PATH ..., with its default and env var), ``--config``, and the global options
``--log-format`` and ``-v`` (so they work after the subcommand too); the command receives
``settings: Settings`` already resolved (flag > env > config > default) and validated. Its
fleet comes from the ``rt: Runtime`` parameter the decorator fills in: the factory the
app was built with (``build_app(fleet_factory=...)``; tests pass a simulated fleet there).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer

from veza_canary.errors import EXIT_CODE_MEANINGS, ExitCode, VezaError
from veza_canary.settings import KNOBS_BY_NAME, Knob, Settings, load_settings

if TYPE_CHECKING:
    from veza_canary.fleet import Fleet

F = TypeVar("F", bound=Callable[..., Any])
FleetFactory = Callable[[Settings], "Fleet"]

_CONFIG_OPTION = typer.Option(
    None, "--config", help="TOML config file (default: ./veza-canary.toml if present; env VEZA_CANARY_CONFIG).",
    show_default=False, metavar="PATH",
)


class LogFormat(StrEnum):
    console = "console"
    json = "json"


class Format(StrEnum):
    """``--format`` of the read-only commands."""

    table = "table"
    json = "json"


# --- the app's state: the fleet factory and the global options -------------------------------------------


Confirm = Callable[[str], bool]


@dataclass(frozen=True)
class CliState:
    """What ``build_app`` was given; the root context's ``obj``."""

    fleet_factory: FleetFactory | None = None
    #: How to ask "are you sure?" (default: typer.confirm, on a TTY only).
    confirm: Confirm | None = None


@dataclass(frozen=True)
class Runtime:
    """A command's seams to the world, from ``build_app``: where its fleet comes from and how it asks.

    A command that declares ``rt: Runtime`` gets one: ``with rt.fleet(settings) as fleet: ...``.
    """

    state: CliState = CliState()

    @contextmanager
    def fleet(self, settings: Settings) -> Iterator[Fleet]:
        """The fleet for ``settings``, closed on the way out."""
        fleet = self.build_fleet(settings)
        try:
            yield fleet
        finally:
            fleet.close()

    def build_fleet(self, settings: Settings) -> Fleet:
        """The fleet for ``settings``; the caller closes it (the deploy hands it to ``run_deploy``)."""
        if self.state.fleet_factory is not None:
            return self.state.fleet_factory(settings)
        from veza_canary.fleet import build_fleet

        return build_fleet(settings)

    def confirmer(self, yes: bool) -> Confirm | None:
        """None (do not ask) with ``--yes`` or off a TTY; else the app's way of asking."""
        if yes:
            return None
        if self.state.confirm is not None:
            return self.state.confirm
        return None if not sys.stdin.isatty() else (lambda q: typer.confirm(q, default=False))


def apply_globals(ctx: typer.Context, log_format: LogFormat | None, verbose: bool) -> None:
    """``--log-format``/``-v`` given at the root or at the command (the later one wins), applied once."""
    from veza_canary.log import clear_deferred, defer_configure

    meta = ctx.meta.setdefault("veza_canary.globals", {"log_format": None, "verbose": False, "closer": False})
    if log_format is not None:
        meta["log_format"] = str(log_format)
    meta["verbose"] = meta["verbose"] or verbose
    defer_configure(meta["log_format"], verbose=meta["verbose"])
    if not meta["closer"]:
        meta["closer"] = True
        ctx.call_on_close(clear_deferred)


_GLOBALS = (
    inspect.Parameter("log_format", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[LogFormat],  # noqa: UP045
                      default=typer.Option(None, "--log-format", show_default=False,
                                           help="Log lines as console or json (default: console on a TTY, "
                                                "JSON otherwise). Also before the command.")),
    inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--verbose", "-v", help="Debug logging (every command run).")),
    inspect.Parameter("_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
)


# --- knob options ------------------------------------------------------------------------------------


def _metavar(k: Knob) -> str:
    """The knob's real type, from its parser: what ``--help`` shows instead of TEXT."""
    from veza_canary import settings as st

    parse = k.parse
    if parse is st.parse_duration:
        return "DURATION"
    if parse is st._p_float:  # noqa: SLF001 - the settings module's parsers name the kinds of values
        return "FLOAT"
    if parse is st._p_int:  # noqa: SLF001
        return "INTEGER"
    if parse is st._p_path:  # noqa: SLF001
        return "PATH"
    if parse is st._p_node_list:  # noqa: SLF001
        return "NODES"
    if parse is st._p_argv:  # noqa: SLF001
        return "ARGV"
    default = k.default
    if isinstance(default, str) and default.startswith(("http://", "https://")) or k.env.endswith("_URL"):
        return "URL"
    if k.env == "INCUS_HOST":
        return "local|ssh://HOST"
    choices = inspect.getclosurevars(parse).nonlocals.get("options")  # a _choice(...) parser
    if isinstance(choices, tuple):
        return "|".join(choices)
    if k.env.endswith(("_SELECTOR", "_EXCLUDE")):
        return "MATCHERS"
    if k.env.endswith("_METRIC"):
        return "METRIC"
    if parse.__name__ == "_p_steps":
        return "PERCENTS"
    if parse.__name__ == "_p_share":
        return "N|N%"
    if k.env == "HEALTH_PATH":
        return "URL-PATH"
    if k.env == "MIGRATIONS_SINCE":
        return "GIT-REF"
    if parse.__name__ == "_p_list":
        return "URLS" if k.env.endswith("_URLS") else "LIST"
    if k.env.endswith(("_DIR", "_SOCKET")):
        return "PATH"
    return "NAME" if k.env.endswith(("_NODE", "_CONTAINER", "_BACKEND", "_NAME")) else "STRING"


def _default_shown(k: Knob) -> str | None:
    d = k.default
    if d is None:
        return None
    if isinstance(d, bool):
        return "on" if d else "off"
    if isinstance(d, float) and k.parse.__name__ == "parse_duration":
        for unit, secs in (("h", 3600), ("m", 60)):
            if d >= secs and d % secs == 0:
                return f"{d / secs:g}{unit}"
        return f"{d:g}s"
    if isinstance(d, tuple):
        return " ".join(d)
    return str(d)


def knob_param(name: str) -> inspect.Parameter:
    k = KNOBS_BY_NAME[name]
    default = _default_shown(k)
    # The option's own default stays None ("not given"), so env and config still apply: the knob's default is
    # shown in the help text instead.
    help_text = f"{k.help} [env: {k.env}" + (f"; default: {default}]" if default is not None else "]")
    if k.is_flag:
        opt = typer.Option(None, f"{k.flag}/--no-{k.flag[2:]}", help=help_text, show_default=False)
        ann: Any = Optional[bool]  # noqa: UP045 - Typer needs a runtime type here
    else:
        # The raw string goes to load_settings, which parses every layer alike ("5m" is a DURATION).
        opt = typer.Option(None, k.flag, help=help_text, show_default=False, metavar=_metavar(k))
        ann = Optional[str]  # noqa: UP045
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)


def with_knobs(*names: str) -> Callable[[F], F]:
    """Add an option for each named knob, ``--config`` and the global options; resolve ``settings``.

    The decorated function receives ``settings: Settings`` (flag > env > config > default) instead of the
    raw options; a bad value is a ConfigError (exit 2) before the function body runs.
    """

    def deco(fn: F) -> F:
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "settings"]
        params += [knob_param(n) for n in names]
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=_CONFIG_OPTION,
                                        annotation=Optional[Path]))  # noqa: UP045

        def call(kwargs: dict[str, Any]) -> Any:
            flags = {n: kwargs.pop(n) for n in names}
            config = kwargs.pop("config")
            return fn(settings=load_settings(flags, os.environ, config), **kwargs)

        return _with_globals(fn, params, call)

    return deco


def guarded(fn: F) -> F:
    """For commands without knobs: the global options, and VezaError mapped to its exit code."""
    params = list(inspect.signature(fn).parameters.values())
    return _with_globals(fn, params, lambda kwargs: fn(**kwargs))


def _with_globals(fn: F, params: list[inspect.Parameter], call: Callable[[dict[str, Any]], Any]) -> F:
    """Add the global options (and the context) to ``params``; give ``rt`` to a command that takes it."""
    wants_rt = any(p.name == "rt" for p in params)
    params = [p for p in params if p.name != "rt"]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        ctx = kwargs.pop("_ctx")
        apply_globals(ctx, kwargs.pop("log_format"), kwargs.pop("verbose"))
        if wants_rt:
            state = ctx.find_object(CliState)
            kwargs["rt"] = Runtime(state if state is not None else CliState())
        return run_guarded(lambda: call(kwargs))

    wrapper.__signature__ = inspect.Signature([*params, *_GLOBALS])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


# --- help: exit codes --------------------------------------------------------------------------------


def exit_codes(*codes: ExitCode) -> str:
    """The ``--help`` epilog listing the exit codes a command can return (2 and 130 always can)."""
    every = sorted({ExitCode.OK, *codes, ExitCode.USAGE, ExitCode.INTERRUPTED})
    # "\b" keeps click from re-wrapping the lines into one paragraph.
    return "Exit codes:\n\n\b\n" + "\n".join(f"  {int(c):>3}  {EXIT_CODE_MEANINGS[c]}" for c in every)


# --- errors and output -------------------------------------------------------------------------------


def run_guarded(call: Callable[[], Any]) -> Any:
    """Run a command body; the only place a VezaError becomes an exit code."""
    try:
        result = call()
    except VezaError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err("interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        raise typer.Exit(result)
    return result


def fail(exc: VezaError) -> None:
    err(exc.message)
    if exc.hint:
        from veza_canary.log import redact_text

        sys.stderr.write(f"  hint: {redact_text(exc.hint)}\n")
    raise typer.Exit(int(exc.exit_code)) from None


def err(line: str) -> None:
    """One error line on stderr, secrets redacted."""
    from veza_canary.log import redact_text

    sys.stderr.write(f"veza-canary: error: {redact_text(line)}\n")
    sys.stderr.flush()


def note(line: str) -> None:
    """A note for the on-call on stderr (not an error), secrets redacted."""
    from veza_canary.log import redact_text

    sys.stderr.write(f"veza-canary: {redact_text(line)}\n")
    sys.stderr.flush()


def out(line: str = "") -> None:
    """One line of the command's output, secrets redacted (every line leaving the process goes through here)."""
    from veza_canary.log import redact_text

    sys.stdout.write(redact_text(line) + "\n")
    sys.stdout.flush()


def command_line() -> str:
    import shlex

    return shlex.join(["veza-canary", *sys.argv[1:]])


# --- which knobs each command takes as options (every knob still comes from env and config) -------------


def group(*names: str) -> tuple[str, ...]:
    """The knobs of settings groups (``"ssh"``, ``"sli"``, ...): a knob added to a group reaches its commands."""
    from veza_canary.settings import KNOBS

    return tuple(k.name for k in KNOBS if k.group in names)


#: Reaching Incus (locally or over SSH).
INCUS = group("ssh")
#: The HAProxy runtime API, and the state store beside it (lock, blocked releases, history).
HAPROXY = (*group("haproxy"), *INCUS, "state_dir")
#: The nodes and their service.
NODES = (*group("pool", "service"), "http_timeout")
#: Prometheus and the SLI.
SLI = (*group("prometheus", "sli"), "http_timeout")
#: SLI knobs of the watch loop only (a single probe does not use them).
WATCH_ONLY = ("sli_window", "sli_probe_interval", "sli_max_nodata", "sli_max_errors", "sli_hold_limit")
#: The drain, health and UP waits.
WAITS = group("timeouts")


def knobs(*groups: tuple[str, ...], without: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The union of knob groups minus ``without``, in the settings' declaration order (``--help``'s order)."""
    from veza_canary.settings import KNOBS

    wanted = {n for g in groups for n in g} - set(without)
    unknown = wanted - set(KNOBS_BY_NAME)
    if unknown:
        raise ValueError(f"unknown knob(s): {sorted(unknown)}")  # programming error
    return tuple(k.name for k in KNOBS if k.name in wanted)
