"""Every rule, every dialect it supports: a failing and a passing SQL sample (cases/*.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from veza_canary.migrations.rules import load_rules

from .helpers import codes, lint_sql

CASES_DIR = Path(__file__).parent / "cases"
BASE = tomllib.loads((CASES_DIR / "base.toml").read_text())
CASES = tomllib.loads((CASES_DIR / "rules.toml").read_text())["case"]
ENGINE_ONLY = {"VC209"}  # reported from git, tested in test_gitsel.py


def _id(c: dict) -> str:
    return f"{c['rule']}-{c['dialect']}-{CASES.index(c)}"


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("sample", ["fail", "pass"])
def test_rule_case(tmp_path: Path, case: dict, sample: str) -> None:
    history = [case.get("history", BASE[case["dialect"]])]
    result = lint_sql(tmp_path, history, [case[sample]], case["dialect"])
    found = codes(result)
    if sample == "fail":
        assert case["rule"] in found, f"expected {case['rule']}, got {[(f.code, f.message) for f in result.findings]}"
    else:
        assert case["rule"] not in found, [(f.code, f.message) for f in result.findings]
    # A case must never break the linter's own fail-closed contract by accident.
    if case["rule"] != "VC001":
        assert "VC001" not in found, [(f.code, f.message) for f in result.findings]


def test_every_rule_has_a_case_for_each_dialect() -> None:
    covered = {(c["rule"], c["dialect"]) for c in CASES}
    for code, rule in load_rules().items():
        if code in ENGINE_ONLY:
            continue
        for dialect in rule.dialects:
            assert (code, dialect) in covered, f"{code} has no {dialect} case"


def test_every_rule_is_documented() -> None:
    for code, rule in load_rules().items():
        doc = rule.doc()
        assert doc.splitlines()[0].strip(), code
        for section in ("Anti-pattern:", "Safe pattern:"):
            assert section in doc, f"{code} lacks {section}"
        assert rule.why(), f"{code} lacks a why section"
        assert rule.fix(), f"{code} lacks a safe pattern"


def test_docs_rule_reference_is_up_to_date() -> None:
    from veza_canary.migrations.output import rules_markdown

    doc = (Path(__file__).resolve().parents[3] / "docs" / "lint-rules.md").read_text()
    start = doc.index("-->\n", doc.index("<!-- BEGIN RULES")) + 4
    end = doc.index("<!-- END RULES -->")
    assert doc[start:end] == rules_markdown(), "regenerate docs/lint-rules.md from rules_markdown()"
