"""The informers of the children against the real apiserver: what a list and then the watch
deliver is what the passes read, each change is reported (it queues the owner's pass), and a
kind the cluster does not serve is read from the apiserver instead."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from traindeploy.informer import Informers
from traindeploy.kube import Kind, KindNotServed
from traindeploy.naming import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY
from traindeploy.stages.training import PYTORCHJOB

from .test_kube_errors import _job
from .test_watched_reads import CountingKube

SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
GROUP, VERSION, PLURAL = PYTORCHJOB.group, PYTORCHJOB.version, PYTORCHJOB.plural


def _ours(namespace: str, name: str, owner: str) -> dict:
    job = _job(namespace, name)
    job["metadata"]["labels"] = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: owner}
    return job


def _until(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Changes:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, obj: dict) -> None:
        with self.lock:
            self.names.append(obj["metadata"]["name"])


def test_listed_then_watched_children_are_read_from_memory(api_client, apiserver, namespace):
    api = client.CustomObjectsApi(api_client)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _ours(namespace, "churn-g1-train", "churn"))
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _job(namespace, "not-ours"))
    changes = Changes()
    informers = Informers(apiserver, [PYTORCHJOB], [namespace], SELECTOR, LABEL_NAME, changes).start()
    try:
        assert informers.wait_tried(timeout=30)
        kube = CountingKube(apiserver)
        kube.read_watched(PYTORCHJOB, informers.caches[PYTORCHJOB])
        listed = kube.get(PYTORCHJOB, namespace, "churn-g1-train")
        assert listed["metadata"]["labels"][LABEL_NAME] == "churn" and "managedFields" not in listed["metadata"]
        assert kube.get(PYTORCHJOB, namespace, "not-ours") is None  # not labelled as ours: not watched
        assert changes.names == ["churn-g1-train"]

        # Created, changed and deleted after the list: the watch delivers each, and says so.
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _ours(namespace, "churn-g2-train", "churn"))
        _until(lambda: len(kube.list(PYTORCHJOB, namespace, f"{LABEL_NAME}=churn")) == 2, "the second job")
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn-g1-train",
                                           {"spec": {"runPolicy": {"backoffLimit": 3}}})
        _until(lambda: (kube.get(PYTORCHJOB, namespace, "churn-g1-train")["spec"].get("runPolicy") or {})
               .get("backoffLimit") == 3, "the patch")
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn-g2-train")
        _until(lambda: kube.get(PYTORCHJOB, namespace, "churn-g2-train") is None, "the deletion")
        assert [job["metadata"]["name"] for job in kube.list(PYTORCHJOB, namespace, f"{LABEL_NAME}=churn")] == [
            "churn-g1-train"]
        assert changes.names[1:] == ["churn-g2-train", "churn-g1-train", "churn-g2-train"]
        assert kube.requests == []  # every read above came from memory
    finally:
        informers.stop()


def test_a_kind_the_cluster_does_not_serve_is_read_from_the_apiserver(apiserver, namespace):
    missing = Kind("widgets.example.com", "v1", "widgets", "Widget")
    informers = Informers(apiserver, [missing], [namespace], SELECTOR, LABEL_NAME, Changes()).start()
    try:
        assert informers.wait_tried(timeout=30)
        cache = informers.caches[missing]
        assert not cache.synced_for(namespace)
        kube = CountingKube(apiserver)
        kube.read_watched(missing, cache)
        with pytest.raises(KindNotServed):  # the apiserver's answer, not an empty cache's "absent"
            kube.get(missing, namespace, "w")
        assert kube.requests == ["get"]
    finally:
        informers.stop()
