"""The operator's KFP client against the KFP test double."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from harness.kfp_fake import RUNTIME_STATES, KfpFake
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED
from traindeploy.kfp import (
    KfpClient,
    KfpError,
    KfpUnavailable,
    load_pipeline_package,
    run_state,
    run_url,
)

TOKEN = "kfp-s3cr3t-token-value"


def experiments_named(fake: KfpFake, name: str) -> list[dict]:
    return [e for e in fake.experiments.values() if e["display_name"] == name]


# -- experiments ----------------------------------------------------------------------------------

def test_ensure_experiment_is_idempotent(kfp_fake, kfp_client):
    first = kfp_client.ensure_experiment("traindeploy-ns-demo", description="TrainDeploy ns/demo")
    second = kfp_client.ensure_experiment("traindeploy-ns-demo", description="TrainDeploy ns/demo")
    assert first == second
    [experiment] = experiments_named(kfp_fake, "traindeploy-ns-demo")
    assert experiment["experiment_id"] == first and experiment["description"] == "TrainDeploy ns/demo"
    # The lookup is the filter kfp.Client sends: display_name EQUALS, operation as a number.
    lookup = [r for r in kfp_fake.requests if r.method == "GET" and r.path.endswith("/experiments")][0]
    assert json.loads(lookup.query["filter"][0]) == {
        "predicates": [{"operation": 1, "key": "display_name", "stringValue": "traindeploy-ns-demo"}]}


def test_ensure_experiment_finds_a_name_differing_in_case(kfp_fake, kfp_client):
    existing = kfp_client.ensure_experiment("Demo")
    # KFP's name index ignores case, so "demo" could not be created: the existing one is used.
    assert kfp_client.ensure_experiment("demo") == existing
    assert len(kfp_fake.experiments) == 2  # Default + Demo


def test_ensure_experiment_survives_a_create_race(kfp_fake, kfp_client, monkeypatch):
    other = KfpClient(kfp_fake.url)
    real_find = kfp_client._find_experiment
    calls = []

    def racing_find(name, namespace):
        calls.append(name)
        if len(calls) == 1:  # someone else creates it between our lookup and our create
            other.ensure_experiment(name)
            return None
        return real_find(name, namespace)

    monkeypatch.setattr(kfp_client, "_find_experiment", racing_find)
    experiment_id = kfp_client.ensure_experiment("raced")
    assert [e["experiment_id"] for e in experiments_named(kfp_fake, "raced")] == [experiment_id]


def test_ensure_experiment_in_a_namespace():
    with KfpFake(multi_user=True) as fake, KfpClient(fake.url) as client:
        experiment_id = client.ensure_experiment("e", namespace="team-a")
        assert client.ensure_experiment("e", namespace="team-a") == experiment_id
        assert fake.experiments[experiment_id]["namespace"] == "team-a"
        assert client.ensure_experiment("e", namespace="team-b") != experiment_id


# -- runs -----------------------------------------------------------------------------------------

def test_find_then_create_is_idempotent(kfp_fake, kfp_client, pipeline_spec):
    experiment_id = kfp_client.ensure_experiment("exp")
    assert kfp_client.find_run(experiment_id, "td-demo-gen3") is None
    created = kfp_client.create_run(experiment_id, "td-demo-gen3", pipeline_spec,
                                     {"rows": 1000, "src": "s3://x"}, description="cycle 3")
    assert created["state"] == "PENDING"
    found = kfp_client.find_run(experiment_id, "td-demo-gen3")
    assert found["run_id"] == created["run_id"]
    stored = kfp_fake.runs[created["run_id"]]
    assert stored["pipeline_spec"] == pipeline_spec
    assert stored["runtime_config"] == {"parameters": {"rows": 1000, "src": "s3://x"}}
    assert stored["description"] == "cycle 3" and stored["experiment_id"] == experiment_id
    # A second reconcile finds the run and creates nothing.
    assert kfp_client.find_run(experiment_id, "td-demo-gen3")["run_id"] == created["run_id"]
    assert len(kfp_fake.runs) == 1
    assert kfp_client.find_run(experiment_id, "TD-DEMO-GEN3") is None  # exact name only


def test_find_run_follows_pages_and_returns_the_newest(kfp_fake, kfp_client, pipeline_spec):
    experiment_id = kfp_client.ensure_experiment("exp")
    kfp_client.PAGE_SIZE = 2
    ids = []
    for i in range(5):
        ids.append(kfp_client.create_run(experiment_id, "dup", pipeline_spec, {})["run_id"])
        kfp_client.create_run(experiment_id, f"other-{i}", pipeline_spec, {})
        kfp_fake.advance(10)
    kfp_fake.clear_requests()
    found = kfp_client.find_run(experiment_id, "dup")
    assert found["run_id"] == ids[-1]
    pages = [r for r in kfp_fake.requests if r.path.endswith("/runs")]
    assert len(pages) == 3
    assert "page_token" not in pages[0].query and all("page_token" in p.query for p in pages[1:])
    assert all(p.query["experiment_id"] == [experiment_id] for p in pages)


def test_find_run_in_an_experiment_without_runs(kfp_client):
    assert kfp_client.find_run(kfp_client.ensure_experiment("empty"), "x") is None


def test_create_run_with_platform_spec(kfp_fake, kfp_client, pipeline_platform_yaml):
    package = load_pipeline_package(pipeline_platform_yaml)
    run = kfp_client.create_run(kfp_client.ensure_experiment("exp"), "with-platform", package, {"src": "a"})
    assert set(kfp_fake.runs[run["run_id"]]["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}


def test_create_run_in_a_missing_experiment(kfp_client, pipeline_spec):
    with pytest.raises(KfpError) as caught:
        kfp_client.create_run("e-gone", "r", pipeline_spec, {})
    assert caught.value.status == 404 and caught.value.code == 5
    assert "Experiment e-gone not found" in str(caught.value)


def test_get_run_and_404(kfp_fake, kfp_client, pipeline_spec):
    run = kfp_client.create_run(kfp_client.ensure_experiment("exp"), "r", pipeline_spec, {})
    assert kfp_client.get_run(run["run_id"]) == kfp_fake.runs[run["run_id"]]
    with pytest.raises(KfpError) as caught:
        kfp_client.get_run("no-such-run")
    assert caught.value.status == 404
    assert "NOT_FOUND" in str(caught.value) and "Run no-such-run not found" in str(caught.value)
    assert len([r for r in kfp_fake.requests if r.path.endswith("/no-such-run")]) == 1  # 4xx: no retry


def test_terminate_run(kfp_fake, kfp_client, pipeline_spec):
    run = kfp_client.create_run(kfp_client.ensure_experiment("exp"), "r", pipeline_spec, {})
    kfp_fake.set_run_state(run["run_id"], "RUNNING")
    kfp_client.terminate_run(run["run_id"])
    assert kfp_client.get_run(run["run_id"])["state"] == "CANCELING"
    kfp_client.terminate_run(run["run_id"])  # already being canceled: fine
    kfp_fake.set_run_state(run["run_id"], "CANCELED")
    kfp_client.terminate_run(run["run_id"])  # already over: fine
    with pytest.raises(KfpError):
        kfp_client.terminate_run("no-such-run")


@pytest.mark.parametrize("state, phase, reason", [
    ("RUNTIME_STATE_UNSPECIFIED", PENDING, "RunPending"),
    ("PENDING", PENDING, "RunPending"),
    ("RUNNING", RUNNING, "RunRunning"),
    ("PAUSED", RUNNING, "RunPaused"),
    ("CANCELING", RUNNING, "RunCanceling"),
    ("SUCCEEDED", SUCCEEDED, "RunSucceeded"),
    ("SKIPPED", SUCCEEDED, "RunSkipped"),
    ("FAILED", FAILED, "RunFailed"),
    ("CANCELED", FAILED, "RunCanceled"),
])
def test_run_state_for_every_runtime_state(kfp_fake, kfp_client, pipeline_spec, state, phase, reason):
    run = kfp_client.create_run(kfp_client.ensure_experiment("exp"), "r", pipeline_spec, {})
    message = "component prepare failed" if phase == FAILED else None
    kfp_fake.set_run_state(run["run_id"], state, error_message=message)
    got = run_state(kfp_client.get_run(run["run_id"]))
    assert (got.phase, got.reason) == (phase, reason)
    assert got.outputs == {"runId": run["run_id"], "state": state}
    assert got.message == (message or "")
    assert got.finished == (phase in (SUCCEEDED, FAILED))


def test_run_state_covers_the_enum():
    assert set(RUNTIME_STATES) == {
        "RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "SUCCEEDED", "SKIPPED", "FAILED",
        "CANCELING", "CANCELED", "PAUSED"}
    for state in RUNTIME_STATES:
        assert run_state({"run_id": "r", "state": state}).reason.startswith("Run")


@pytest.mark.parametrize("run, phase, reason, message", [
    ({"run_id": "r"}, PENDING, "RunPending", ""),  # zero enum left out of the JSON
    ({"run_id": "r", "state": "FAILED"}, FAILED, "RunFailed", "KFP run r ended in state FAILED"),
    ({"run_id": "r", "state": "FAILED", "state_history": [
        {"state": "FAILED", "error": {"code": 2, "message": "from history"}}]},
     FAILED, "RunFailed", "from history"),
    ({"run_id": "r", "state": "CANCELED", "error": {"message": "stopped by user"}},
     FAILED, "RunCanceled", "stopped by user"),
    ({"run_id": "r", "state": "EXPLODED"}, PENDING, "RunStateUnknown", "KFP run r reports unknown state EXPLODED"),
])
def test_run_state_table(run, phase, reason, message):
    got = run_state(run)
    assert (got.phase, got.reason, got.message) == (phase, reason, message)


def test_run_url():
    assert run_url("https://kfp.example.com/pipeline/", "abc-123") == \
        "https://kfp.example.com/pipeline/#/runs/details/abc-123"


# -- auth -----------------------------------------------------------------------------------------

def test_token_is_sent_as_bearer_and_never_shown(kfp_fake, pipeline_spec, all_logs):
    kfp_fake.require_token(TOKEN)
    client = KfpClient(kfp_fake.url, token=TOKEN)
    client.BACKOFF_SECONDS = 0.01
    experiment_id = client.ensure_experiment("secure")
    client.create_run(experiment_id, "r", pipeline_spec, {})
    assert client.healthz()["multi_user"] is False
    assert all(r.headers.get("Authorization") == "Bearer <redacted>" for r in kfp_fake.requests)
    shown = [repr(client)]
    kfp_fake.require_token("a-different-token")
    with pytest.raises(KfpError) as forbidden:
        client.get_run("x")
    assert forbidden.value.status == 403
    kfp_fake.outage(True)
    with pytest.raises(KfpUnavailable) as unavailable:
        client.get_run("x")
    kfp_fake.outage(False)
    kfp_fake.stop()
    with pytest.raises(KfpUnavailable) as refused:
        client.healthz()
    for exc in (forbidden.value, unavailable.value, refused.value):
        shown += [str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)]
    assert TOKEN not in "\n".join(shown)
    assert all_logs.records, "expected debug logs from the client and urllib3"
    assert TOKEN not in all_logs.text


def test_missing_token_is_401(kfp_fake, kfp_client):
    kfp_fake.require_token(TOKEN)
    with pytest.raises(KfpError) as caught:
        kfp_client.healthz()
    assert caught.value.status == 401 and caught.value.code == 16
    assert "UNAUTHENTICATED" in str(caught.value)


# -- failures -------------------------------------------------------------------------------------

def test_outage_is_unavailable_and_gets_are_retried(kfp_fake, kfp_client, pipeline_spec):
    experiment_id = kfp_client.ensure_experiment("exp")
    kfp_fake.outage(True)
    kfp_fake.clear_requests()
    with pytest.raises(KfpUnavailable) as caught:
        kfp_client.get_run("any")
    assert "HTTP 503" in str(caught.value) and "UNAVAILABLE" in str(caught.value)
    assert len(kfp_fake.requests) == KfpClient.GET_ATTEMPTS
    kfp_fake.clear_requests()
    with pytest.raises(KfpUnavailable):
        kfp_client.create_run(experiment_id, "r", pipeline_spec, {})
    assert len(kfp_fake.requests) == 1  # a POST is tried once; find_run is the retry
    kfp_fake.outage(False)
    assert kfp_client.find_run(experiment_id, "r") is None


def test_a_get_recovers_within_its_retries(kfp_fake, kfp_client):
    kfp_fake.outage(True)
    kfp_client.BACKOFF_SECONDS = 0.2
    timer = threading.Timer(0.1, kfp_fake.outage, args=(False,))
    timer.start()
    try:
        assert kfp_client.healthz()["pipeline_store"] == "database"
    finally:
        timer.cancel()


def test_timeouts_are_bounded(kfp_fake):
    kfp_fake.set_delay(5.0)
    client = KfpClient(kfp_fake.url, timeout=0.2)
    client.BACKOFF_SECONDS = 0.01
    started = time.monotonic()
    with pytest.raises(KfpUnavailable) as caught:
        client.healthz()
    elapsed = time.monotonic() - started
    assert "no answer within 0.2s" in str(caught.value)
    assert elapsed < 0.2 * KfpClient.GET_ATTEMPTS + 1.0
    started = time.monotonic()
    with pytest.raises(KfpUnavailable):
        client.create_run("e", "r", {"pipelineInfo": {"name": "p"}, "root": {}}, {})
    assert time.monotonic() - started < 0.2 + 0.5


def test_connection_refused_is_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KfpClient(f"http://127.0.0.1:{port}", timeout=1.0)
    client.BACKOFF_SECONDS = 0.01
    with pytest.raises(KfpUnavailable) as caught:
        client.healthz()
    assert "cannot connect" in str(caught.value)


class _Canned(requests.adapters.BaseAdapter):
    """A transport that answers every request with one canned response, for odd servers."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__()
        self.answer = (status, body, headers)
        self.calls = 0

    def send(self, request, **kwargs):
        self.calls += 1
        response = requests.Response()
        response.status_code, response._content, headers = self.answer
        response.headers.update(headers)
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize("status, body, headers, error, words", [
    (302, b"", {"Location": "https://dex.example.com/auth"}, KfpError, "redirect"),
    (200, b"<html>login</html>", {"Content-Type": "text/html"}, KfpError, "not JSON"),
    (502, b"upstream connect error", {"Content-Type": "text/plain"}, KfpUnavailable, "upstream connect error"),
    (429, b"{}", {"Content-Type": "application/json"}, KfpUnavailable, "HTTP 429"),
    (400, b'{"code": 3, "message": "bad filter"}', {}, KfpError, "INVALID_ARGUMENT: bad filter"),
])
def test_odd_answers(status, body, headers, error, words):
    session = requests.Session()
    adapter = _Canned(status, body, headers)
    session.mount("http://", adapter)
    client = KfpClient("http://kfp.invalid:8888", session=session)
    client.BACKOFF_SECONDS = 0.0
    with pytest.raises(error) as caught:
        client.healthz()
    assert words in str(caught.value)
    assert adapter.calls == (KfpClient.GET_ATTEMPTS if error is KfpUnavailable else 1)


@pytest.mark.parametrize("endpoint, api", [
    ("http://ml-pipeline.kubeflow:8888", "http://ml-pipeline.kubeflow:8888/apis/v2beta1"),
    ("http://ml-pipeline.kubeflow:8888/", "http://ml-pipeline.kubeflow:8888/apis/v2beta1"),
    ("https://kfp.example.com/apis/v2beta1", "https://kfp.example.com/apis/v2beta1"),
])
def test_endpoints(endpoint, api):
    assert KfpClient(endpoint)._api == api


@pytest.mark.parametrize("endpoint", ["ml-pipeline:8888", "ftp://x", ""])
def test_bad_endpoints(endpoint):
    with pytest.raises(ValueError):
        KfpClient(endpoint)
