"""The judge's evidence from Prometheus (httpx.MockTransport), the metric templates, and the unit's state."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.settings_helper import make_settings
from veza_canary.evidence import (
    EvidenceQueries,
    PromEvidence,
    check_matchers,
    check_metric,
    peers_regex,
    queries_from_settings,
    validate,
)
from veza_canary.node import ServiceState
from veza_canary.prometheus import Prometheus
from veza_canary.verdict import Policy

CANARY = EvidenceQueries.build(metric="m", selector='node="{node}"', exclude='path!="{health_path}"',
                               error_selector='status=~"5.."', node="n2", health_path="/h")
BASE = EvidenceQueries.build(metric="m", selector='node=~"{peers}"', exclude='path!="{health_path}"',
                             error_selector='status=~"5.."', peers="n1|n3", health_path="/h")


def vector(*series):
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [0, value]} for labels, value in series]}}


def buckets(*pairs):
    return vector(*(({"le": le}, v) for le, v in pairs))


def prom(answer) -> tuple[Prometheus, list[str]]:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        q = req.url.params["query"]
        seen.append(q)
        status, body = answer(q)
        return httpx.Response(status, json=body)

    return Prometheus(httpx.Client(transport=httpx.MockTransport(handler)), "http://prom:9090"), seen


GOOD = buckets(("0.25", "90"), ("0.5", "98"), ("+Inf", "100"))


def test_the_queries_count_since_the_canary_entered_rotation():
    assert CANARY.buckets(91) == 'sum by (le) (increase(m_bucket{node="n2",path!="/h"}[91s]))'
    assert CANARY.errors(91) == 'sum(increase(m_count{node="n2",path!="/h",status=~"5.."}[91s])) or vector(0)'
    assert BASE.buckets(30) == 'sum by (le) (increase(m_bucket{node=~"n1|n3",path!="/h"}[30s]))'


def test_evidence_reads_both_sides_with_four_queries():
    p, seen = prom(lambda q: (200, GOOD if "bucket" in q else vector(({}, "2"))))
    ev = PromEvidence(p, CANARY, BASE)(90.4)
    assert ev.error is None and ev.nodata is None
    assert ev.canary is not None and ev.canary.les == (0.25, 0.5, math.inf)
    assert ev.canary.buckets == (90, 98, 100) and ev.canary.errors == 2 and ev.canary.requests == 100
    assert ev.baseline is not None and len(seen) == 4 and all("[91s]" in q for q in seen)


@pytest.mark.parametrize("bucket_answer,err_answer,kind", [
    (vector(), vector(({}, "0")), "nodata"),  # empty: no requests (or the selector matches nothing)
    (buckets(("0.5", "NaN"), ("+Inf", "NaN")), vector(({}, "0")), "nodata"),
    (buckets(("0.5", "+Inf"), ("+Inf", "+Inf")), vector(({}, "0")), "nodata"),
    (GOOD, vector(({}, "NaN")), "nodata"),
    (buckets(("0.5", "0"), ("+Inf", "0")), vector(({}, "0")), "nodata"),  # zero traffic is not a pass
    (buckets(("0.5", "3")), vector(({}, "0")), "error"),  # no +Inf bucket
    (vector(({}, "3")), vector(({}, "0")), "error"),  # no le label: not a histogram
    (GOOD, vector(({"a": "1"}, "1"), ({"a": "2"}, "1")), "error"),
])
def test_nan_inf_and_empty_answers_are_no_data_and_nonsense_is_an_error(bucket_answer, err_answer, kind):
    p, _ = prom(lambda q: (200, bucket_answer if "bucket" in q else err_answer))
    ev = PromEvidence(p, CANARY, None)(60)
    assert (ev.nodata is not None, ev.error is not None) == (kind == "nodata", kind == "error")
    assert ev.canary is None


def test_an_empty_5xx_vector_with_traffic_is_zero_errors():
    p, _ = prom(lambda q: (200, GOOD if "bucket" in q else vector()))
    ev = PromEvidence(p, CANARY, None)(60)
    assert ev.canary is not None and ev.canary.errors == 0


def test_prometheus_failing_is_an_error_sample():
    p, _ = prom(lambda q: (503, {"status": "error", "error": "overloaded"}))
    ev = PromEvidence(p, CANARY, BASE)(60)
    assert ev.error is not None and "503" in ev.error


def test_a_baseline_without_data_leaves_the_canary_judged_alone():
    p, _ = prom(lambda q: (200, (GOOD if "n2" in q else vector()) if "bucket" in q else vector(({}, "0"))))
    ev = PromEvidence(p, CANARY, BASE)(60)
    assert ev.canary is not None and ev.baseline is None and ev.error is None


def test_unsorted_and_non_monotone_buckets_are_repaired_as_prometheus_does():
    p, _ = prom(lambda q: (200, buckets(("+Inf", "100"), ("0.5", "99.5"), ("0.25", "99.9"))
                           if "bucket" in q else vector(({}, "1"))))
    ev = PromEvidence(p, CANARY, None)(60)
    assert ev.canary is not None and ev.canary.buckets == (99.9, 99.9, 100)


# --- settings -> queries -----------------------------------------------------------------------------


def test_queries_from_settings_use_the_runbooks_metric_and_the_peers_as_baseline():
    s = make_settings(canary_node="backend-api-2", peer_nodes="backend-api-1 backend-api-3")
    canary, base = queries_from_settings(s)
    assert canary.buckets(60).startswith("sum by (le) (increase(veza_gin_http_request_duration_seconds_bucket{")
    assert 'node="backend-api-2"' in canary.matchers and f'path!="{s.service.health_path}"' in canary.matchers
    assert base is not None and 'node=~"backend-api-1|backend-api-3"' in base.matchers


def test_a_fleet_wide_selector_has_no_baseline():
    s = make_settings(sli_selector='job="api"')
    assert queries_from_settings(s)[1] is None


def test_policy_from_settings_maps_the_knobs():
    s = make_settings(sli_window=600, allow_short_window=True, prom_err_rate_threshold=0.01)
    p = Policy.from_settings(s)
    assert p.window_s == 600 and p.err_threshold == 0.01 and p.interval_s == s.sli.probe_interval


# --- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("v,ok", [
    ("veza_gin_http_request_duration_seconds", True), ("http:requests_seconds", True),
    ("1bad", False), ("a-b", False), ("x_bucket", False), ("", False), ('x{a="b"}', False),
])
def test_check_metric(v, ok):
    assert (check_metric(v) is None) is ok


@pytest.mark.parametrize("v,allowed,ok", [
    ('node="{node}"', ("node",), True),
    ('node=~"{peers}", job="api"', ("peers",), True),
    ("", (), True),
    ('status=~"5.."', (), True),
    ('node="{peers}"', ("node",), False),  # a placeholder this knob does not have
    ('node="{node}"}) or vector(1', ("node",), False),  # PromQL injection
    ("node={node}", ("node",), False),  # unquoted
    ('status=~"5(("', (), False),  # invalid regex
    ('a="x\nb"', (), False),
])
def test_check_matchers(v, allowed, ok):
    assert (check_matchers(v, allowed) is None) is ok


def test_validate_names_every_bad_knob():
    bad = validate("x_count", 'node="{peers}"', 'node=~"{node}"', "", 'path!="{health_path}"')
    assert [k for k, _ in bad] == ["SLI_METRIC", "SLI_SELECTOR", "SLI_BASELINE_SELECTOR", "SLI_ERROR_SELECTOR"]
    assert validate("m", 'node="{node}"', 'node=~"{peers}"', 'code=~"5.."', "") == []


def test_peers_regex_escapes_regex_and_string_metacharacters():
    assert peers_regex(["a.b", "c"]) == "a\\\\.b|c"


# --- the unit's state ----------------------------------------------------------------------------------


def test_service_state_parses_systemctl_show_in_any_order():
    st = ServiceState.parse("SubState=running\nMainPID=4242\nNRestarts=0\nActiveState=active\n")
    assert st == ServiceState("active", "running", 0, 4242)
    assert ServiceState.parse("0\n") is None


@pytest.mark.parametrize("now,before,dead", [
    (ServiceState("active", "running", 0, 10), ServiceState("active", "running", 0, 10), False),
    (ServiceState("activating", "start", 0, 10), None, False),
    (ServiceState("failed", "failed", 3, 0), None, True),
    (ServiceState("activating", "auto-restart", 1, 0), None, True),
    (ServiceState("inactive", "dead", 0, 0), None, True),
    (ServiceState("active", "running", 2, 11), ServiceState("active", "running", 1, 10), True),
])
def test_service_state_dead(now, before, dead):
    assert (now.dead(before) is not None) is dead


def test_queries_for_another_node_use_the_rest_of_the_pool_as_baseline():
    s = make_settings(canary_node="backend-api-2", peer_nodes="backend-api-1 backend-api-3")
    node, base = queries_from_settings(s, "backend-api-1")
    assert 'node="backend-api-1"' in node.matchers
    assert base is not None and 'node=~"backend-api-2|backend-api-3"' in base.matchers


def matrix(*series):
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": labels, "values": values} for labels, values in series]}}


def test_baseline_history_reads_the_peers_counts_per_step_before_the_watch():
    seen = []

    def answer(q):
        seen.append(q)
        if "bucket" in q:
            return 200, matrix(({"le": "0.5"}, [[970, "90"], [1000, "95"]]), ({"le": "+Inf"}, [[970, "100"],
                                                                                               [1000, "100"]]))
        return 200, matrix(({}, [[970, "1"], [1000, "3"]]))

    p, _ = prom(answer)
    hist = PromEvidence(p, CANARY, BASE).baseline_history(30, 60, now=1000)
    assert [(h.requests, h.errors, h.buckets[0]) for h in hist] == [(100, 1, 90), (100, 3, 95)]


def test_baseline_history_is_empty_when_prometheus_fails_or_there_is_no_baseline():
    p, _ = prom(lambda q: (503, {"status": "error", "error": "x"}))
    assert PromEvidence(p, CANARY, BASE).baseline_history(30) == []
    assert PromEvidence(p, CANARY, None).baseline_history(30) == []


def test_query_range_refuses_a_malformed_matrix():
    from veza_canary.errors import PrometheusError

    p, _ = prom(lambda q: (200, {"status": "success", "data": {"resultType": "matrix", "result": [{"values": 3}]}}))
    with pytest.raises(PrometheusError):
        p.query_range("up", start=0, end=60, step=30)
