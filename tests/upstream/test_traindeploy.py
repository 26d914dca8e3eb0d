"""The whole minimal TrainDeploy through the real controllers: the operator, as its own process,
against the Training Operator v1.9.2 (or Kubeflow Trainer v2.3.0 with JobSet) and KServe v0.20.0 in
Standard mode, with KWOK for the pods and a real MLflow.

Nothing is played but the trainer's work inside its pod (the test logs the metric and the model
into the MLflow run the operator injected, then ends the pod through KWOK) and the model server's
own readiness (KWOK makes the predictor pod Ready). Every child status the operator acts on is the
one the real controllers wrote.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e import manifests
from e2e.operator_process import OperatorProcess
from e2e.players import train_into_run
from harness.upstream import STORAGE_INITIALIZER, Kwok, wait_for

from . import pytorchjobs, trainjobs
from .conftest import NODES

pytestmark = pytest.mark.slow

GPUS = 2


@pytest.fixture
def model_name() -> str:
    """Registered model names are global on the shared MLflow server."""
    return f"model-{secrets.token_hex(4)}"


@pytest.fixture
def operator(upstream_control_plane, namespace, mlflow_server, tmp_path):
    # A short poll: a job whose pods do not start is looked at again (pods are not watched).
    process = OperatorProcess(namespace, upstream_control_plane.kubeconfig, tmp_path, {
        "TRAINDEPLOY_MLFLOW_TRACKING_URI": mlflow_server.url,
        "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": mlflow_server.artifacts_dir.as_uri(),
        "TRAINDEPLOY_POLL_INTERVAL": "2"}).start()
    yield process
    process.stop()
    # Shown with the test's report when it fails.
    print(f"--- operator log ({process.logfile}) ---\n{process.log_tail(200)}")


def _existing(read):
    """`read()`, or None while the object does not exist yet."""
    try:
        return read()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _td(api_client, namespace: str) -> dict:
    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn")


def _phase(api_client, namespace: str, phase: str, timeout: float = 90) -> dict:
    return wait_for(lambda: _td(api_client, namespace), lambda td: (td.get("status") or {}).get("phase") == phase,
                    timeout=timeout, what=f"TrainDeploy phase {phase}")


def _create(api_client, namespace: str, model_name: str, **training) -> dict:
    body = manifests.minimal("churn", model_name)
    body["spec"]["training"].update({"gpus": GPUS, **training})
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys", body)


def _served_by_kserve(api_client, namespace: str, td: dict) -> None:
    """KServe made the predictor from the registered version: its pod fetches the storage URI
    the operator took from MLflow (which holds the model), and the status URLs are KServe's."""
    isvc = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "churn")
    assert isvc["status"]["deploymentMode"] == "Standard"
    assert td["status"]["serving"]["url"] == isvc["status"]["url"]
    storage = td["status"]["model"]["storageUri"]
    assert (Path(storage.removeprefix("file://")) / "MLmodel").is_file()
    (pod,) = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector="serving.kserve.io/inferenceservice=churn").items
    (initializer,) = [c for c in pod.spec.init_containers if c.name == STORAGE_INITIALIZER]
    assert initializer.args[0] == storage
    assert pod.status.phase == "Running" and pod.spec.node_name in NODES


def _ready(td: dict) -> None:
    conditions = {c["type"]: (c["status"], c["reason"]) for c in td["status"]["conditions"]}
    assert conditions["Ready"][0] == "True"
    assert conditions["TrainingSucceeded"] == ("True", "TrainingSucceeded")
    assert conditions["ServingReady"][0] == "True"
    assert td["status"]["serving"]["modelVersion"] == "1"


def test_minimal_traindeploy_is_ready_through_the_training_operator_and_kserve(
        api_client, namespace, training_operator, kserve, operator, model_name):
    _create(api_client, namespace, model_name)
    job = wait_for(lambda: _existing(lambda: pytorchjobs.get(api_client, namespace, "churn-g1-train")), timeout=60,
                   what="the PyTorchJob")
    (master,) = pytorchjobs.wait_pods(api_client, namespace, "churn-g1-train", count=1).values()
    (container,) = [c for c in master.spec.containers if c.name == "pytorch"]
    assert container.resources.limits["nvidia.com/gpu"] == str(GPUS)
    injected = pytorchjobs.env_of(master)
    assert injected["MLFLOW_RUN_ID"] and injected["RANK"] == "0" and injected["WORLD_SIZE"] == "1"
    td = _phase(api_client, namespace, "Training")
    train_into_run(job, {"accuracy": 0.91})
    Kwok.end_pod(client.CoreV1Api(api_client), namespace, master.metadata.name, exit_code=0)
    td = _phase(api_client, namespace, "Ready")
    _ready(td)
    assert td["status"]["training"]["state"] == "Succeeded"
    _served_by_kserve(api_client, namespace, td)


def test_minimal_traindeploy_is_ready_through_trainer_and_kserve(
        api_client, namespace, trainer, kserve, operator, model_name):
    _create(api_client, namespace, model_name, backend="TrainJob",
            runtimeRef={"name": "torch-distributed", "kind": "ClusterTrainingRuntime"})
    job = wait_for(lambda: _existing(lambda: trainjobs.get(api_client, namespace, "churn-g1-train")), timeout=60,
                   what="the TrainJob")
    (pod,) = trainjobs.wait_pods(api_client, namespace, "churn-g1-train", count=1)
    (container,) = [c for c in pod.spec.containers if c.name == "node"]
    assert container.resources.limits["nvidia.com/gpu"] == str(GPUS)
    assert {item.name for item in container.env} >= {"MLFLOW_RUN_ID", "PET_NNODES", "PET_MASTER_ADDR"}
    _phase(api_client, namespace, "Training")
    train_into_run(job, {"accuracy": 0.91})
    trainjobs.end_pod(api_client, pod, exit_code=0)
    td = _phase(api_client, namespace, "Ready")
    _ready(td)
    _served_by_kserve(api_client, namespace, td)


def test_a_failing_master_fails_the_cycle_and_an_unplaceable_job_says_why(
        api_client, namespace, training_operator, operator, model_name):
    """Beyond the nodes' 8 GPUs each, the Master stays Pending and the condition says so; a
    Master that exits 1 (restartPolicy Never) makes the real controller fail the job, and the
    TrainDeploy reports TrainingFailed."""
    _create(api_client, namespace, model_name, gpus=16)
    pending = pytorchjobs.wait_pods(api_client, namespace, "churn-g1-train", count=1, phase="Pending")
    assert next(iter(pending.values())).spec.node_name is None

    def training(td: dict) -> dict:
        return {c["type"]: c for c in (td.get("status") or {}).get("conditions") or []}.get("TrainingSucceeded", {})

    td = wait_for(lambda: _td(api_client, namespace), lambda td: "cannot be scheduled" in training(td).get("message", ""),
                  timeout=60, what="the training condition to say why the job waits")
    assert training(td)["status"] == "Unknown" and td["status"]["phase"] == "Training"
    # The scheduler's own words: the nodes have 8 GPUs each.
    assert "churn-g1-train-master-0" in training(td)["message"] and "nvidia.com/gpu" in training(td)["message"]
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn",
        {"spec": {"training": {"gpus": 1, "restartPolicy": "Never"}}})
    (master,) = wait_for(lambda: pytorchjobs.pods(api_client, namespace, "churn-g2-train"),
                         lambda found: len(found) == 1 and all(p.status.phase == "Running" for p in found.values()),
                         timeout=60, what="the next cycle's Master running").values()
    Kwok.end_pod(client.CoreV1Api(api_client), namespace, master.metadata.name, exit_code=1)
    td = _phase(api_client, namespace, "Failed")
    failed = {c["type"]: c for c in td["status"]["conditions"]}["TrainingSucceeded"]
    assert (failed["status"], failed["reason"]) == ("False", "TrainingFailed")
    assert "churn-g2-train" in failed["message"]
