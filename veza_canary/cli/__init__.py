"""The veza-canary command line: a thin layer over the library.

One module per command group, each with ``register(app)``: a group with subcommands
(``haproxy``, ``sli``, ``lab``) is a Typer sub-app joined with ``add_typer``; a single
command is added as it is. A command parses its options, builds ``Settings`` (only
the knobs it uses are options), gets its fleet from the factory the app was built
with, calls one library function and lets ``_common`` map errors to exit codes.
Heavy imports (paramiko, httpx, rich, sqlglot) happen inside commands.
"""

from __future__ import annotations

import importlib
from typing import Optional

import typer

from veza_canary import __version__
from veza_canary.cli._common import (
    CliState,
    Confirm,
    FleetFactory,
    LogFormat,
    apply_globals,
    exit_codes,
    guarded,
)
from veza_canary.errors import ExitCode

#: The command groups, each a module with ``register(app)``, in the order ``--help`` lists them.
GROUPS = ("deploy", "status", "rollback", "unlock", "health", "haproxy", "sli", "history", "lab", "acceptance")


def build_app(fleet_factory: FleetFactory | None = None, *, confirm: Confirm | None = None) -> typer.Typer:
    """The root app with every command group.

    ``fleet_factory(settings) -> Fleet`` is where every command gets its fleet (default: the real
    ``veza_canary.fleet.build_fleet``); tests pass one that builds a simulated fleet. ``confirm(question)``
    replaces the question asked on a TTY before a change (default: typer.confirm; ``--yes`` skips it).
    """
    app = typer.Typer(
        name="veza-canary",
        help="Canary releases of backend-api behind HAProxy: drain, push, watch the SLI, roll back by itself.",
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"obj": CliState(fleet_factory=fleet_factory, confirm=confirm)},
    )
    app.callback(epilog=exit_codes(*ExitCode))(root)
    for name in GROUPS[:1]:
        importlib.import_module(f"veza_canary.cli.{name}").register(app)
    _register_lint(app)
    for name in GROUPS[1:]:
        importlib.import_module(f"veza_canary.cli.{name}").register(app)
    return app


def _register_lint(app: typer.Typer) -> None:
    """``lint-migrations`` (cli/lint.py, owned by the linter), with the global options every command has."""
    from veza_canary.cli.lint import lint_migrations

    app.command("lint-migrations", help="Check that new migrations cannot break the old binary during a canary.",
                epilog=exit_codes(ExitCode.LINT_BLOCKED, ExitCode.LINT_INPUT))(guarded(lint_migrations))


def __getattr__(name: str) -> typer.Typer:
    """``veza_canary.cli.app``: the whole CLI with the real fleet, built on first use."""
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
    log_format: Optional[LogFormat] = typer.Option(  # noqa: UP045
        None, "--log-format", help="Log lines as console or json (default: console on a TTY, JSON otherwise).",
        show_default=False,
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (every command run)."),
) -> None:
    """Canary releases of backend-api behind HAProxy."""
    apply_globals(ctx, log_format, verbose)


def main() -> None:
    """The console script (``veza-canary``)."""
    build_app()()
