"""Credentials reach the server and nowhere else: not logs, reprs or exception text."""

from __future__ import annotations

import base64
import secrets

import pytest
import requests

from traindeploy.mlflow_rest import Credentials, MlflowApiError, MlflowRest, MlflowUnavailable

from .conftest import RUN_JSON, Reply, exception_text, unique

TOKEN = "td-token-" + secrets.token_hex(8)
PASSWORD = "td-pass-" + secrets.token_hex(8)
BASIC = base64.b64encode(f"robot:{PASSWORD}".encode()).decode()


def _leaks(text: str) -> list[str]:
    return [secret for secret in (TOKEN, PASSWORD, BASIC) if secret in text]


def test_repr_names_what_is_set_never_values():
    for credentials in (Credentials(token=TOKEN), Credentials(username="robot", password=PASSWORD)):
        assert not _leaks(repr(credentials) + str(credentials) + f"{credentials}")
        assert "<redacted>" in repr(credentials)
        assert not _leaks(repr(MlflowRest("http://127.0.0.1:1", credentials)))


def test_headers_are_sent(stub, make_client):
    stub.reply(Reply(200, RUN_JSON))
    make_client(stub.url, Credentials(token=TOKEN)).get_run("r1")
    make_client(stub.url, Credentials(username="robot", password=PASSWORD)).get_run("r1")
    # Basic wins over a token, as in MLflow's own client.
    make_client(stub.url, Credentials(token=TOKEN, username="robot", password=PASSWORD)).get_run("r1")
    make_client(stub.url).get_run("r1")
    sent = [seen.headers.get("Authorization") for seen in stub.seen]
    assert sent == [f"Bearer {TOKEN}", f"Basic {BASIC}", f"Basic {BASIC}", None]


def test_a_shared_session_does_not_carry_credentials_across_clients(stub):
    stub.reply(Reply(200, RUN_JSON))
    with requests.Session() as session:
        MlflowRest(stub.url, Credentials(token=TOKEN), session=session).get_run("r1")
        MlflowRest(stub.url, session=session).get_run("r1")
    assert [seen.headers.get("Authorization") for seen in stub.seen] == [f"Bearer {TOKEN}", None]


def test_nothing_leaks_against_the_real_server(mlflow_server, all_logs):
    # The server runs without auth and ignores the header; the point is what we print.
    for credentials in (Credentials(token=TOKEN), Credentials(username="robot", password=PASSWORD)):
        with MlflowRest(mlflow_server.url, credentials) as client:
            experiment_id = client.ensure_experiment(unique("traindeploy/ns/creds"))[0]
            run = client.create_run(experiment_id, "cycle-1", {"traindeploy.io/uid": "u"})
            assert client.find_run(experiment_id, {"traindeploy.io/uid": "u"})["run_id"] == run["run_id"]
            assert client.health()
            with pytest.raises(MlflowApiError) as caught:
                client.get_run("0" * 32)
            assert not _leaks(exception_text(caught.value))
    assert "runs/get" in all_logs.text   # the client's debug lines were captured
    assert not _leaks(all_logs.text)


def test_nothing_leaks_when_unreachable(closed_port, all_logs):
    with MlflowRest(f"http://127.0.0.1:{closed_port}", Credentials(token=TOKEN), timeout=1,
                    backoff=0.05) as client:
        with pytest.raises(MlflowUnavailable) as caught:
            client.get_run("r1")
    assert not _leaks(exception_text(caught.value))
    assert "retry" in all_logs.text
    assert not _leaks(all_logs.text)


def test_nothing_leaks_on_retries_and_errors_from_a_stub(stub, all_logs):
    stub.reply(Reply(503, {"error_code": "TEMPORARILY_UNAVAILABLE"}), Reply(401, "<html>who?</html>"))
    with MlflowRest(stub.url, Credentials(username="robot", password=PASSWORD), backoff=0.05) as client:
        with pytest.raises(MlflowApiError) as caught:
            client.get_run("r1")
    assert caught.value.error_code == "UNAUTHENTICATED"
    assert not _leaks(exception_text(caught.value))
    assert not _leaks(all_logs.text)


@pytest.mark.parametrize("token", [TOKEN + "\n", " " + TOKEN, TOKEN + "\u00e9", "a b" + TOKEN])
def test_tokens_that_cannot_be_sent_are_refused_without_quoting_them(token):
    with pytest.raises(ValueError) as caught:
        MlflowRest("http://127.0.0.1:1", Credentials(token=token))
    assert not _leaks(exception_text(caught.value))
    assert "MLFLOW_TRACKING_TOKEN" in str(caught.value)


def test_credentials_from_secret_data():
    def encode(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    assert Credentials.from_secret_data({"MLFLOW_TRACKING_TOKEN": encode(TOKEN)}) == Credentials(token=TOKEN)
    assert Credentials.from_secret_data({"MLFLOW_TRACKING_USERNAME": encode("robot"),
                                         "MLFLOW_TRACKING_PASSWORD": encode(PASSWORD)}) == \
        Credentials(username="robot", password=PASSWORD)
    assert Credentials.from_secret_data(None) == Credentials()
    with pytest.raises(ValueError) as caught:
        Credentials.from_secret_data({"MLFLOW_TRACKING_TOKEN": "%%" + TOKEN})
    assert not _leaks(exception_text(caught.value))
