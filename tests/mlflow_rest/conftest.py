"""Fixtures for the MLflow REST client tests.

The tests play the trainer with the real `mlflow` package (start the run the client made, log
metrics and a pyfunc model) and check what the operator's client reads back from a real server.
A tiny HTTP stub covers what a healthy MLflow never does (5xx, 429, slow answers, HTML pages).
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import mlflow
import mlflow.pyfunc
import pytest
from mlflow import MlflowClient

from traindeploy.mlflow_rest import MlflowRest


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[int], params=None) -> list[int]:
        return [2 * value for value in model_input]


def unique(prefix: str) -> str:
    """A name no other test in the session uses (the server is shared)."""
    return f"{prefix}-{secrets.token_hex(4)}"


def log_model_in_run(tracking_uri: str, run_id: str, name: str = "model") -> str:
    """What a trainer does at the end: log a pyfunc model inside its run. Returns the model id."""
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name=name, python_model=Doubler(), pip_requirements=[])
    return info.model_id


@dataclass
class TrainedRun:
    """One run made by the client, trained by the test side, with a logged model."""

    experiment_id: str
    run_id: str
    model_id: str


@pytest.fixture
def rest(mlflow_server) -> Iterator[MlflowRest]:
    with MlflowRest(mlflow_server.url, timeout=10) as client:
        yield client


@pytest.fixture
def tracking(mlflow_server, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    return MlflowClient(mlflow_server.url)


@pytest.fixture(scope="module")
def trained(mlflow_server) -> TrainedRun:
    """A finished run with metrics and one READY logged model, shared read-only by a module."""
    client = MlflowRest(mlflow_server.url)
    experiment_id = client.ensure_experiment(unique("traindeploy/tests/trained"))[0]
    run = client.create_run(experiment_id, "cycle-1", {"traindeploy.io/uid": unique("uid")})
    tracking = MlflowClient(mlflow_server.url)
    tracking.log_metric(run["run_id"], "accuracy", 0.71, step=0)
    tracking.log_metric(run["run_id"], "accuracy", 0.93, step=1)
    tracking.log_metric(run["run_id"], "loss", 0.2, step=1)
    tracking.log_param(run["run_id"], "lr", "0.01")
    model_id = log_model_in_run(mlflow_server.url, run["run_id"])
    client.close()
    return TrainedRun(experiment_id, run["run_id"], model_id)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def exception_text(exc: BaseException) -> str:
    """What a log line with exc_info would show: str, repr and the whole chained traceback."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


# --- a programmable HTTP stub ----------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)   # dict -> JSON; str -> text/html
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class Stub:
    """Answers each request with the next queued Reply (the last one repeats) and records it."""

    def __init__(self) -> None:
        self.replies: list[Reply] = [Reply()]
        self.seen: list[Seen] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stub.seen.append(Seen(self.command, self.path, dict(self.headers)))
                reply = stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0]
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, str):
                    data, kind = reply.body.encode(), "text/html"
                else:
                    data, kind = json.dumps(reply.body).encode(), "application/json"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up (timeout tests)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reply(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


RUN_JSON = {"run": {"info": {"run_id": "r1", "experiment_id": "1", "status": "FINISHED", "start_time": 5},
                    "data": {"metrics": [{"key": "acc", "value": "NaN", "timestamp": 1, "step": 0}]}}}


@pytest.fixture
def make_client() -> Iterator[Callable[..., MlflowRest]]:
    made: list[MlflowRest] = []

    def make(*args: Any, **kwargs: Any) -> MlflowRest:
        client = MlflowRest(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
