"""How failures are classified, bounded and retried."""

from __future__ import annotations

import time

import pytest

from traindeploy.mlflow_rest import MlflowApiError, MlflowRest, MlflowUnavailable

from .conftest import RUN_JSON, Reply, unique


def test_closed_port_is_unavailable_quickly(closed_port, make_client):
    client = make_client(f"http://127.0.0.1:{closed_port}", timeout=1)
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable):
        client.get_run("0" * 32)
    with pytest.raises(MlflowUnavailable):
        client.create_run("0", "cycle-1", {})
    assert client.health() is False
    assert time.monotonic() - started < 5


def test_reads_are_retried_with_backoff_then_succeed(stub, make_client):
    stub.reply(Reply(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}),
               Reply(502, "<html>bad gateway</html>"), Reply(200, RUN_JSON))
    client = make_client(stub.url, timeout=2, retries=2, backoff=0.05)
    run = client.get_run("r1")
    assert run["run_id"] == "r1"
    assert [seen.method for seen in stub.seen] == ["GET", "GET", "GET"]


def test_reads_give_up_after_the_retry_budget(stub, make_client):
    stub.reply(Reply(500, {"error_code": "INTERNAL_ERROR", "message": "boom"}))
    client = make_client(stub.url, timeout=2, retries=2, backoff=0.05)
    with pytest.raises(MlflowUnavailable) as caught:
        client.get_run("r1")
    assert "INTERNAL_ERROR" in str(caught.value)
    assert len(stub.seen) == 3


def test_searches_are_reads_and_are_retried(stub, make_client):
    stub.reply(Reply(503, {}), Reply(200, {"runs": []}))
    client = make_client(stub.url, retries=1, backoff=0.05)
    assert client.find_run("1", {"k": "v"}) is None
    assert [(seen.method, seen.path) for seen in stub.seen] == [("POST", "/api/2.0/mlflow/runs/search")] * 2


def test_writes_are_not_retried(stub, make_client):
    stub.reply(Reply(503, {"error_code": "TEMPORARILY_UNAVAILABLE"}))
    client = make_client(stub.url, retries=3, backoff=0.05)
    with pytest.raises(MlflowUnavailable):
        client.create_run("1", "cycle-1", {"k": "v"})
    with pytest.raises(MlflowUnavailable):
        client.set_alias("m", "champion", "1")
    assert len(stub.seen) == 2


def test_rate_limit_is_unavailable_and_honours_retry_after(stub, make_client):
    stub.reply(Reply(429, {"error_code": "REQUEST_LIMIT_EXCEEDED"}, {"Retry-After": "1"}), Reply(200, RUN_JSON))
    client = make_client(stub.url, retries=1, backoff=0.01)
    started = time.monotonic()
    client.get_run("r1")
    assert time.monotonic() - started >= 0.9
    stub.reply(Reply(429, {"error_code": "REQUEST_LIMIT_EXCEEDED"}))
    with pytest.raises(MlflowUnavailable):
        make_client(stub.url, retries=0).get_run("r1")


def test_slow_server_times_out_as_unavailable(stub, make_client):
    stub.reply(Reply(200, RUN_JSON, delay=3))
    client = make_client(stub.url, timeout=0.3, retries=1, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable) as caught:
        client.get_run("r1")
    assert time.monotonic() - started < 2
    assert "Timeout" in str(caught.value)


def test_html_answers_are_classified(stub, make_client):
    client = make_client(stub.url, retries=0)
    stub.reply(Reply(404, "<html>not found</html>"))
    with pytest.raises(MlflowApiError) as caught:
        client.get_run("r1")
    assert (caught.value.error_code, caught.value.status) == ("ENDPOINT_NOT_FOUND", 404)
    stub.reply(Reply(200, "<html>login</html>"))
    with pytest.raises(MlflowApiError) as caught:
        client.get_run("r1")
    assert caught.value.error_code == "INVALID_RESPONSE"
    stub.reply(Reply(200, {"unexpected": True}))
    with pytest.raises(MlflowApiError) as caught:
        client.get_run("r1")
    assert caught.value.error_code == "INVALID_RESPONSE"
    stub.reply(Reply(403, {"error_code": "PERMISSION_DENIED", "message": "no"}))
    with pytest.raises(MlflowApiError) as caught:
        client.get_run("r1")
    assert (caught.value.error_code, caught.value.status) == ("PERMISSION_DENIED", 403)


def test_long_server_messages_are_cut(stub, make_client):
    stub.reply(Reply(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "x" * 5000}))
    with pytest.raises(MlflowApiError) as caught:
        make_client(stub.url).get_run("r1")
    assert len(str(caught.value)) < 400


def test_tracking_uri_prefix_and_trailing_slash(stub, make_client):
    stub.reply(Reply(200, RUN_JSON))
    make_client(stub.url + "/mlflow/").get_run("r1")
    make_client(stub.url + "/").get_run("r1")
    assert [seen.path for seen in stub.seen] == ["/mlflow/api/2.0/mlflow/runs/get?run_id=r1",
                                                 "/api/2.0/mlflow/runs/get?run_id=r1"]
    stub.reply(Reply(200, "OK"))
    assert make_client(stub.url + "/mlflow").health() is True
    assert stub.seen[-1].path == "/mlflow/health"


@pytest.mark.parametrize("uri", ["ftp://127.0.0.1/", "127.0.0.1:5000", "http://", "http://u:p@127.0.0.1:1/"])
def test_bad_tracking_uris_are_refused(uri):
    with pytest.raises(ValueError) as caught:
        MlflowRest(uri)
    assert "u:p" not in str(caught.value)


def test_real_server_api_errors(rest, mlflow_server, make_client):
    with pytest.raises(MlflowApiError) as caught:
        rest.get_run("0" * 32)
    assert (caught.value.error_code, caught.value.status) == ("RESOURCE_DOES_NOT_EXIST", 404)
    with pytest.raises(MlflowApiError) as caught:
        rest.create_run("999999999", "cycle-1", {})
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    name = unique("td-model")
    rest.ensure_registered_model(name)
    with pytest.raises(MlflowApiError) as caught:
        rest.set_alias(name, "latest", "1")   # reserved alias name
    assert (caught.value.error_code, caught.value.status) == ("INVALID_PARAMETER_VALUE", 400)
    wrong_prefix = make_client(mlflow_server.url + "/not-mlflow")
    assert wrong_prefix.health() is False
    with pytest.raises(MlflowApiError) as caught:
        wrong_prefix.get_run("0" * 32)
    assert (caught.value.error_code, caught.value.status) == ("ENDPOINT_NOT_FOUND", 404)


def test_real_server_health(rest):
    assert rest.health() is True


def test_a_store_failure_stated_as_bad_request_is_unavailable(stub, make_client):
    """MLflow's SQL store answers a full connection pool with BAD_REQUEST (HTTP 400): a failure
    of the server, retried like any outage; a 400 that states no code stays a refusal."""
    stub.reply(Reply(400, {"error_code": "BAD_REQUEST", "message": "(sqlalchemy.exc.TimeoutError) QueuePool limit"}),
               Reply(200, RUN_JSON))
    client = make_client(stub.url, retries=1, backoff=0.05)
    assert client.get_run("r1")["run_id"] == "r1"
    stub.reply(Reply(400, {"error_code": "BAD_REQUEST"}))
    with pytest.raises(MlflowUnavailable):
        client.create_run("1", "cycle-1", {})
    stub.reply(Reply(400, "<html>bad request</html>"))
    with pytest.raises(MlflowApiError) as refused:
        client.create_run("1", "cycle-1", {})
    assert not isinstance(refused.value, MlflowUnavailable)
