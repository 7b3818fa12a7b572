"""No shell anywhere in veza_canary/: a static check of the source with ``ast``.

Commands are argv lists; a command line string is only ever built by
``shlex.join(argv)`` for SSH's exec request. The check fails on:

- ``shell=<anything but False>`` in any call;
- ``os.system``, ``os.popen``, ``subprocess.getoutput``/``getstatusoutput``,
  ``asyncio.create_subprocess_shell`` (they always go through a shell);
- a ``subprocess.*`` call whose command (first argument or ``args=``) is a string
  built by ``+``, ``%``, an f-string or ``.format()``, or a literal with blanks in it;
- ``exec_command(x)`` unless ``x`` is ``shlex.join(...)`` or a name whose every
  assignment in the same function is ``shlex.join(...)``.

The rules are tested on snippets first, so a checker that finds nothing is a
failing test, not a silent pass.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "veza_canary"

ALWAYS_SHELL = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
                "asyncio.create_subprocess_shell"}
SHLEX_JOIN = "shlex.join"


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    exec_commands_checked: int = 0


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name, from every import in the module (``import subprocess as sp`` ...)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _qualified(func: ast.expr, imports: dict[str, str]) -> str:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""
    parts.append(imports.get(func.id, func.id))
    return ".".join(reversed(parts))


def _is_built_string(node: ast.expr) -> bool:
    """A str made at run time from pieces: f-string, +, %, .format()."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return any(_is_stringish(x) for x in (node.left, node.right))
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def _is_stringish(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or _is_built_string(node)


def _is_shlex_join(node: ast.expr, imports: dict[str, str]) -> bool:
    return isinstance(node, ast.Call) and _qualified(node.func, imports) == SHLEX_JOIN


def _assignments(scope: ast.AST, name: str) -> list[ast.expr | None]:
    """Every value bound to ``name`` in ``scope`` (None: bound some other way, e.g. a parameter or +=).

    Nested functions are included: stricter than Python's scoping, never looser.
    """
    def names_in(target: ast.AST | None) -> set[str]:
        return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)} if target is not None else set()

    values: list[ast.expr | None] = []
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        a = scope.args
        if name in {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if p}:
            values.append(None)
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    values.append(node.value)
                elif name in names_in(target):
                    values.append(None)  # unpacking: not a plain shlex.join result
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and name in names_in(node.target):
            values.append(node.value)
        elif isinstance(node, ast.AugAssign) and name in names_in(node.target):
            values.append(None)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension) and name in names_in(node.target):
            values.append(None)
        elif isinstance(node, ast.With | ast.AsyncWith) and any(name in names_in(i.optional_vars) for i in node.items):
            values.append(None)
    return values


def check_source(source: str, filename: str = "<snippet>") -> Report:
    tree = ast.parse(source, filename)
    imports = _imports(tree)
    report = Report()
    # Enclosing function of every node, for the exec_command data-flow rule.
    scope_of: dict[ast.AST, ast.AST] = {}

    def index(node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            scope_of[child] = scope
            index(child, child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) else scope)

    index(tree, tree)

    def problem(node: ast.AST, text: str) -> None:
        report.problems.append(f"{filename}:{getattr(node, 'lineno', 0)}: {text}")

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, imports)
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                problem(node, f"{name or 'call'}(shell=...) runs a shell")
        if name in ALWAYS_SHELL:
            problem(node, f"{name}() always runs a shell; use an argv list")
        if name.startswith("subprocess.") or name.startswith("asyncio.create_subprocess"):
            command = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            if command is not None and _is_built_string(command):
                problem(node, f"{name}() gets a command string built from pieces; pass an argv list")
            elif isinstance(command, ast.Constant) and isinstance(command.value, str) and any(
                    c.isspace() for c in command.value):
                problem(node, f"{name}({command.value!r}) is a command line, not a program; pass an argv list")
        is_exec = (isinstance(node.func, ast.Attribute) and node.func.attr == "exec_command") or (
            isinstance(node.func, ast.Name) and node.func.id == "exec_command")
        if is_exec:
            report.exec_commands_checked += 1
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "command"), None)
            if arg is None:
                problem(node, "exec_command() without a command")
            elif _is_shlex_join(arg, imports):
                pass
            elif isinstance(arg, ast.Name):
                values = _assignments(scope_of[node], arg.id)
                if not values or not all(v is not None and _is_shlex_join(v, imports) for v in values):
                    problem(node, f"exec_command({arg.id}): {arg.id} must be assigned only from shlex.join(argv) "
                                  "in the same function")
            else:
                problem(node, "exec_command() argument must be shlex.join(argv) or a name assigned from it")
    return report


# -- the rules, on snippets ------------------------------------------------------------

BAD = {
    "shell_true": "import subprocess\nsubprocess.run(cmd, shell=True)\n",
    "shell_truthy_name": "import subprocess\nsubprocess.Popen(['x'], shell=flag)\n",
    "shell_anywhere": "def f(run):\n    run('x', shell=True)\n",
    "os_system": "import os\nos.system('ls')\n",
    "os_popen": "import os\nos.popen('ls').read()\n",
    "from_os_import_system": "from os import system as sy\nsy('ls')\n",
    "getoutput": "import subprocess\nsubprocess.getoutput('ls')\n",
    "subprocess_fstring": "import subprocess\nsubprocess.run(f'rm {path}')\n",
    "subprocess_concat": "import subprocess\nsubprocess.check_call('ls ' + d)\n",
    "subprocess_percent": "import subprocess\nsubprocess.call('ls %s' % d)\n",
    "subprocess_format": "import subprocess\nsubprocess.check_output('ls {}'.format(d))\n",
    "subprocess_alias_kwarg": "import subprocess as sp\nsp.Popen(args=f'ls {d}')\n",
    "from_subprocess_import": "from subprocess import run\nrun('ls ' + d)\n",
    "subprocess_literal_command_line": "import subprocess\nsubprocess.run('systemctl restart x')\n",
    "exec_fstring": "def f(c, h):\n    c.exec_command(f'cat {h}')\n",
    "exec_concat": "def f(c, a):\n    c.exec_command('ls ' + a)\n",
    "exec_join_spaces": "def f(c, argv):\n    c.exec_command(' '.join(argv))\n",
    "exec_parameter": "def f(chan, command):\n    chan.exec_command(command)\n",
    "exec_name_not_from_join": "def f(c, argv):\n    cmd = ' '.join(argv)\n    c.exec_command(cmd)\n",
    "exec_name_reassigned": ("import shlex\ndef f(c, argv, x):\n    cmd = shlex.join(argv)\n"
                             "    cmd = cmd + x\n    c.exec_command(cmd)\n"),
    "exec_name_augmented": ("import shlex\ndef f(c, argv, x):\n    cmd = shlex.join(argv)\n"
                            "    cmd += '; rm -rf /'\n    c.exec_command(cmd)\n"),
    "exec_keyword": "def f(c, h):\n    c.exec_command(command='ls ' + h)\n",
    "exec_loop_var": "import shlex\ndef f(c, cmds):\n    for cmd in cmds:\n        c.exec_command(cmd)\n",
    "exec_with_var": "def f(c, o):\n    with o() as cmd:\n        c.exec_command(cmd)\n",
    "exec_unpacked": "import shlex\ndef f(c, a):\n    cmd, _ = shlex.join(a), 1\n    c.exec_command(cmd)\n",
    "exec_quote_only": "import shlex\ndef f(c, a):\n    c.exec_command('ls ' + shlex.quote(a))\n",
}

GOOD = {
    "argv_list": "import subprocess\nsubprocess.run(['ls', '-l', path], check=True)\n",
    "argv_tuple_var": "import subprocess\nsubprocess.Popen(argv, stdout=subprocess.PIPE)\n",
    "shell_false": "import subprocess\nsubprocess.run(['ls'], shell=False)\n",
    "program_name_literal": "import subprocess\nsubprocess.run('ls')\n",
    "exec_direct": "import shlex\ndef f(c, argv):\n    c.exec_command(shlex.join(argv))\n",
    "exec_via_name": "import shlex\ndef f(c, argv):\n    command = shlex.join(argv)\n    c.exec_command(command)\n",
    "exec_from_import": "from shlex import join\ndef f(c, argv):\n    c.exec_command(join(argv))\n",
    "exec_annotated": "import shlex\ndef f(c, argv):\n    cmd: str = shlex.join(argv)\n    c.exec_command(cmd)\n",
    "unrelated_system_method": "def f(platform):\n    return platform.system()\n",
    "os_path": "import os\nos.path.join('a', 'b')\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_checker_catches(name: str) -> None:
    assert check_source(BAD[name]).problems, f"{name} should be refused:\n{BAD[name]}"


@pytest.mark.parametrize("name", sorted(GOOD))
def test_checker_allows(name: str) -> None:
    assert check_source(GOOD[name]).problems == []


# -- the package --------------------------------------------------------------------


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_shell_in_the_package() -> None:
    files = _package_files()
    assert len(files) > 10, f"found only {len(files)} files under {PACKAGE}"
    problems: list[str] = []
    exec_calls = 0
    for path in files:
        report = check_source(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
        problems += report.problems
        exec_calls += report.exec_commands_checked
    assert problems == [], "shell use found:\n" + "\n".join(problems)
    # The SSH transport's exec_command was seen and judged, so the rule is live.
    assert exec_calls >= 1
