"""A patched InferenceService's Ready can be the previous version's: the object a patch returns
carries the status from before the patch, and KServe keeps Ready (Standard: PredictorReady
through a rolling update) until the new version replaces the old (UPSTREAM.md, errata). Serving
records "Rolled out" and moves `champion` only once the new version's revision (Knative) or
Deployment (Standard) serves it."""

from __future__ import annotations

import pytest

from traindeploy import serving
from traindeploy.children import inferenceservice
from traindeploy.results import Done, Wait
from unit.fakes import FakeKube, FakeMlflow, environment, minimal_spec, run_stage, traindeploy

OLD, NEW = "s3://models/m/1", "s3://models/m/2"


def _status() -> dict:
    return {"cycle": {"generation": 2, "label": "g2", "specHash": "x", "startedAt": "2026-12-01T12:00:00Z"},
            "serving": {"modelVersion": "1", "storageUri": OLD, "inferenceServiceName": "churn",
                        "traffic": "v1 100%"},
            "model": {"name": "churn-model", "version": "2", "storageUri": NEW},
            "conditions": []}


def _isvc(mode: str, storage: str, revision: str | None = None) -> dict:
    status = {"conditions": [{"type": "Ready", "status": "True"}], "deploymentMode": mode}
    if revision:
        status["components"] = {"predictor": {"latestCreatedRevision": revision, "latestReadyRevision": revision,
                                              "traffic": [{"revisionName": revision, "latestRevision": True,
                                                           "percent": 100}]}}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "churn", "namespace": "ml", "annotations": {}},
            "spec": {"predictor": {"minReplicas": 1, "model": {"modelFormat": {"name": "mlflow"},
                                                               "protocolVersion": "v2", "storageUri": storage}}},
            "status": status}


class Replacement:
    """Version 1 serves; version 2 replaces it without a canary."""

    def __init__(self, mode: str) -> None:
        self.kube, self.mlflow = FakeKube(), FakeMlflow()
        self.env = environment(self.kube, self.mlflow)
        self.spec = minimal_spec(serving={"deploymentMode": mode})
        self.status = _status()
        self.kube.objects[("inferenceservices", "churn")] = _isvc(mode, OLD, "churn-predictor-00001"
                                                                  if mode == "Knative" else None)

    def step(self):
        outcome = run_stage(serving.STAGE, traindeploy(self.spec, self.status, generation=2), self.env)
        self.status = outcome.status
        return outcome.result


def test_knative_ready_of_the_replaced_revision_is_not_the_new_version():
    r = Replacement("Knative")
    first = r.step()
    assert isinstance(first, Wait), "the patched object still shows revision 1 as latest and ready"
    assert r.kube.object("inferenceservices", "churn")["spec"]["predictor"]["model"]["storageUri"] == NEW
    assert r.status["serving"]["modelVersion"] == "1"
    assert ("churn-model", "champion") not in r.mlflow.aliases
    assert not r.status.get("rolloutHistory")
    assert isinstance(r.step(), Wait), "no new revision reported: still waiting"
    r.kube.set_status("inferenceservices", "churn", {
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {"predictor": {"latestCreatedRevision": "churn-predictor-00002",
                                     "latestReadyRevision": "churn-predictor-00001"}}})
    assert isinstance(r.step(), Wait), "revision 2 created, not ready"
    r.kube.set_status("inferenceservices", "churn", _isvc("Knative", NEW, "churn-predictor-00002")["status"])
    assert isinstance(r.step(), Done)
    assert r.status["serving"]["modelVersion"] == "2"
    assert r.mlflow.aliases[("churn-model", "champion")] == "2"


def test_standard_ready_during_a_rolling_update_is_not_the_new_version():
    r = Replacement("Standard")
    r.kube.predictor_deployment("churn", OLD)
    assert isinstance(r.step(), Wait), "PredictorReady stays True while the Deployment still runs version 1"
    r.kube.predictor_deployment("churn", NEW, replicas=2, updated=1, old=1)
    waiting = r.step()
    assert isinstance(waiting, Wait) and "1 of 2 replicas updated" in waiting.message
    assert ("churn-model", "champion") not in r.mlflow.aliases
    r.kube.predictor_deployment("churn", NEW, replicas=2)
    assert isinstance(r.step(), Done)
    assert r.mlflow.aliases[("churn-model", "champion")] == "2"
    assert r.status["rolloutHistory"][0]["version"] == "2"


@pytest.mark.parametrize(("reason", "deployment", "expected"), [
    ("not created yet", None, "not created"),
    ("another storage URI", {"annotation": OLD}, "does not run"),
    ("template not observed", {"annotation": NEW, "observed": 1}, "not observed"),
    ("old replicas still terminating", {"annotation": NEW, "replicas": 3}, "old replicas"),
    ("updated but not available", {"annotation": NEW, "available": 0}, "available"),
    ("rolled out", {"annotation": NEW}, "runs"),
])
def test_deployment_serves(reason, deployment, expected):
    obj = None
    if deployment is not None:
        obj = {"metadata": {"name": "churn-predictor", "generation": 2},
               "spec": {"replicas": 2, "template": {"metadata": {"annotations": {
                   inferenceservice.STORAGE_URI_ANNOTATION: deployment["annotation"]}}}},
               "status": {"observedGeneration": deployment.get("observed", 2), "updatedReplicas": 2,
                          "replicas": deployment.get("replicas", 2),
                          "availableReplicas": deployment.get("available", 2)}}
    ready, message = inferenceservice.deployment_serves(obj, NEW)
    assert ready == (expected == "runs"), reason
    assert expected in message, reason
