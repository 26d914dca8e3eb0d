"""What the operator asks of kopf for TrainDeploys: an event handler (which feeds the operator's
own work queue) and a deletion handler that needs kopf's finalizer; no daemon (a kopf daemon per
object keeps a copy of it, a task and more: the queue replaced them) and no creation, update or
resume handlers (kopf keeps no diff base for TrainDeploys, so such a handler would never run)."""

from __future__ import annotations

import kopf
from kopf._core.intents.causes import Reason

from traindeploy import GROUP, PLURAL, handlers


def _traindeploy_handlers(registry) -> list:
    return [h for h in registry.get_all_handlers()
            if h.selector is not None and h.selector.group == GROUP and h.selector.any_name == PLURAL]


def test_the_only_changing_handler_of_traindeploys_is_the_deletion_one():
    registry = kopf.get_default_registry()
    changing = _traindeploy_handlers(registry._changing)
    assert [h.reason for h in changing] == [Reason.DELETE]
    assert changing[0].requires_finalizer, "kopf must add its finalizer, so that deletion waits for it"
    assert _traindeploy_handlers(registry._spawning) == []  # no daemon, no timer
    assert len(_traindeploy_handlers(registry._watching)) == 1  # the event handler


def _body(api_version: str, kind: str) -> kopf.Body:
    return kopf.Body({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "annotations": {}},
                      "spec": {"a": 1}})


def test_traindeploys_have_no_diff_base_and_other_kinds_keep_kopfs():
    storage = handlers.NoDiffBaseForTrainDeploys()
    td = _body(f"{GROUP}/v1alpha1", "TrainDeploy")
    assert storage.build(body=td) == {} and storage.fetch(body=td) == {}
    patch = kopf.Patch()
    storage.store(body=td, patch=patch, essence={"spec": {"a": 1}})
    assert not patch  # nothing written onto a TrainDeploy

    other = _body("example.com/v1", "Probe")
    essence = storage.build(body=other)
    assert essence["spec"] == {"a": 1}
    storage.store(body=other, patch=patch, essence=essence)
    assert "traindeploy.io/last-handled-configuration" in patch["metadata"]["annotations"]
