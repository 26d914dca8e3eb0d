"""What the schema cannot catch ends in Ready=False/InvalidSpec; deletion removes children and
keeps MLflow history."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from mlflow import MlflowClient

from e2e import manifests
from e2e.players import train_into_run, wait_for
from e2e.test_lifecycle import _condition, _phase, create


class TestWithoutDefaultMlflow:
    @pytest.fixture
    def operator_settings(self):
        return {}  # the operator has no default tracking URI

    def test_missing_tracking_uri_is_invalid_spec(self, api_client, namespace, players, operator, model_name):
        create(api_client, namespace, manifests.minimal("churn", model_name))
        td = players.wait_td("churn", _phase("Failed"))
        ready = _condition(td, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert "spec.mlflow.trackingUri" in ready["message"]
        warnings = wait_for(lambda: [e for e in client.CoreV1Api(api_client).list_namespaced_event(
            namespace, field_selector="involvedObject.name=churn").items if e.type == "Warning"],
            timeout=30, what="a Warning event")
        assert any(e.reason == "InvalidSpec" for e in warnings)


def test_missing_credentials_secret_waits_then_recovers_without_leaking(
        api_client, namespace, players, operator, model_name, mlflow_server):
    body = manifests.minimal("churn", model_name, mlflow={"credentialsSecretRef": {"name": "mlflow-creds"}})
    create(api_client, namespace, body)
    td = players.wait_td("churn", lambda td: _condition(td, "Ready").get("reason") == "SecretNotFound")
    assert "mlflow-creds" in _condition(td, "Ready")["message"]

    token = "s3cr3t-token-value-never-shown"
    client.CoreV1Api(api_client).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="mlflow-creds"),
        data={"MLFLOW_TRACKING_TOKEN": base64.b64encode(token.encode()).decode()}))
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train", timeout=30)
    env = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLFLOW_TRACKING_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "mlflow-creds", "key": "MLFLOW_TRACKING_TOKEN"}}} in env
    td = players.td("churn")
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert token not in str(td) and token not in str(job)
    assert all(token not in (e.message or "") for e in events)
    assert token not in operator.log_tail(100000)


def test_deleting_a_traindeploy_removes_children_and_keeps_mlflow_history(
        api_client, namespace, players, operator, model_name, mlflow_server):
    create(api_client, namespace, manifests.minimal("churn", model_name))
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    run_id = train_into_run(job, {"accuracy": 0.9})
    players.pytorchjob("churn-g1-train", "Succeeded")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.inferenceservice("churn", ready=True)
    players.wait_td("churn", _phase("Ready"))

    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn")
    wait_for(lambda: players.get("traindeploy.io", "v1alpha1", "traindeploys", "churn") is None,
             timeout=30, what="the TrainDeploy to be gone (finalizer released)")
    wait_for(lambda: not players.list("kubeflow.org", "v1", "pytorchjobs")
             and not players.list("serving.kserve.io", "v1beta1", "inferenceservices"),
             timeout=60, what="children to be garbage-collected")
    registry = MlflowClient(mlflow_server.url)
    assert registry.get_run(run_id).info.run_id == run_id
    assert registry.get_model_version(model_name, "1").run_id == run_id
