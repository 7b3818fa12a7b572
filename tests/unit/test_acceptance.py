"""The acceptance job's pure parts: the scenario table and a JUnit file that parses."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from veza_canary.acceptance import SCENARIOS, ScenarioResult, junit_xml


def test_the_runbook_bar_two_normal_deploys_and_two_rollbacks():
    assert [s.expected_exit for s in SCENARIOS] == [0, 5, 0, 5]
    assert SCENARIOS[1].failed_step == "canary-health"
    assert SCENARIOS[3].failed_step == "sli-watch", "the SLO scenario must be caught by the watch"


def test_junit_xml_is_valid_with_failures_and_reports_attached(tmp_path: Path):
    rep = tmp_path / "r.json"
    rep.write_text('{"outcome": "success"}')
    results = [
        ScenarioResult("1-normal", True, 12.5, 0, 0, report_path=str(rep)),
        ScenarioResult("2-rollback", False, 20.0, 0, 5, problems=["exit 0, expected 5"], report_path=""),
    ]
    root = ET.fromstring(junit_xml(results))
    assert root.tag == "testsuite" and root.get("tests") == "2" and root.get("failures") == "1"
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == ["1-normal", "2-rollback"]
    assert cases[0].find("failure") is None and '"outcome": "success"' in cases[0].find("system-out").text
    assert cases[1].find("failure").get("message") == "exit 0, expected 5"
    assert float(root.get("time")) == 32.5
