"""Rendering a LintResult: text (file:line:col), JSON, GitHub workflow annotations, SARIF 2.1.0."""

from __future__ import annotations

import json
from typing import Any

from veza_canary.migrations.engine import LintResult
from veza_canary.migrations.rules import Finding, load_rules

FORMATS = ("text", "json", "github", "sarif")


def render(result: LintResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2, sort_keys=False)
    if fmt == "github":
        return render_github(result)
    if fmt == "sarif":
        return json.dumps(render_sarif(result), indent=2)
    return render_text(result)


def _label(f: Finding) -> str:
    if f.suppressed is not None:
        return "allowed"
    return "error" if f.severity == "block" else "warning"


def render_text(result: LintResult) -> str:
    """One line per finding with its statement; a rule's why/instead text once, at its first finding."""
    lines: list[str] = []
    explained: set[str] = set()
    for f in result.findings:
        lines.append(f"{f.path}:{f.line}:{f.col}: {_label(f)} {f.code} {f.name}: {f.message}")
        if f.suppressed is not None:
            lines.append(f"    allowed because {f.suppressed}")
            continue
        if f.snippet:
            lines.append(f"    statement: {f.snippet}")
        if f.code in explained:
            continue
        explained.add(f.code)
        if f.why:
            lines.append(f"    why: {f.why}")
        if f.fix:
            lines.append(f"    instead: {f.fix}")
    for n in result.notes:
        lines.append(f"note: {n}")
    if result.bypassed:
        lines.append("!!! FORCE_MIGRATE=1: the blocking findings above are IGNORED; "
                     "the old binary may break when this migration runs !!!")
    lines.append(result.summary())
    return "\n".join(lines)


def _gh_escape(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        s = s.replace(":", "%3A").replace(",", "%2C")
    return s


def render_github(result: LintResult) -> str:
    lines = []
    for f in result.findings:
        if f.suppressed is not None:
            continue
        level = "error" if f.severity == "block" else "warning"
        title = _gh_escape(f"{f.code} {f.name}", prop=True)
        msg = _gh_escape(f"{f.message}\nWhy: {f.why}\nInstead: {f.fix}")
        lines.append(f"::{level} file={_gh_escape(f.path, True)},line={f.line},col={f.col},title={title}::{msg}")
    lines.append(result.summary())
    return "\n".join(lines)


def render_sarif(result: LintResult) -> dict[str, Any]:
    from veza_canary import __version__

    registry = load_rules()
    used = sorted({f.code for f in result.findings})
    rules = []
    for code in used:
        r = registry[code]
        rules.append({
            "id": code,
            "name": r.name,
            "shortDescription": {"text": r.summary()},
            "fullDescription": {"text": r.why() or r.summary()},
            "help": {"text": r.doc()},
            "defaultConfiguration": {"level": "error" if r.severity == "block" else "warning"},
        })
    index = {c: i for i, c in enumerate(used)}
    results = []
    for f in result.findings:
        res: dict[str, Any] = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": "error" if f.severity == "block" else "warning",
            "message": {"text": f"{f.message}. Why: {f.why} Instead: {f.fix}"},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": f.path},
                "region": {"startLine": f.line, "startColumn": f.col},
            }}],
        }
        if f.suppressed is not None:
            res["suppressions"] = [{"kind": "inSource", "justification": f.suppressed}]
        results.append(res)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "veza-canary lint-migrations", "version": __version__, "rules": rules}},
            "results": results,
        }],
    }


def explain(code_or_name: str) -> str | None:
    from veza_canary.migrations.rules import resolve

    code = resolve(code_or_name)
    if code is None:
        return None
    r = load_rules()[code]
    dialects = ", ".join(r.dialects)
    return f"{code} {r.name} (default severity: {r.severity}; dialects: {dialects})\n\n{r.doc()}\n"


def list_rules() -> str:
    reg = load_rules()
    return "\n".join(f"{c}  {r.severity:<5}  {r.name:<38} {r.summary()}" for c, r in sorted(reg.items()))


def rules_markdown() -> str:
    """The rule reference of docs/lint-rules.md (between its BEGIN/END RULES markers)."""
    import textwrap

    reg = load_rules()
    out = ["| code | name | severity | dialects | summary |", "| --- | --- | --- | --- | --- |"]
    for c, r in sorted(reg.items()):
        out.append(f"| [{c}](#{c.lower()}-{r.name}) | `{r.name}` | {r.severity} | {', '.join(r.dialects)} "
                   f"| {r.summary()} |")
    for c, r in sorted(reg.items()):
        doc = r.doc()
        summary, _, rest = doc.partition("\n")
        out += ["", f"### {c} {r.name}", "", f"*{r.severity}* -- {summary.strip()}", ""]
        for block in textwrap.dedent(rest).strip().split("\n\n"):
            lines = block.splitlines()
            if lines and lines[0].rstrip().endswith(":") and not lines[0].startswith(" "):
                head, body = lines[0].rstrip(), textwrap.dedent("\n".join(lines[1:]))
                out.append(f"**{head}**")
                out.append("")
                if head.startswith("Anti-pattern"):
                    out += ["```sql", body.strip(), "```"]
                else:
                    out.append(" ".join(body.split()))
            else:
                out.append(" ".join(block.split()))
            out.append("")
    return "\n".join(out).rstrip() + "\n"
