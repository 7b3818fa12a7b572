"""Glue between the CLI and the pipeline: build the fleet, run, write reports, print the end state.

Kept out of cli/ so the acceptance job and tests call exactly what ``deploy`` calls.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from veza_canary.artifact import private_workdir, remove_stale_workdirs
from veza_canary.errors import VezaError
from veza_canary.fleet import Fleet, build_fleet
from veza_canary.log import get_logger
from veza_canary.pipeline import Deploy, summary_lines
from veza_canary.report import Report
from veza_canary.settings import Settings

if TYPE_CHECKING:
    from veza_canary.liveview import Observer

log = get_logger(__name__)


def run_deploy(
    settings: Settings,
    *,
    force: bool = False,
    confirm: Callable[[str], bool] | None = None,
    report_path: Path | None = None,
    command_line: str = "veza-canary deploy",
    fleet: Fleet | None = None,
    stream=None,
    observer: Observer | None = None,
) -> int:
    """Run one deploy; always write the report; print the end state. Returns 0 or raises VezaError."""
    stream = stream or sys.stdout
    fleet = fleet or build_fleet(settings)
    report = Report(command="deploy")
    for stale in remove_stale_workdirs():  # a SIGKILLed run cannot clean up after itself
        log.info("workdir.stale_removed", path=str(stale))
    workdir = private_workdir()
    error: VezaError | None = None
    try:
        Deploy(fleet, workdir=workdir, force=force, confirm=confirm, report=report,
               command_line=command_line, observer=observer).run()
    except VezaError as exc:
        error = exc
        if report.exit_code is None:  # failed before the pipeline could record it (bad settings)
            report.outcome, report.exit_code, report.message = type(exc).__name__, int(exc.exit_code), exc.message
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        fleet.close()
        for path in write_reports(report, settings, report_path):
            log.info("report.written", path=str(path))
    for line in summary_lines(report):
        stream.write(line + "\n")
    stream.flush()
    if error is not None:
        raise error
    return 0


def write_reports(report: Report, settings: Settings, extra: Path | None) -> list[Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    paths = [settings.resolved_state_dir / "reports" / f"{report.command}-{stamp}.json"]
    if extra is not None:
        paths.append(extra)
    written = []
    for p in paths:
        try:
            report.write(p)
            written.append(p)
        except OSError as exc:
            log.error("report.write_failed", path=str(p), error=exc.strerror)
    return written
