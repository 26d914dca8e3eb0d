"""The operator's apiserver client without a cluster: errors typed from Status objects, the watch
stream's line framing, query strings, paths, rotating tokens (`traindeploy.apiserver`), and how
`kube.classify` sorts each answer."""

from __future__ import annotations

import json
import os

import pytest

from traindeploy import kube
from traindeploy.apiserver import (SERVICE_ACCOUNT_TOKEN, ApiError, ApiServer, NoCredentials, TokenFile, Unreachable,
                                   WatchStream, in_cluster_server, query_string, status_body)
from traindeploy.kube import Kind


def _status(code: int, reason: str = "", message: str = "", **details) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message, **({"details": details} if details else {})}


@pytest.mark.parametrize(("status", "body", "expected", "fields"), [
    (404, _status(404, "NotFound", "pytorchjobs \"x\" not found", name="x", kind="pytorchjobs"), kube.NotFound, ()),
    (404, _status(404, "NotFound", "the server could not find the requested resource"), kube.KindNotServed, ()),
    (403, _status(403, "Forbidden", "cannot get"), kube.Forbidden, ()),
    (409, _status(409, "AlreadyExists", "exists", name="x"), kube.AlreadyExists, ()),
    (409, _status(409, "Conflict", "the object has been modified"), kube.Conflict, ()),
    (422, _status(422, "Invalid", "bad", causes=[{"field": "spec.a"}, {"message": "no field"}, {"field": "spec.b"}]),
     kube.Invalid, ("spec.a", "spec.b")),
    (400, _status(400, "BadRequest", "denied by webhook"), kube.Refused, ()),
    (413, _status(413, "RequestEntityTooLarge", "too large"), kube.Refused, ()),
    (410, _status(410, "Expired", "too old resource version"), kube.Refused, ()),
    (429, _status(429, "TooManyRequests", "slow down"), kube.KubeUnavailable, ()),
    (500, _status(500, "InternalError", "etcd"), kube.KubeUnavailable, ()),
    (503, {}, kube.KubeUnavailable, ()),
])
def test_answers_are_sorted_by_status_reason_and_details_not_message(status, body, expected, fields):
    error = kube.classify("get X", ApiError.from_status(status, body, "Reason Phrase"))
    assert type(error) is expected
    assert error.status == status and error.reason == (body.get("reason") or "") and error.fields == fields


def test_an_answer_without_a_status_object_keeps_the_status_line():
    error = ApiError.from_status(502, status_body(b"<html>Bad Gateway</html>"), "Bad Gateway")
    assert (error.status, error.reason, error.message, error.details) == (502, "", "HTTP 502 Bad Gateway", {})
    assert kube.classify("get X", error).message == "HTTP 502 Bad Gateway"


def test_a_status_object_names_its_own_code():
    """An ERROR watch event carries no HTTP status: the Status object's code is the one."""
    error = ApiError.from_status(500, _status(410, "Expired", "too old resource version: 1 (42)"))
    assert (error.status, error.reason) == (410, "Expired")


@pytest.mark.parametrize(("data", "body"), [(b"", {}), (b"[1]", {}), (b"not json", {}), (b'{"code": 1}', {"code": 1})])
def test_status_body_is_a_dict_or_empty(data, body):
    assert status_body(data) == body


@pytest.mark.parametrize(("query", "expected"), [
    (None, ""),
    ({}, ""),
    ({"labelSelector": "a=b,c in (d)", "resourceVersion": "0"}, "?labelSelector=a%3Db%2Cc+in+%28d%29&resourceVersion=0"),
    ({"watch": True, "allowWatchBookmarks": False, "timeoutSeconds": 300}, "?watch=true&allowWatchBookmarks=false"
                                                                            "&timeoutSeconds=300"),
    ({"continue": None, "limit": 5}, "?limit=5"),
])
def test_query_strings(query, expected):
    assert query_string(query) == expected


JOBS = Kind("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")


@pytest.mark.parametrize(("kind", "args", "path"), [
    (JOBS, ("ml", "churn"), "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs/churn"),
    (JOBS, ("ml",), "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"),
    (JOBS, (None,), "/apis/kubeflow.org/v1/pytorchjobs"),
    (Kind("traindeploy.io", "v1alpha1", "traindeploys", "TrainDeploy"), ("ml", "churn", "status"),
     "/apis/traindeploy.io/v1alpha1/namespaces/ml/traindeploys/churn/status"),
    (kube.CRD, (None, "a.b.io"), "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/a.b.io"),
    (kube.SECRET, ("ml", "creds"), "/api/v1/namespaces/ml/secrets/creds"),
    (kube.POD, ("ml",), "/api/v1/namespaces/ml/pods"),
    (kube.SECRET, ("ml", "../x"), "/api/v1/namespaces/ml/secrets/..%2Fx"),  # a name stays one segment
])
def test_paths(kind, args, path):
    assert kind.path(*args) == path


@pytest.mark.parametrize(("environ", "server"), [
    ({}, None),
    ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, None),
    ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.0.0.1:443"),
    ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, "https://[fd00::1]:443"),
])
def test_in_cluster_server(environ, server):
    assert in_cluster_server(environ) == server


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_rotated_service_account_token_is_read_again_within_a_minute(tmp_path):
    token, clock = tmp_path / "token", Clock()
    token.write_text("first\n")
    authorization = TokenFile(str(token), clock=clock)
    assert authorization() == "Bearer first"
    token.write_text("second\n")
    clock.now = 59
    assert authorization() == "Bearer first"  # read at most once a minute
    clock.now = 60
    assert authorization() == "Bearer second"
    token.unlink()  # mid-swap: the last token is kept
    clock.now = 200
    assert authorization() == "Bearer second"


def test_a_missing_token_file_is_unreachable(tmp_path):
    with pytest.raises(Unreachable):
        TokenFile(str(tmp_path / "absent"))()


class Response:
    """What WatchStream reads: urllib3's streamed response, its pieces cut anywhere."""

    def __init__(self, pieces: list[bytes], error: Exception | None = None) -> None:
        self.pieces, self.error, self.closed, self.released = pieces, error, False, False

    def stream(self, amount, decode_content=True):
        yield from self.pieces
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True


def _lines(*events: dict) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


ADDED = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}
BOOKMARK = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}


def test_watch_events_are_framed_by_lines_whatever_the_pieces():
    data = _lines(ADDED, BOOKMARK)
    for cut in range(1, len(data)):
        response = Response([data[:cut], data[cut:]])
        assert list(WatchStream(response, "watch x")) == [ADDED, BOOKMARK]
        assert response.closed and response.released  # a watch's connection never serves another request
    assert list(WatchStream(Response([bytes([b]) for b in b"\n" + data + b"\n"]), "watch x")) == [ADDED, BOOKMARK]


def test_an_error_event_ends_the_watch_with_its_status():
    response = Response([_lines(ADDED, {"type": "ERROR", "object": _status(410, "Expired", "too old")}, BOOKMARK)])
    stream = iter(WatchStream(response, "watch x"))
    assert next(stream) == ADDED
    with pytest.raises(ApiError) as error:
        next(stream)
    assert (error.value.status, error.value.reason) == (410, "Expired") and response.closed


def test_a_broken_watch_is_unreachable_unless_it_was_stopped():
    with pytest.raises(Unreachable):
        list(WatchStream(Response([_lines(ADDED)], ConnectionResetError("reset")), "watch x"))
    stream = WatchStream(Response([_lines(ADDED)], ConnectionResetError("reset")), "watch x")
    stream.stop()
    assert list(stream) == [ADDED]


def test_a_line_that_is_not_json_is_unreachable():
    with pytest.raises(Unreachable):
        list(WatchStream(Response([b"<html>\n"]), "watch x"))


@pytest.mark.skipif(os.path.exists(SERVICE_ACCOUNT_TOKEN), reason="runs in a pod")
def test_without_a_service_account_or_kubeconfig_the_operator_cannot_start(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    with pytest.raises(NoCredentials):
        ApiServer.from_environment()
