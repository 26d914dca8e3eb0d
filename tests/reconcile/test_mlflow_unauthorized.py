"""MLflow 401 against the real server (MLflow's basic-auth app): the cycle is held, not failed,
and goes on by itself once the credentials Secret is fixed. No password appears anywhere."""

from __future__ import annotations

import base64
import secrets

import pytest
from kubernetes import client

from e2e import manifests
from e2e.test_lifecycle import create
from harness.mlflow_server import MlflowServer
from traindeploy.config import OperatorConfig
from traindeploy.kube import Kube
from traindeploy.reconciler import Environment, reconcile


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory):
    server = MlflowServer(workdir=tmp_path_factory.mktemp("mlflow-auth"), admin_password=secrets.token_hex(12))
    with server:
        yield server


def _secret_data(password: str) -> dict[str, str]:
    values = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def test_a_rejected_password_holds_the_cycle_until_the_secret_is_fixed(api_client, apiserver, namespace, auth_mlflow,
                                                                      model_name, all_logs):
    core = client.CoreV1Api(api_client)
    wrong = secrets.token_hex(12)
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="mlflow-creds"),
                                                             data=_secret_data(wrong)))
    body = manifests.minimal("churn", model_name)
    body["spec"]["mlflow"] = {"credentialsSecretRef": {"name": "mlflow-creds"}}
    td = create(api_client, namespace, body)
    env = Environment(kube=Kube(apiserver), config=OperatorConfig(mlflow_tracking_uri=auth_mlflow.url))

    held = reconcile(td, env)
    ready = next(c for c in held.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "MLflowUnauthorized")
    assert "spec.mlflow.credentialsSecretRef" in ready["message"]
    assert held.blocked and held.status["phase"] == "Pending", "held with backoff, not failed"
    assert not client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs")["items"]

    core.patch_namespaced_secret("mlflow-creds", namespace, {"data": _secret_data(auth_mlflow.admin_password)})
    td["status"] = held.status
    resumed = reconcile(td, env)
    assert resumed.status["phase"] == "Training" and resumed.status["training"]["mlflowRunId"]
    assert not resumed.blocked
    for password in (wrong, auth_mlflow.admin_password):
        assert password not in str(held.status) + str(resumed.status) + all_logs.text
        assert all(password not in e.message for e in held.events + resumed.events)
