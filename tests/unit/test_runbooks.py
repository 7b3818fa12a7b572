"""The runbooks say what the code does: every command in them parses, every knob and exit code is there.

Each ``veza-canary`` command in a ```bash block is parsed by the real CLI (Typer's own parser, the
command body does not run), so an unknown flag, a missing argument or a renamed command fails here.
``tests/integration/test_oncall_lab.py`` runs the read-only ones against the lab.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer._click.core import Command as CliCommand
from typer._click.core import Context  # Typer 0.29 vendors a trimmed click
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from veza_canary.cli import app
from veza_canary.errors import EXIT_CODE_MEANINGS, ExitCode
from veza_canary.settings import KNOBS

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
OWNED = ("CANARY_RELEASE.md", "INCIDENT_RESPONSE.md")
_OPERATORS = {"|", "||", "&&", ";", "&"}
_REDIRECTS = {">", ">>", "<", "2>", "2>&1", "&>"}
#: Env vars a runbook command may set besides the knobs.
_OTHER_ENV = {"VEZA_CANARY_CONFIG", "STAGING"}


@dataclass(frozen=True)
class Command:
    doc: str
    line: str  # as written (continuations joined)
    env: dict[str, str]
    argv: list[str]  # the program and its arguments, redirections removed


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def commands_in(doc: str) -> list[Command]:
    """Every simple command of every ```bash block of ``doc``."""
    out = []
    for block in bash_blocks((RUNBOOKS / doc).read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            lex = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
            lex.whitespace_split = True
            lex.commenters = "#"
            tokens = list(lex)
            for seg in _segments(tokens):
                env = {}
                while seg and re.match(r"^[A-Z_][A-Z0-9_]*=", seg[0]):
                    k, _, v = seg.pop(0).partition("=")
                    env[k] = v
                if seg:
                    out.append(Command(doc, line.strip(), env, seg))
    return out


def _segments(tokens: list[str]) -> list[list[str]]:
    segs: list[list[str]] = [[]]
    skip = False
    for t in tokens:
        if skip:
            skip = False
            continue
        if t in _OPERATORS:
            segs.append([])
        elif t in _REDIRECTS or re.fullmatch(r"\d?>{1,2}", t):
            skip = True  # the redirection's target
        else:
            segs[-1].append(t)
    return [s for s in segs if s]


def runbook_commands() -> list[Command]:
    return [c for doc in OWNED for c in commands_in(doc)]


def veza_commands() -> list[Command]:
    return [c for c in runbook_commands() if c.argv[0] == "veza-canary"]


def parse(argv: list[str]) -> tuple[list[str], Context]:
    """Parse ``veza-canary ARGS`` with click's own parser (no command body runs); return (command path, context)."""
    cmd: CliCommand = typer.main.get_command(app)
    ctx = cmd.make_context("veza-canary", list(argv[1:]))
    path: list[str] = []
    while isinstance(cmd, TyperGroup):
        rest = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") else [*ctx.protected_args,
                                                                                            *ctx.args]
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name, f"no command in {argv}"
        path.append(name)
        cmd = sub
        ctx = sub.make_context(name, rest, parent=ctx)
    return path, ctx


def ids(cmds: list[Command]) -> list[str]:
    return [f"{c.doc}:{c.line[:60]}" for c in cmds]


def test_the_runbooks_exist_and_link_each_other_and_the_lab():
    cr = (RUNBOOKS / "CANARY_RELEASE.md").read_text()
    ir = (RUNBOOKS / "INCIDENT_RESPONSE.md").read_text()
    assert "(INCIDENT_RESPONSE.md)" in cr and "(LAB.md)" in cr
    assert "(CANARY_RELEASE.md)" in ir and "(LAB.md)" in ir
    assert (RUNBOOKS / "LAB.md").is_file()


def test_the_runbooks_have_commands():
    assert len(veza_commands()) >= 25


@pytest.mark.parametrize("cmd", veza_commands(), ids=ids(veza_commands()))
def test_every_veza_canary_command_in_the_runbooks_parses(cmd: Command):
    try:
        path, _ctx = parse(cmd.argv)
    except UsageError as exc:
        pytest.fail(f"{cmd.doc}: `{cmd.line}` does not parse: {exc.format_message()}")
    assert path, cmd.line


@pytest.mark.parametrize("cmd", [c for c in runbook_commands() if c.env], ids=ids([c for c in runbook_commands()
                                                                                    if c.env]))
def test_env_assignments_in_the_runbooks_are_knobs(cmd: Command):
    known = {k.env for k in KNOBS} | _OTHER_ENV
    assert set(cmd.env) <= known, f"unknown env var(s) {set(cmd.env) - known} in `{cmd.line}`"


def test_make_targets_and_scripts_the_runbooks_call_exist():
    makefile = (ROOT / "Makefile").read_text()
    for c in runbook_commands():
        if c.argv[0] == "make":
            for target in (a for a in c.argv[1:] if "=" not in a and not a.startswith("-")):
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"no make target {target}"
            assert all(a.split("=")[0] in {k.env for k in KNOBS} for a in c.argv[1:] if "=" in a)
        if c.argv[0] == "bash":
            assert (ROOT / c.argv[1]).is_file(), c.argv[1]


def test_every_knob_is_in_the_canary_runbook_with_its_default():
    text = (RUNBOOKS / "CANARY_RELEASE.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([A-Z0-9_]+)` \|.*$", text, flags=re.M)}
    for k in KNOBS:
        assert k.env in rows, f"{k.env} missing from the knob table"
        assert f"| `{k.flag}` |" in rows[k.env], f"{k.env}: flag {k.flag} not in its row"
        assert f"| `{k.shown_default}` |" in rows[k.env], f"{k.env}: default {k.shown_default} not in its row"


def test_every_exit_code_is_in_the_canary_runbook_with_its_meaning():
    text = (RUNBOOKS / "CANARY_RELEASE.md").read_text()
    for code in ExitCode:
        m = re.search(rf"^\| {int(code)} \| (.*) \|$", text, flags=re.M)
        assert m, f"exit code {int(code)} missing"
        assert m.group(1).startswith(EXIT_CODE_MEANINGS[code]), f"exit code {int(code)}: {m.group(1)!r}"


def test_the_incident_exit_codes_are_real_codes():
    text = (RUNBOOKS / "INCIDENT_RESPONSE.md").read_text()
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", text, flags=re.M)]
    assert codes and set(codes) <= {int(c) for c in ExitCode}


def test_the_parser_catches_a_wrong_flag():
    with pytest.raises(UsageError):
        parse(["veza-canary", "rollback", "--nodez", "all"])
    with pytest.raises(UsageError):
        parse(["veza-canary", "haproxy", "drain"])  # NODE is missing
    assert parse(["veza-canary", "--log-format", "json", "haproxy", "drain", "backend-api-1", "--wait"])[0] == [
        "haproxy", "drain"]
