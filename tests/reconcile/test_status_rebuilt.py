"""The world is the truth: a TrainDeploy whose status is wiped (an empty status through the status
subresource) in each phase, mid-canary included, gets it rebuilt from what exists. Nothing is
created twice, nothing is trained again, and the version that serves keeps serving.

Passes are driven one by one (`reconcile()` then a status write with the resourceVersion read),
the test playing the Training Operator, the trainer and KServe (Knative mode) in between."""

from __future__ import annotations

import datetime as dt

import pytest

from kubernetes import client
from mlflow import MlflowClient

from e2e import manifests
from e2e.players import Players, train_into_run
from e2e.test_canary import canary_td
from e2e.test_lifecycle import create
from traindeploy.config import OperatorConfig
from traindeploy.kube import Conflict, Kube
from traindeploy.reconciler import TRAINDEPLOY, Environment, reconcile


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Driver:
    def __init__(self, api_client, namespace: str, env: Environment) -> None:
        self.kube, self.namespace, self.env = env.kube, namespace, env
        self.custom = client.CustomObjectsApi(api_client)

    def td(self) -> dict:
        return self.kube.get(TRAINDEPLOY, self.namespace, "churn")

    def reconcile(self) -> dict:
        td = self.td()
        outcome = reconcile(td, self.env)
        self.events = [e.reason for e in outcome.events]
        if outcome.status != (td.get("status") or {}):
            self.kube.replace_status(TRAINDEPLOY, self.namespace, "churn", outcome.status,
                                     resource_version=td["metadata"]["resourceVersion"])
        return outcome.status

    def wipe(self) -> None:
        self.kube.replace_status(TRAINDEPLOY, self.namespace, "churn", {},
                                 resource_version=self.td()["metadata"]["resourceVersion"])
        assert self.td().get("status") in (None, {})

    def wiped_and_rebuilt(self) -> dict:
        before = self.reconcile()
        self.wipe()
        after = self.reconcile()
        assert after.get("phase") == before.get("phase")
        kept = ("generation", "specHash", "retrain", "label")
        assert {k: after["cycle"][k] for k in kept} == {k: before["cycle"][k] for k in kept}
        for key in ("modelVersion", "traffic"):
            assert (after.get("serving") or {}).get(key) == (before.get("serving") or {}).get(key), key
        return after


def knative_status(isvc: dict) -> dict:
    """What KServe reports in Knative mode for the percent the spec asks (UPSTREAM.md 4.5)."""
    percent = isvc["spec"]["predictor"].get("canaryTrafficPercent")
    revision = f"churn-predictor-{isvc['metadata']['generation']:05d}"
    traffic = [{"revisionName": revision, "latestRevision": True, "percent": 100}]
    if percent is not None and percent < 100:
        # Tagged targets get a URL of their own; `latest` is tagged with tag routing enabled.
        traffic = [{**traffic[0], "percent": percent}, {"revisionName": "churn-predictor-00001",
                                                       "latestRevision": False, "tag": "prev",
                                                       "percent": 100 - percent,
                                                       "url": "http://prev-churn-predictor.example.com"}]
        if (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/enable-tag-routing") == "true":
            traffic[0].update({"tag": "latest", "url": "http://latest-churn-predictor.example.com"})
    return {"url": "http://churn.example.com", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T00:00:00Z"}],
        "components": {"predictor": {"latestCreatedRevision": revision, "latestReadyRevision": revision,
                                     "traffic": traffic}},
        "modelStatus": {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded",
                                                                   "targetModelState": "Loaded"}}}


def test_status_wiped_in_every_phase_is_rebuilt_from_the_world(api_client, apiserver, namespace, mlflow_server,
                                                              model_name):
    clock = Clock()
    env = Environment(kube=Kube(apiserver), clock=clock, config=OperatorConfig(
        mlflow_tracking_uri=mlflow_server.url, mlflow_artifacts_destination=mlflow_server.artifacts_dir.as_uri()))
    players, driver = Players(api_client, namespace), Driver(api_client, namespace, env)
    registry = MlflowClient(mlflow_server.url)

    def kserve_answers() -> None:
        isvc = players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
        players._status("serving.kserve.io", "v1beta1", "inferenceservices", "churn", knative_status(isvc))

    def runs() -> int:
        status = driver.td()["status"]
        return len(registry.search_runs([status["training"]["mlflowExperimentId"]],
                                        filter_string=f"tags.`traindeploy.io/uid` = '{driver.td()['metadata']['uid']}'"))

    create(api_client, namespace, canary_td(model_name, "Knative", stepIntervalSeconds=60))
    status = driver.wiped_and_rebuilt()  # Training: the job exists, its run too
    assert status["phase"] == "Training" and status["cycle"]["label"] == "g1"
    assert "StatusRebuilt" in driver.events
    assert len(players.list("kubeflow.org", "v1", "pytorchjobs")) == 1 and runs() == 1

    job = players.get("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    train_into_run(job, {"accuracy": 0.9})
    players.pytorchjob("churn-g1-train", "Succeeded")
    status = driver.wiped_and_rebuilt()  # Deploying: version 1 registered, the InferenceService not ready
    assert status["phase"] == "Deploying" and status["model"]["version"] == "1"
    assert [v.version for v in registry.search_model_versions(f"name='{model_name}'")] == ["1"]

    kserve_answers()
    status = driver.wiped_and_rebuilt()  # Ready
    assert status["phase"] == "Ready" and status["serving"]["modelVersion"] == "1" and runs() == 1

    custom = client.CustomObjectsApi(api_client)
    custom.patch_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn",
                                          {"metadata": {"annotations": {"traindeploy.io/retrain": "r1"}}})
    status = driver.wiped_and_rebuilt()  # a retrain in Training
    assert status["cycle"]["label"] == "g1r1" and status["phase"] == "Training"
    assert status["retrain"]["lastToken"] == "r1", "the retrain annotation was consumed"
    assert len(players.list("kubeflow.org", "v1", "pytorchjobs")) == 2 and runs() == 2

    job = players.get("kubeflow.org", "v1", "pytorchjobs", "churn-g1r1-train")
    train_into_run(job, {"accuracy": 0.95})
    players.pytorchjob("churn-g1r1-train", "Succeeded")
    status = driver.reconcile()  # the canary starts at 10%
    assert status["phase"] == "Canary" and status["rollout"]["weight"] == 10
    kserve_answers()
    driver.reconcile()
    clock.advance(61)
    status = driver.reconcile()  # 50%
    assert status["rollout"]["weight"] == 50
    kserve_answers()
    status = driver.wiped_and_rebuilt()  # mid-canary
    assert status["rollout"]["version"] == "2" and status["rollout"]["weight"] == 50
    assert status["rollout"]["stableVersion"] == "1" and status["serving"]["modelVersion"] == "1"
    isvc = players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 50, "the step holds"
    assert registry.get_model_version_by_alias(model_name, "champion").version == "1"

    clock.advance(61)
    driver.reconcile()  # promotion: 100% and wait for KServe
    kserve_answers()
    status = driver.reconcile()
    assert status["phase"] == "Ready" and status["serving"]["modelVersion"] == "2"
    assert registry.get_model_version_by_alias(model_name, "champion").version == "2"
    assert len(players.list("kubeflow.org", "v1", "pytorchjobs")) == 2 and runs() == 2
    assert [v.version for v in registry.search_model_versions(f"name='{model_name}'")] == ["2", "1"]


def test_a_status_write_computed_from_an_older_object_is_refused(api_client, apiserver, namespace, mlflow_server,
                                                                model_name):
    """Optimistic concurrency: the write carries the resourceVersion it was computed from."""
    env = Environment(kube=Kube(apiserver), config=OperatorConfig(mlflow_tracking_uri=mlflow_server.url))
    driver = Driver(api_client, namespace, env)
    create(api_client, namespace, manifests.minimal("churn", model_name))
    stale = driver.td()
    driver.reconcile()
    with pytest.raises(Conflict):
        driver.kube.replace_status(TRAINDEPLOY, namespace, "churn", {"phase": "Failed"},
                                   resource_version=stale["metadata"]["resourceVersion"])
    assert driver.td()["status"]["phase"] == "Training"
