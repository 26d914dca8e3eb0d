"""Canary analysis checks against local stand-ins for a model server and Prometheus."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests

from e2e.http_stubs import ModelServer, Prometheus
from traindeploy.serving import analysis
from traindeploy.serving.state import KNATIVE, STANDARD, Serving

QUERY = {"name": "error-rate", "query": 'rate(errors{ns="${namespace}"}[1m])', "max": 0.05}


@pytest.fixture
def session():
    with requests.Session() as http:
        yield http


@pytest.mark.parametrize(("status", "passes"), [(200, True), (500, False)])
def test_probe_passes_only_on_the_expected_status(session, status, passes):
    with ModelServer(status) as server:
        passed, message = analysis.probe(server.url, {"path": "/v2/models/m/infer", "body": "{}"}, session)
    assert passed is passes
    assert f"HTTP {status}" in message
    assert server.requests == [("POST", "/v2/models/m/infer", "{}")]


def test_probe_of_an_unreachable_canary_fails(session):
    with ModelServer() as server:
        url = server.url
    passed, message = analysis.probe(url, {"path": "/", "timeoutSeconds": 1}, session)
    assert not passed and "ConnectionError" in message


@pytest.mark.parametrize(("value", "check", "passes", "says"), [
    (0.01, QUERY, True, "error-rate=0.01"),
    (0.2, QUERY, False, "error-rate=0.2 is above the maximum 0.05"),
    (0.5, {**QUERY, "max": None, "min": 0.9}, False, "below the minimum 0.9"),
    (None, QUERY, False, "returned no sample"),
])
def test_prometheus_thresholds(session, value, check, passes, says):
    check = {k: v for k, v in check.items() if v is not None}
    with Prometheus(value) as prometheus:
        passed, message = analysis.prometheus(prometheus.url, [check], {"namespace": "ml"}, session, timeout=5)
    assert passed is passes
    assert says in message
    assert prometheus.queries == ['rate(errors{ns="ml"}[1m])']


def test_prometheus_that_is_down_fails_the_check(session):
    with Prometheus(0.0) as prometheus:
        url = prometheus.url
    passed, message = analysis.prometheus(url, [QUERY], {}, session, timeout=1)
    assert not passed and "query failed" in message


def _serving(mode: str, stable: dict | None, prometheus_url: str, session) -> Serving:
    """A Serving whose pass carries only what analysis reads."""
    env = SimpleNamespace(http=session, config=SimpleNamespace(prometheus_url=prometheus_url, http_timeout=5))
    p = SimpleNamespace(name="churn", namespace="ml", env=env)
    spec = {"canary": {"analysis": {"prometheus": {"queries": [
        {"name": "errors", "query": 'sum(rate(revision_request_count{revision_name="${canary}"}[1m]))', "max": 1}]}}}}
    return Serving(p, spec, {}, "churn", mode, False, stable)


@pytest.mark.parametrize(("mode", "stable", "canary"), [
    # Knative labels its metrics by revision; the predictor Service is both revisions'.
    (KNATIVE, {"status": {"components": {"predictor": {"latestCreatedRevision": "churn-predictor-00002",
                                                       "latestReadyRevision": "churn-predictor-00002"}}}},
     "churn-predictor-00002"),
    (STANDARD, None, "churn-canary-predictor"),
])
def test_prometheus_canary_variable_names_the_canary_alone(session, mode, stable, canary):
    with Prometheus(0.0) as prometheus:
        passed, _ = analysis.analyse(_serving(mode, stable, prometheus.url, session), None, "3")
    assert passed
    assert prometheus.queries == [f'sum(rate(revision_request_count{{revision_name="{canary}"}}[1m]))']
