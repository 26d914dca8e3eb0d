"""The operator's own apiserver client (`traindeploy.apiserver`) against the real apiserver:
answers typed by status and reason, merge patches, watch streams (bookmarks, the server's end, a
version too old, a stop from another thread), timeouts, credentials as kopf reads them, and the
informer's relist on 410 Gone."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
import time

import pytest
import yaml
from kubernetes import client

from traindeploy import informer
from traindeploy.apiserver import ApiError, ApiServer, TokenFile, Unreachable
from traindeploy.informer import ChildCache, Informer
from traindeploy.kube import CONFIG_MAP, Kube, KubeUnavailable
from traindeploy.naming import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY
from traindeploy.stages.training import PYTORCHJOB

from .test_informer import Changes, _ours, _until

TIMEOUT = 10


def _config_map(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _refusal(call) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value


def test_answers_are_typed_by_status_reason_and_details(apiserver, namespace):
    collection = CONFIG_MAP.path(namespace)
    created = apiserver.request("POST", collection, body=_config_map("cm", a="1"), timeout=TIMEOUT)
    assert created["metadata"]["name"] == "cm" and created["data"] == {"a": "1"}

    missing = _refusal(lambda: apiserver.request("GET", CONFIG_MAP.path(namespace, "absent"), timeout=TIMEOUT))
    assert (missing.status, missing.reason, missing.details.get("name")) == (404, "NotFound", "absent")
    not_served = _refusal(lambda: apiserver.request("GET", PYTORCHJOB.path(namespace, "x").replace("v1", "v9"),
                                                    timeout=TIMEOUT))
    assert not_served.status == 404 and not not_served.details.get("name")
    exists = _refusal(lambda: apiserver.request("POST", collection, body=_config_map("cm"), timeout=TIMEOUT))
    assert (exists.status, exists.reason) == (409, "AlreadyExists")
    apiserver.request("PATCH", CONFIG_MAP.path(namespace, "cm"), body={"data": {"b": "2"}},
                      content_type="application/merge-patch+json", timeout=TIMEOUT)
    stale = _refusal(lambda: apiserver.request("PUT", CONFIG_MAP.path(namespace, "cm"), body=created,
                                               timeout=TIMEOUT))
    assert (stale.status, stale.reason) == (409, "Conflict")
    invalid = _refusal(lambda: apiserver.request("POST", collection, body=_config_map("Not_A_Name"), timeout=TIMEOUT))
    assert (invalid.status, invalid.reason) == (422, "Invalid")
    assert "metadata.name" in [cause.get("field") for cause in invalid.details["causes"]]
    assert "Not_A_Name" in invalid.message  # the apiserver's own words


def test_a_merge_patch_sets_and_removes_keys(apiserver, namespace):
    apiserver.request("POST", CONFIG_MAP.path(namespace), body=_config_map("cm", a="1", b="2"), timeout=TIMEOUT)
    patched = apiserver.request("PATCH", CONFIG_MAP.path(namespace, "cm"), body={"data": {"a": None, "c": "3"}},
                                content_type="application/merge-patch+json", timeout=TIMEOUT)
    assert patched["data"] == {"b": "2", "c": "3"}


def test_kube_reads_secrets_config_maps_and_pods_as_the_api_writes_them(api_client, apiserver, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"),
                                                             string_data={"TOKEN": "s3cret"}))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="prep"),
                                                                    data={"pipeline.yaml": "a: 1"}))
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="worker", labels={"job": "churn"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="t:1")],
                              restart_policy="Never")))
    kube = Kube(apiserver)
    assert kube.secret_data(namespace, "creds") == {"TOKEN": "s3cret"}
    assert kube.secret_data(namespace, "absent") is None
    assert kube.config_map_data(namespace, "prep") == {"pipeline.yaml": "a: 1"}
    assert kube.config_map_data(namespace, "absent") is None
    (pod,) = kube.pods(namespace, "job=churn")
    assert pod["metadata"]["name"] == "worker" and pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["image"] == "t:1"
    assert kube.pods(namespace, "job=other") == []


def _collect(stream, until: str, events: list) -> None:
    for event in stream:
        events.append(event)
        if event["type"] == until:
            return


def test_a_watch_delivers_each_change_from_the_listed_version(apiserver, namespace):
    collection = CONFIG_MAP.path(namespace)
    apiserver.request("POST", collection, body=_config_map("before"), timeout=TIMEOUT)
    version = apiserver.request("GET", collection, timeout=TIMEOUT)["metadata"]["resourceVersion"]
    events: list[dict] = []
    with apiserver.watch(collection, {"resourceVersion": version, "allowWatchBookmarks": True,
                                      "timeoutSeconds": 30}, timeout=35) as stream:
        reader = threading.Thread(target=_collect, args=(stream, "DELETED", events))
        reader.start()
        apiserver.request("POST", collection, body=_config_map("cm", a="1"), timeout=TIMEOUT)
        apiserver.request("PATCH", CONFIG_MAP.path(namespace, "cm"), body={"data": {"a": "2"}},
                          content_type="application/merge-patch+json", timeout=TIMEOUT)
        apiserver.request("DELETE", CONFIG_MAP.path(namespace, "cm"), timeout=TIMEOUT)
        reader.join(20)
    changes = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]
    assert changes == [("ADDED", "cm"), ("MODIFIED", "cm"), ("DELETED", "cm")]  # "before" predates the version
    assert events[1]["object"]["data"] == {"a": "2"}


def test_the_server_ends_a_watch_after_its_timeout_seconds(apiserver, namespace):
    started = time.monotonic()
    with apiserver.watch(CONFIG_MAP.path(namespace), {"timeoutSeconds": 1}, timeout=10) as stream:
        assert [e for e in stream if e["type"] != "ADDED"] == []
    assert time.monotonic() - started < 8


def _watch_from(apiserver, path: str, version: str) -> list[dict]:
    with apiserver.watch(path, {"resourceVersion": version, "timeoutSeconds": 5}, timeout=10) as stream:
        return list(stream)


def test_a_watch_from_a_version_too_old_is_gone(apiserver, namespace):
    """A kind's watch cache starts at the version it was filled at (for a custom resource: well
    after version 1) and remembers only later ones: an older one is refused with 410, as an HTTP
    answer or as an ERROR event; either raises ApiError."""
    deadline = time.monotonic() + 30
    while True:
        with pytest.raises(ApiError) as refused:
            _watch_from(apiserver, PYTORCHJOB.path(namespace), "1")
        if refused.value.status != 429 or time.monotonic() > deadline:  # 429: the cache is still filling
            break
        time.sleep(0.5)
    assert (refused.value.status, refused.value.reason) == (410, "Expired")


def test_a_silent_watch_is_unreachable_after_its_timeout(apiserver, namespace):
    started = time.monotonic()
    with pytest.raises(Unreachable):
        with apiserver.watch(CONFIG_MAP.path(namespace), {"timeoutSeconds": 60}, timeout=1) as stream:
            list(stream)
    assert time.monotonic() - started < 5


def test_a_watch_stops_at_once_when_asked_from_another_thread(apiserver, namespace):
    events: list[dict] = []
    stream = apiserver.watch(CONFIG_MAP.path(namespace), {"timeoutSeconds": 60}, timeout=60)
    reader = threading.Thread(target=_collect, args=(stream, "DELETED", events))
    reader.start()
    time.sleep(0.5)
    started = time.monotonic()
    stream.stop()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - started < 2
    # The pool serves the next request on a fresh connection.
    assert apiserver.request("GET", CONFIG_MAP.path(namespace), timeout=TIMEOUT)["items"] == []


def test_an_apiserver_that_accepts_but_never_answers_is_unavailable():
    with socket.socket() as listener:  # the kernel accepts connections; nobody ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        api = ApiServer(f"https://127.0.0.1:{listener.getsockname()[1]}", insecure=True)
        started = time.monotonic()
        with pytest.raises(Unreachable):
            api.request("GET", "/version", timeout=0.5)
        with pytest.raises(KubeUnavailable):
            Kube(api, timeout=0.5).get(PYTORCHJOB, "ml", "job")
        assert time.monotonic() - started < 4  # each request bounded by its timeout, never retried


def _kubeconfig(path, control_plane, **cluster) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": control_plane.server, **cluster}}],
        "users": [{"name": "u", "user": {"token": control_plane.admin_token}}]}))


@pytest.mark.parametrize("cluster", ["inline CA", "insecure"])
def test_credentials_come_from_the_kubeconfig_as_kopf_reads_it(control_plane, tmp_path, monkeypatch, cluster):
    ca = base64.b64encode(control_plane.ca_file.read_bytes()).decode()
    _kubeconfig(tmp_path / "config", control_plane, **({"certificate-authority-data": ca} if cluster == "inline CA"
                                                        else {"insecure-skip-tls-verify": True}))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    api = ApiServer.from_environment()
    assert api.request("GET", "/version", timeout=TIMEOUT)["major"]


def test_a_kubeconfig_server_with_a_wrong_ca_is_unreachable(control_plane, tmp_path, monkeypatch):
    other = base64.b64encode(_other_ca(tmp_path)).decode()
    _kubeconfig(tmp_path / "config", control_plane, **{"certificate-authority-data": other})
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    with pytest.raises(Unreachable):  # the TLS handshake fails: nothing was answered
        ApiServer.from_environment().request("GET", "/version", timeout=TIMEOUT)


def _other_ca(tmp_path) -> bytes:
    """A CA that did not sign the apiserver's certificate."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "key"), "-out", str(tmp_path / "ca"), "-days", "1",
                    "-subj", "/CN=other"], check=True, capture_output=True, timeout=30)
    return (tmp_path / "ca").read_bytes()


def test_a_rotated_token_file_is_read_again(control_plane, tmp_path):
    token = tmp_path / "token"
    token.write_text("not-a-token")
    api = ApiServer(control_plane.server, authorization=TokenFile(str(token), reread=0),
                    ssl_context=ssl.create_default_context(cafile=str(control_plane.ca_file)))
    unauthorized = _refusal(lambda: api.request("GET", "/version", timeout=TIMEOUT))
    assert (unauthorized.status, unauthorized.reason) == (401, "Unauthorized")
    token.write_text(control_plane.admin_token + "\n")
    assert api.request("GET", "/api/v1/namespaces/default", timeout=TIMEOUT)["metadata"]["name"] == "default"


class FirstWatchTooOld(Informer):
    """An informer whose first watch starts from a version the watch cache has forgotten."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.lists = 0

    def _list(self) -> str:
        self.lists += 1
        version = super()._list()
        return "1" if self.lists == 1 else version


def test_an_informer_whose_watch_is_gone_lists_again(apiserver, namespace, monkeypatch):
    monkeypatch.setattr(informer, "RETRY_SECONDS", 0.1)
    custom = Kube(apiserver)
    custom.ensure(PYTORCHJOB, _ours(namespace, "churn-g1-train", "churn"))
    cache, changes = ChildCache(LABEL_NAME), Changes()
    watching = FirstWatchTooOld(apiserver, PYTORCHJOB, namespace, f"{LABEL_MANAGED_BY}={MANAGED_BY}", cache,
                                changes).start()
    try:
        _until(lambda: watching.lists >= 2, "a second list after 410 Gone")
        assert cache.synced_for(namespace) and cache.get((namespace, "churn-g1-train"))
        custom.ensure(PYTORCHJOB, _ours(namespace, "churn-g2-train", "churn"))
        _until(lambda: cache.get((namespace, "churn-g2-train")), "the watch after the relist")
        assert watching.lists == 2
        assert changes.names == ["churn-g1-train", "churn-g2-train"]  # the relist changed nothing
    finally:
        watching.stop()
    watching._thread.join(5)
    assert not watching._thread.is_alive()  # stop() ends the watch in flight at once
