"""The veza-canary command line: a thin layer over the library.

Each module registers its commands on the root app; a command parses its
options, builds ``Settings``, calls the library and lets ``_common`` map errors
to exit codes. Heavy imports (paramiko, sqlglot, rich) happen inside commands.
"""

from __future__ import annotations

from typing import Optional

import typer

from veza_canary import __version__

#: The command modules, each with ``register(app)``, in the order ``--help`` lists their commands.
_MODULES = ("deploy", "lint", "oncall", "lab", "acceptance")


def build_app() -> typer.Typer:
    """The root app with every command module's commands."""
    import importlib

    app = typer.Typer(
        name="veza-canary",
        help="Canary releases of backend-api behind HAProxy: drain, push, watch the SLI, roll back by itself.",
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )
    app.callback()(root)
    for name in _MODULES:
        importlib.import_module(f"veza_canary.cli.{name}").register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    """``veza_canary.cli.app``: the whole CLI, built on first use."""
    if name == "app":
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(name)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"veza-canary {__version__}")
        raise typer.Exit(0)


def root(
    ctx: typer.Context,
    version: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    log_format: Optional[str] = typer.Option(  # noqa: UP045
        None, "--log-format", help="console or json (default: console on a TTY, JSON otherwise).",
        metavar="console|json",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (every command run)."),
) -> None:
    """Canary releases of backend-api behind HAProxy."""
    from veza_canary.log import clear_deferred, defer_configure

    if log_format not in (None, "console", "json"):
        raise typer.BadParameter("must be console or json", param_hint="--log-format")
    defer_configure(log_format, verbose=verbose)
    ctx.call_on_close(clear_deferred)


def main() -> None:
    """The console script (``veza-canary``)."""
    build_app()()
