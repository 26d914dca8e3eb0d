"""Children read from what the watches delivered (`Kube.read_watched`, fed by the operator's
informers) instead of the apiserver, against the real apiserver: a read costs no request, and
an index that lags behind the apiserver never makes the operator create twice or lose a write."""

from __future__ import annotations

import copy
import json

from traindeploy.informer import ChildCache
from traindeploy.kube import Kube, kept
from traindeploy.naming import LABEL_NAME
from traindeploy.stages.training import PYTORCHJOB

from .test_kube_errors import _job


class CountingKube(Kube):
    """Counts the requests that reach the apiserver, by verb."""

    def __init__(self, apiserver) -> None:
        super().__init__(apiserver)
        self.requests: list[str] = []

    def _call(self, what, fn, *args, **kwargs):
        self.requests.append(what.split(" ", 1)[0])
        return super()._call(what, fn, *args, **kwargs)


def _cache(namespace: str, *objects: dict) -> ChildCache:
    """What an informer holds once it listed `namespace` and found `objects` there."""
    cache = ChildCache(LABEL_NAME)
    cache.replace(namespace, objects)
    return cache


def _labelled(namespace: str, name: str, owner: str) -> dict:
    job = _job(namespace, name)
    job["metadata"]["labels"] = {LABEL_NAME: owner}
    return job


def test_a_watched_child_is_read_without_a_request(apiserver, namespace):
    kube = CountingKube(apiserver)
    created, _ = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    index = _cache(namespace, created)
    kube.read_watched(PYTORCHJOB, index)
    kube.requests.clear()
    read = kube.get(PYTORCHJOB, namespace, "churn-g1-train")
    assert read["metadata"]["uid"] == created["metadata"]["uid"] and "managedFields" not in read["metadata"]
    assert kube.get(PYTORCHJOB, namespace, "absent") is None  # the index holds every child: a miss is absent
    assert kube.requests == []
    read["spec"]["edited"] = True  # a caller's edit does not reach the index
    assert "edited" not in kube.get(PYTORCHJOB, namespace, "churn-g1-train")["spec"]


def test_the_index_keeps_a_child_compact(apiserver, namespace):
    """What the index keeps of a child is a string a fraction of the size of the parsed object
    (the operator keeps every child of every TrainDeploy)."""
    kube = Kube(apiserver)
    created, _ = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    assert created["metadata"].get("managedFields")
    compact = kept(created)
    assert isinstance(compact, str) and "managedFields" not in compact
    assert _deep_size(compact) * 3 < _deep_size(json.loads(compact))


def _deep_size(obj) -> int:
    import sys

    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(_deep_size(k) + _deep_size(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sys.getsizeof(obj) + sum(_deep_size(v) for v in obj)
    return sys.getsizeof(obj)


def test_an_index_that_has_not_seen_a_creation_yet_never_creates_twice(apiserver, namespace):
    kube = CountingKube(apiserver)
    first, done = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    assert done == "created"
    kube.read_watched(PYTORCHJOB, _cache(namespace))  # the watch has not delivered it yet
    again, done = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    assert done == "unchanged" and again["metadata"]["uid"] == first["metadata"]["uid"]
    assert kube.requests[-2:] == ["create", "get"]  # refused as AlreadyExists, then read


def test_a_stale_index_costs_a_patch_the_apiserver_keeps_as_it_is(apiserver, namespace):
    """An index entry older than our last patch: the patch is sent again with the same content,
    which the apiserver answers without a new resourceVersion (no write)."""
    kube = CountingKube(apiserver)
    original, _ = kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    wanted = _job(namespace, "churn-g1-train")
    wanted["spec"]["runPolicy"] = {"backoffLimit": 2}
    patched, done = kube.ensure(PYTORCHJOB, copy.deepcopy(wanted))
    assert done == "patched"
    kube.read_watched(PYTORCHJOB, _cache(namespace, original))
    again, done = kube.ensure(PYTORCHJOB, copy.deepcopy(wanted))
    assert done == "patched" and again["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]


def test_kinds_without_an_index_read_the_apiserver(apiserver, namespace):
    kube = CountingKube(apiserver)
    kube.ensure(PYTORCHJOB, _job(namespace, "churn-g1-train"))
    kube.requests.clear()
    assert kube.get(PYTORCHJOB, namespace, "churn-g1-train") is not None
    assert kube.requests == ["get"]


def test_children_of_a_traindeploy_are_listed_from_the_index_by_its_name_label(apiserver, namespace):
    kube = CountingKube(apiserver)
    one, _ = kube.ensure(PYTORCHJOB, _labelled(namespace, "churn-g1-train", "churn"))
    two, _ = kube.ensure(PYTORCHJOB, _labelled(namespace, "churn-g2-train", "churn"))
    other, _ = kube.ensure(PYTORCHJOB, _labelled(namespace, "fraud-g1-train", "fraud"))
    kube.read_watched(PYTORCHJOB, _cache(namespace, one, two, other))
    kube.requests.clear()
    listed = kube.list(PYTORCHJOB, namespace, f"{LABEL_NAME}=churn")
    assert sorted(job["metadata"]["name"] for job in listed) == ["churn-g1-train", "churn-g2-train"]
    assert kube.list(PYTORCHJOB, namespace, f"{LABEL_NAME}=absent") == []
    assert kube.requests == []
    # Another selector is not what the index is keyed by: the apiserver answers it.
    assert [job["metadata"]["name"] for job in kube.list(PYTORCHJOB, namespace, "app=x")] == []
    assert kube.requests == ["list"]
