"""Suppression comments: with a reason they allow, without one they are findings themselves."""

from __future__ import annotations

from pathlib import Path

from .helpers import codes, lint_sql

HIST = "CREATE TABLE users (id bigint PRIMARY KEY, bio text, nick text);"


def test_statement_suppression_with_reason_allows_and_records_it(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["-- veza-canary: allow drop-column because bio is unused since v1.8\n"
                                    "ALTER TABLE users DROP COLUMN bio;"])
    assert codes(r) == []
    assert r.findings[0].suppressed == "bio is unused since v1.8"
    assert not r.blocking and r.summary().endswith("1 suppressed")


def test_trailing_suppression_on_the_same_line(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["ALTER TABLE users DROP COLUMN bio; -- veza-canary: allow VC101 because unused\n"
                                    "ALTER TABLE users DROP COLUMN nick;"])
    assert codes(r) == ["VC101"]
    assert r.findings[-1].line == 2


def test_suppression_without_reason_does_not_suppress(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["-- veza-canary: allow drop-column\nALTER TABLE users DROP COLUMN bio;"])
    assert sorted(codes(r)) == ["VC002", "VC101"]


def test_suppression_only_covers_the_named_rule(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["-- veza-canary: allow drop-table because nope\n"
                                    "ALTER TABLE users DROP COLUMN bio;"])
    assert codes(r) == ["VC101"]


def test_file_level_suppression(tmp_path: Path) -> None:
    sql = ("-- veza-canary: allow-file drop-column, VC201 because the whole table is being retired\n"
           "ALTER TABLE users DROP COLUMN bio;\nCREATE INDEX users_nick_idx ON users (nick);\n"
           "ALTER TABLE users DROP COLUMN nick;\n")
    r = lint_sql(tmp_path, [HIST], [sql])
    assert codes(r) == []
    assert len(r.suppressed) == 3


def test_unknown_rule_in_suppression_is_reported(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["-- veza-canary: allow drop-colum because typo\nALTER TABLE users DROP COLUMN bio;"])
    assert sorted(codes(r)) == ["VC002", "VC101"]


def test_block_comment_suppression(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["ALTER TABLE users /* veza-canary: allow VC101 because unused */ DROP COLUMN bio;"])
    assert codes(r) == []


def test_force_bypasses_but_keeps_the_findings(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        r = lint_sql(tmp_path, [HIST], ["ALTER TABLE users DROP COLUMN bio;"], force=True)
    assert r.bypassed and [f.code for f in r.blocking] == ["VC101"]
    assert "BYPASSED" in r.summary()
    assert any(e.get("event") == "lint.bypassed" and e.get("log_level") == "warning" for e in logs)


def test_severity_overrides(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["ALTER TABLE users DROP COLUMN bio; CREATE INDEX i ON users (nick);"],
                 severities={"drop-column": "warn", "VC201": "off"})
    assert [(f.code, f.severity) for f in r.findings] == [("VC101", "warn")]
    assert not r.blocking


def test_accept_with_a_quoted_reason_allows_one_statement(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ['-- veza-canary: accept VC101 "column unused since 1.9"\n'
                                    "ALTER TABLE users DROP COLUMN bio;\nALTER TABLE users DROP COLUMN nick;"])
    assert codes(r) == ["VC101"] and r.findings[-1].line == 3
    assert r.suppressed[0].suppressed == "column unused since 1.9"
    assert "1 suppressed" in r.summary()
    assert r.to_dict()["suppressions"] == [{"code": "VC101", "path": r.suppressed[0].path, "line": 2,
                                            "reason": "column unused since 1.9"}]


def test_accept_without_a_reason_suppresses_nothing(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["-- veza-canary: accept VC101\nALTER TABLE users DROP COLUMN bio;"])
    assert sorted(codes(r)) == ["VC002", "VC101"]


def test_squawk_ignore_comments_are_honoured_for_the_matching_rule(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["-- squawk-ignore ban-drop-column\nALTER TABLE users DROP COLUMN bio;\n"
                                    "ALTER TABLE users RENAME COLUMN nick TO nickname;"])
    assert codes(r) == ["VC110"]
    assert r.suppressed[0].suppressed == "squawk-ignore ban-drop-column"


def test_squawk_ignore_of_a_rule_we_do_not_have_is_not_a_directive(tmp_path: Path) -> None:
    r = lint_sql(tmp_path, [HIST], ["-- squawk-ignore prefer-text-field\nALTER TABLE users DROP COLUMN bio;"])
    assert codes(r) == ["VC101"]  # and no VC002: the comment is squawk's business


def test_text_output_gives_why_and_fix_once_per_rule(tmp_path: Path) -> None:
    from veza_canary.migrations.output import render_text

    r = lint_sql(tmp_path, [HIST], ["ALTER TABLE users DROP COLUMN bio;\nALTER TABLE users DROP COLUMN nick;"])
    text = render_text(r)
    assert codes(r) == ["VC101", "VC101"]
    assert text.count("why:") == 1 and text.count("instead:") == 1
