"""CLI: ``veza-canary acceptance`` -- the staging acceptance job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from veza_canary.cli._common import exit_codes, guarded, out
from veza_canary.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("acceptance", epilog=exit_codes(ExitCode.INFRA, ExitCode.CHECK_FAILED), help="The runbook's acceptance bar against the current environment: two normal "
                                   "deploys, a deliberate rollback (health 500) and an SLI-breach rollback.")(
        acceptance)


@guarded
def acceptance(
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write a JUnit XML report here."),  # noqa: UP045
    reports_dir: Path = typer.Option(Path("reports/acceptance"), "--reports-dir",
                                     help="Keep each scenario's JSON deploy report here."),
    builds_dir: Optional[Path] = typer.Option(None, "--builds-dir",  # noqa: UP045
                                              help="Where lab builds are written (default: inside reports-dir)."),
    build_next: Optional[Path] = typer.Option(None, "--build-next", help="Build N+1 (staging)."),  # noqa: UP045
    build_bad: Optional[Path] = typer.Option(None, "--build-bad", help="A build whose health returns 500."),  # noqa: UP045
    build_next2: Optional[Path] = typer.Option(None, "--build-next2", help="Build N+2 (staging)."),  # noqa: UP045
    build_slo: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--build-slo", help="A healthy build that breaches the SLI under traffic (staging)."),
    sli_window: Optional[str] = typer.Option(  # noqa: UP045
        None, "--sli-window", metavar="DURATION", show_default="SLI_WINDOW",
        help="SLI window for the job's deploys: 9, 9s, 5m (short values imply --allow-short-window)."),
    sli_probe_interval: Optional[str] = typer.Option(  # noqa: UP045
        None, "--sli-probe-interval", metavar="DURATION", show_default="SLI_PROBE_INTERVAL",
        help="SLI probe interval of the job's deploys."),
) -> int:
    """Run the four scenarios; exit 0 only when every one passed (else 11)."""
    from veza_canary.acceptance import AcceptanceFailed, Builds, baseline_binary, junit_xml, run_acceptance
    from veza_canary.errors import ConfigError
    from veza_canary.settings import parse_duration

    env = dict(os.environ)
    for flag, value, var in (("--sli-window", sli_window, "SLI_WINDOW"),
                             ("--sli-probe-interval", sli_probe_interval, "SLI_PROBE_INTERVAL")):
        if value:
            try:
                env[var] = f"{parse_duration(value):g}"  # the one duration parser; the deploys check the range
            except ValueError as exc:
                raise ConfigError(flag, str(exc)) from None
    if sli_window:
        env["ALLOW_SHORT_SLI_WINDOW"] = "1"
    given = [build_next, build_bad, build_next2, build_slo]
    if any(given) and not all(given):
        raise ConfigError("--build-*", "give all four builds (staging), or none (lab builds)")
    reports_dir.mkdir(parents=True, exist_ok=True)
    if all(given):
        builds = Builds(*given)  # type: ignore[arg-type]
    else:
        builds = Builds.for_lab(builds_dir or reports_dir / "builds")
    results = run_acceptance(env, builds, reports_dir, baseline=baseline_binary(env, reports_dir))
    for r in results:
        out(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<42} exit {r.exit_code} (expected {r.expected_exit})  "
            f"{r.duration:6.1f}s" + ("" if r.ok else "  " + "; ".join(r.problems)))
    if junit:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(results))
        out(f"junit: {junit}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise AcceptanceFailed(f"acceptance failed: {', '.join(failed)}")
    out(f"acceptance passed: {len(results)} scenarios")
    return 0
