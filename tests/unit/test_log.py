"""Secrets never reach a log line."""

from __future__ import annotations

import io
import json

import structlog

from veza_canary.log import configure, redact_text


def test_url_credentials_tokens_and_passwords_are_redacted():
    s = redact_text("GET https://bob:hunter2@prom:9090/api and Bearer abcdef123456 password=xyz token=qq12")
    assert "hunter2" not in s and "bob" not in s and "abcdef123456" not in s and "xyz" not in s
    assert "https://[REDACTED]@prom:9090" in s


def test_url_secrets_are_found_by_parsing_not_by_a_pattern_of_the_whole_line():
    s = redact_text("to https://u:p@ss@h:1/x?access_token=AAA&sig=BBB&n=1#auth=CCC, then key=DDD")
    assert not any(x in s for x in ("p@ss", "AAA", "BBB", "CCC", "DDD"))
    assert "https://[REDACTED]@h:1/x?access_token=[REDACTED]&sig=[REDACTED]&n=1#auth=[REDACTED]," in s


def test_mapping_keys_ending_in_a_secret_word_are_redacted():
    from veza_canary.log import redact_value

    v = redact_value({"access_token": "AAA", "X-Api-Key": "BBB", "sig": "CCC", "node": "backend-api-2"})
    assert v == {"access_token": "[REDACTED]", "X-Api-Key": "[REDACTED]", "sig": "[REDACTED]",
                 "node": "backend-api-2"}


def test_json_log_lines_are_redacted_by_the_processor():
    buf = io.StringIO()
    configure("json", stream=buf)
    structlog.get_logger("t").info("probe", url="http://u:p4ss@h/x", nested={"password": "pw", "ok": 1})
    line = json.loads(buf.getvalue().strip())
    assert "p4ss" not in buf.getvalue() and line["nested"]["password"] == "[REDACTED]"
    assert line["event"] == "probe" and line["level"] == "info"


def test_console_format_for_people():
    buf = io.StringIO()
    configure("console", stream=buf)
    structlog.get_logger("t").info("hello", node="backend-api-2")
    assert "hello" in buf.getvalue() and "backend-api-2" in buf.getvalue()
