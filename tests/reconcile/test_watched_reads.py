"""Children read from what the watches delivered (`Kube.read_watched`, fed with kopf's indexes by
the operator) instead of the apiserver, against the real apiserver: a read costs no request, and
an index that lags behind the apiserver never makes the operator create twice or lose a write."""

from __future__ import annotations

import copy

from traindeploy.kube import Kube, slim
from traindeploy.stages.training import PYTORCHJOB

from .test_kube_errors import _job


class CountingKube(Kube):
    """Counts the requests that reach the apiserver, by verb."""

    def __init__(self, api_client) -> None:
        super().__init__(api_client)
        self.requests: list[str] = []

    def _call(self, what, fn, *args, **kwargs):
        self.requests.append(what.split(" ", 1)[0])
        return super()._call(what, fn, *args, **kwargs)


def _index(*objects: dict) -> dict:
    """The shape of a kopf index of our `_index_child`: (namespace, name) -> the objects there."""
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): [slim(o)] for o in objects}


def test_a_watched_child_is_read_without_a_request(api_client, namespace):
    kube = CountingKube(api_client)
    created, _ = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    index = _index(created)
    kube.read_watched(PYTORCHJOB, index)
    kube.requests.clear()
    read = kube.get(PYTORCHJOB, namespace, "churn-g1-train")
    assert read["metadata"]["uid"] == created["metadata"]["uid"] and "managedFields" not in read["metadata"]
    assert kube.get(PYTORCHJOB, namespace, "absent") is None  # the index holds every child: a miss is absent
    assert kube.requests == []
    read["spec"]["edited"] = True  # a caller's edit does not reach the index
    assert "edited" not in index[(namespace, "churn-g1-train")][0]["spec"]


def test_an_index_that_has_not_seen_a_creation_yet_never_creates_twice(api_client, namespace):
    kube = CountingKube(api_client)
    first, done = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    assert done == "created"
    kube.read_watched(PYTORCHJOB, _index())  # the watch has not delivered it yet
    again, done = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    assert done == "unchanged" and again["metadata"]["uid"] == first["metadata"]["uid"]
    assert kube.requests[-2:] == ["create", "get"]  # refused as AlreadyExists, then read


def test_a_stale_index_costs_a_patch_the_apiserver_keeps_as_it_is(api_client, namespace):
    """An index entry older than our last patch: the patch is sent again with the same content,
    which the apiserver answers without a new resourceVersion (no write)."""
    kube = CountingKube(api_client)
    original, _ = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    wanted = _job(namespace, "churn-g1-train")
    wanted["spec"]["runPolicy"] = {"backoffLimit": 2}
    patched, done = kube.ensure(PYTORCHJOB, copy.deepcopy(wanted))
    assert done == "patched"
    kube.read_watched(PYTORCHJOB, _index(original))
    again, done = kube.ensure(PYTORCHJOB, copy.deepcopy(wanted))
    assert done == "patched" and again["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]


def test_kinds_without_an_index_read_the_apiserver(api_client, namespace):
    kube = CountingKube(api_client)
    kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    kube.requests.clear()
    assert kube.get(PYTORCHJOB, namespace, "churn-g1-train") is not None
    assert kube.requests == ["get"]
