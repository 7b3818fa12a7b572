"""CLI: lint commands.

``lint-migrations`` is thin: build settings (flag > env > config > default), read
the ``[lint]`` config table, call ``veza_canary.migrations.lint``, print, and map
the outcome to an exit code (0 clean, 4 blocking findings, 12 could not run,
2 usage). sqlglot is imported only inside the command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from veza_canary.cli._common import _CONFIG_OPTION, err, out, run_guarded


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("lint-migrations")(lint_migrations)


def lint_migrations(
    paths: Optional[list[Path]] = typer.Argument(  # noqa: UP045 - Typer needs a runtime type
        None, help="Migration files to lint (default: *.up.sql added since the merge base with --since).",
        show_default=False,
    ),
    migrations_dir: Optional[str] = typer.Option(  # noqa: UP045
        None, "--dir", "--migrations-dir", help="Migrations directory (default: migrations) [env: MIGRATIONS_DIR]",
        show_default=False, metavar="DIR",
    ),
    since: Optional[str] = typer.Option(  # noqa: UP045
        None, "--since", "--migrations-since",
        help="Lint files added since the merge base with this ref (default: origin/main) [env: MIGRATIONS_SINCE]",
        show_default=False, metavar="REF",
    ),
    dialect: Optional[str] = typer.Option(  # noqa: UP045
        None, "--dialect", "--migrations-dialect", help="postgres (default) or mysql [env: MIGRATIONS_DIALECT]",
        show_default=False, metavar="postgres|mysql",
    ),
    force_migrate: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--force-migrate/--no-force-migrate",
        help="Report blocking findings but exit 0 (logged loudly) [env: FORCE_MIGRATE]", show_default=False,
    ),
    all_files: bool = typer.Option(False, "--all", help="Lint every *.up.sql, each against the files before it."),
    fmt: Optional[str] = typer.Option(  # noqa: UP045
        None, "--format", help="text (default), json, github or sarif.", show_default=False,
        metavar="text|json|github|sarif",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the analysis cache."),
    explain: Optional[str] = typer.Option(  # noqa: UP045
        None, "--explain", help="Print the documentation of a rule (code or name) and exit.", metavar="CODE",
        show_default=False,
    ),
    list_rules: bool = typer.Option(False, "--list-rules", help="List every rule and exit."),
    config: Optional[Path] = _CONFIG_OPTION,  # noqa: UP045
) -> None:
    """Check that new migrations cannot break the old binary during a canary."""

    def body() -> int:
        from veza_canary.errors import ConfigError, ExitCode, LintBlocked
        from veza_canary.settings import load_settings

        if list_rules or explain:
            from veza_canary.migrations.output import explain as explain_rule
            from veza_canary.migrations.output import list_rules as listing

            if list_rules:
                out(listing())
                return 0
            text = explain_rule(explain or "")
            if text is None:
                raise ConfigError("--explain", f"unknown rule {explain!r}", hint="see --list-rules")
            out(text)
            return 0

        from veza_canary.migrations import lint, lint_config
        from veza_canary.migrations.output import FORMATS, render

        settings = load_settings(
            {"migrations_dir": migrations_dir, "migrations_since": since, "migrations_dialect": dialect,
             "force_migrate": force_migrate},
            os.environ, config,
        )
        cfg = lint_config(config)
        form = fmt or cfg.get("format") or "text"
        if form not in FORMATS:
            raise ConfigError("--format", f"must be one of {', '.join(FORMATS)}, not {form!r}")
        if paths and all_files:
            raise ConfigError("--all", "cannot be combined with explicit files")
        result = lint(
            directory=Path(settings.migrations.dir),
            paths=list(paths or []),
            since=settings.migrations.since,
            all_files=all_files,
            dialect=settings.migrations.dialect,
            severities=cfg.get("severity", {}),
            force=settings.migrations.force,
            cache=not no_cache and bool(cfg.get("cache", True)),
            # An explicit --dir must exist; the default one may be absent when files are given.
            require_dir=settings.sources.get("migrations_dir") != "default" or not paths,
        )
        out(render(result, form))
        if result.bypassed:
            err(f"FORCE_MIGRATE=1: {len(result.blocking)} blocking finding(s) bypassed; "
                "the old binary may break when this migration runs")
            return int(ExitCode.OK)
        if result.blocking:
            raise LintBlocked(result.summary(), hint="see the findings above; veza-canary lint-migrations "
                                                     "--explain CODE documents each rule")
        return 0

    run_guarded(body)
