"""A TrainDeploy driven through every stage on the real control plane and MLflow, with the tests
playing the upstream controllers and the trainer."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client
from mlflow import MlflowClient

from e2e import manifests
from e2e.players import train_into_run, wait_for


def _condition(td: dict, condition_type: str) -> dict:
    return next((c for c in td.get("status", {}).get("conditions", []) if c["type"] == condition_type), {})


def _phase(phase: str):
    return lambda td: td.get("status", {}).get("phase") == phase


def create(api_client, namespace: str, body: dict) -> dict:
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys", body)


def test_minimal_path_trains_registers_and_serves(api_client, namespace, players, operator, mlflow_server,
                                                  model_name, control_plane):
    create(api_client, namespace, manifests.minimal("churn", model_name))

    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    td = players.wait_td("churn", _phase("Training"))
    assert _condition(td, "TrainingSucceeded")["status"] == "Unknown"
    assert _condition(td, "Ready")["status"] == "False"
    assert td["status"]["observedGeneration"] == td["metadata"]["generation"]
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert master["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert job["metadata"]["ownerReferences"][0]["uid"] == td["metadata"]["uid"]

    run_id = train_into_run(job, {"accuracy": 0.91})
    assert td["status"]["training"]["mlflowRunId"] == run_id
    players.pytorchjob("churn-g1-train", "Succeeded")

    isvc = players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    td = players.wait_td("churn", _phase("Deploying"))
    assert _condition(td, "GatePassed")["status"] == "True"
    assert _condition(td, "ModelRegistered")["status"] == "True"
    assert td["status"]["model"]["version"] == "1"
    registry = MlflowClient(mlflow_server.url)
    version = registry.get_model_version_by_alias(model_name, "challenger")
    assert version.version == "1" and version.run_id == run_id
    assert version.tags["traindeploy.io/uid"] == td["metadata"]["uid"]
    assert version.tags["traindeploy.io/training-job"] == "churn-g1-train"
    storage_uri = td["status"]["model"]["storageUri"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == storage_uri
    # The URI KServe gets is where the artifacts really are, not an MLflow-only scheme.
    assert storage_uri.startswith(mlflow_server.artifacts_dir.as_uri())
    assert (Path(storage_uri.removeprefix("file://")) / "MLmodel").is_file()

    players.inferenceservice("churn", ready=True)
    td = players.wait_td("churn", _phase("Ready"))
    assert _condition(td, "Ready")["status"] == "True"
    assert _condition(td, "ServingReady")["status"] == "True"
    assert td["status"]["serving"]["url"] == f"http://churn-{namespace}.example.com"
    assert td["status"]["serving"]["modelVersion"] == "1"
    assert registry.get_model_version_by_alias(model_name, "champion").version == "1"
    # kopf's bookkeeping on the object is its finalizer (a deletion waits for the outside work to
    # stop) and nothing else: no last-handled copy of the spec, patched onto every new object.
    # The operator's first status write waited for that patch, so no write met a conflict.
    assert td["metadata"]["finalizers"] == ["traindeploy.io/finalizer"]
    assert not [key for key in td["metadata"].get("annotations") or {} if key.startswith("traindeploy.io/")]
    conflicts = operator.scrape().get(("traindeploy_status_write_conflicts_total", ()), None)
    assert conflicts == 0

    events = wait_for(lambda: [e.reason for e in client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=churn").items],
        lambda reasons: {"TrainingSucceeded", "ModelRegistered", "Ready"} <= set(reasons), timeout=30,
        what="stage Events")
    assert "Created" in events

    # The kubectl experience, with the real kubectl: wait on the Ready condition, see the stages
    # as Events in describe, and the summary columns in get.
    control_plane.kubectl_run("wait", "-n", namespace, "--for=condition=Ready", "td/churn", "--timeout=30s")
    described = control_plane.kubectl_run("describe", "-n", namespace, "td/churn").stdout
    for reason in ("TrainingSucceeded", "GatePassed", "ModelRegistered", "ServingReady"):
        assert reason in described
    listed = control_plane.kubectl_run("get", "-n", namespace, "td").stdout.splitlines()
    assert listed[0].split()[:6] == ["NAME", "PHASE", "MODEL", "VERSION", "TRAFFIC", "READY"]
    assert listed[1].split()[:4] == ["churn", "Ready", model_name, "1"]
    assert "v1 100%" in listed[1]
    # Idle: nothing is written while nothing changes.
    version = players.td("churn")["metadata"]["resourceVersion"]
    time.sleep(3)
    assert players.td("churn")["metadata"]["resourceVersion"] == version
