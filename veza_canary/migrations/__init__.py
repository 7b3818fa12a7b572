"""Migration backward-compat linter: can the old binary still work once a migration has run?

Public API::

    from veza_canary.migrations import deploy_gate, lint, LintResult, Finding

    result = deploy_gate(settings, repo_root)   # step 1 of a deploy
    result.files, result.findings, result.blocking, result.bypassed
    result.summary(), result.to_dict()

Importing this package is cheap: sqlglot is imported only when files are analysed.
See docs/lint-rules.md for the rules and the decisions behind them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veza_canary.migrations.engine import LintResult
    from veza_canary.migrations.rules import Finding
    from veza_canary.settings import Settings

__all__ = ["deploy_gate", "lint", "lint_config", "LintResult", "Finding"]


def __getattr__(name: str) -> Any:
    if name == "LintResult":
        from veza_canary.migrations.engine import LintResult

        return LintResult
    if name == "Finding":
        from veza_canary.migrations.rules import Finding

        return Finding
    raise AttributeError(name)


#: ``jobs`` is accepted and ignored (the lint parses in one process); ``no_migrations = true`` says the
#: repository has no migrations, so a deploy does not require the migrations directory.
_LINT_KEYS = {"severity", "format", "cache", "jobs", "no_migrations"}


def lint_config(config_path: Path | None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``[lint]`` table of the TOML config (same file lookup as the settings); {} when absent."""
    import os

    from veza_canary.errors import ConfigError
    from veza_canary.settings import find_config, read_config_file

    path = find_config(config_path, os.environ if env is None else env)
    if path is None:
        return {}
    table = read_config_file(path).get("lint", {})
    if not isinstance(table, dict):
        raise ConfigError("lint", f"{path}: [lint] must be a table")
    unknown = sorted(set(table) - _LINT_KEYS)
    if unknown:
        raise ConfigError("lint", f"{path}: unknown key(s) in [lint]: {', '.join(unknown)}")
    sev = table.get("severity", {})
    if not isinstance(sev, dict):
        raise ConfigError("lint.severity", f"{path}: must be a table of rule = \"block\"|\"warn\"|\"off\"")
    return table


def lint(
    *,
    directory: Path,
    paths: Sequence[Path] = (),
    since: str | None = "origin/main",
    all_files: bool = False,
    dialect: str = "postgres",
    severities: Mapping[str, str] | None = None,
    force: bool = False,
    cache: bool = True,
    repo_root: Path | None = None,
    require_dir: bool = True,
) -> LintResult:
    """Select files (explicit paths, ``--all``, or new since the merge base with ``since``) and lint them.

    History is every other ``*.up.sql`` in ``directory``. A missing directory raises
    LintInputError when ``require_dir``; otherwise it means nothing to lint.
    """
    from veza_canary.errors import LintInputError
    from veza_canary.log import get_logger
    from veza_canary.migrations import engine, gitsel

    log = get_logger(__name__)
    opts = engine.LintOptions(dialect=dialect, severities=dict(severities or {}), force=force, cache=cache)
    root = repo_root or Path.cwd()
    directory = directory if directory.is_absolute() else root / directory
    dir_exists = directory.is_dir()
    if not dir_exists and (require_dir or all_files) and not paths:
        raise LintInputError(f"{directory}: migrations directory does not exist")
    if not dir_exists and require_dir and paths:
        raise LintInputError(f"{directory}: migrations directory does not exist")
    if not dir_exists and not paths:
        log.info("lint.no_migrations_dir", dir=str(directory), outcome="nothing to lint")
        return engine.LintResult([], [], notes=[f"{directory}: no migrations directory; nothing to lint"],
                                 dialect=dialect)
    everything = engine.up_files(directory) if dir_exists else []
    if paths:
        new = []
        for p in paths:
            p = p if p.is_absolute() else Path.cwd() / p
            if p.is_dir():
                raise LintInputError(f"{p}: is a directory; pass files, or use --dir with --all/--since")
            engine.check_regular(p)
            if p.name.endswith(".down.sql"):
                continue
            new.append(p)
        return engine.run(new, everything, opts, root=root, listed=everything)
    if all_files:
        return engine.run(everything, [], opts, each_own_set=True, root=root, listed=everything)
    sel = gitsel.select_new(root, directory, since or "origin/main")
    log.debug("lint.selected", base=sel.base, new=[str(p) for p in sel.new])
    return engine.run(sel.new, everything, opts, modified=sel.modified, root=root, listed=everything)


def deploy_gate(settings: Settings, repo_root: Path, *, config_path: Path | None = None) -> LintResult:
    """Step 1 of a deploy: lint the migrations new since ``settings.migrations.since``.

    Uses ``settings.migrations`` (``dir`` relative to ``repo_root``, ``since``, ``dialect``,
    ``force``); rule severities and the cache come from the ``[lint]`` table of the config
    file ``config_path`` (pass the deploy's ``--config``; None: the usual lookup).

    Fails closed: a migrations directory that was configured (flag, env or config file)
    and is missing raises LintInputError, unless ``[lint] no_migrations = true``; so does
    a migration "file" that is not a regular file. Only the default directory may be
    absent (nothing to lint). Raises LintInputError for input it cannot read or parse;
    never raises for blocking findings (``result.blocking``, ``result.bypassed``).
    """
    from veza_canary.errors import ConfigError

    cfg = lint_config(config_path)
    m = settings.migrations
    no_migrations = cfg.get("no_migrations", False)
    if not isinstance(no_migrations, bool):
        raise ConfigError("lint.no_migrations", "must be true or false")
    if no_migrations:
        from veza_canary.migrations.engine import LintResult

        return LintResult([], [], notes=["[lint] no_migrations = true: the migration gate has nothing to check"],
                          dialect=m.dialect)
    configured = settings.sources.get("migrations_dir", "default") != "default"
    return lint(
        directory=Path(m.dir),
        since=m.since,
        dialect=m.dialect,
        severities=cfg.get("severity", {}),
        force=m.force,
        cache=bool(cfg.get("cache", True)),
        repo_root=repo_root,
        require_dir=configured,
    )
