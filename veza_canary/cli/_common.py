"""What every command shares: knob options, settings, and the one place exit codes are made."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from veza_canary.errors import ExitCode, VezaError
from veza_canary.settings import KNOBS_BY_NAME, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

_CONFIG_OPTION = typer.Option(
    None, "--config", help="TOML config file (default: ./veza-canary.toml if present; env VEZA_CANARY_CONFIG).",
    show_default=False,
)


def with_knobs(*names: str) -> Callable[[F], F]:
    """Add a kebab-case option for each named knob, plus ``--config``.

    The decorated function receives ``settings: Settings`` (resolved flag > env >
    config > default) instead of the raw options; a bad value raises ConfigError
    before the function body runs.
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.name != "settings"]
        for n in names:
            k = KNOBS_BY_NAME[n]
            help_text = f"{k.help} [env: {k.env}]"
            if k.is_flag:
                opt = typer.Option(None, f"{k.flag}/--no-{k.flag[2:]}", help=help_text, show_default=False)
                ann: Any = Optional[bool]  # noqa: UP045 - Typer needs a runtime type here
            else:
                opt = typer.Option(None, k.flag, help=help_text, show_default=False, metavar="TEXT")
                ann = Optional[str]  # noqa: UP045
            params.append(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=_CONFIG_OPTION,
                                        annotation=Optional[Path]))  # noqa: UP045

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            flags = {n: kwargs.pop(n) for n in names}
            config = kwargs.pop("config")

            def build() -> Settings:
                return load_settings(flags, os.environ, config)

            return run_guarded(lambda: fn(settings=build(), **kwargs))

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def guarded(fn: F) -> F:
    """For commands without knobs: map VezaError to its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run_guarded(lambda: fn(*args, **kwargs))

    return wrapper  # type: ignore[return-value]


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
    from veza_canary.log import redact_text

    err(redact_text(exc.message))
    if exc.hint:
        sys.stderr.write(f"  hint: {redact_text(exc.hint)}\n")
    raise typer.Exit(int(exc.exit_code)) from None


def err(line: str) -> None:
    sys.stderr.write(f"veza-canary: error: {line}\n")
    sys.stderr.flush()


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
