"""A crash after acting but before the status write: the next pass finds what the first created.

`reconcile()` is called directly, and the first pass's status is thrown away, as if the operator
died right before writing it."""

from __future__ import annotations

from kubernetes import client
from mlflow import MlflowClient

from e2e import manifests
from e2e.players import Players, train_into_run
from e2e.test_lifecycle import create
from traindeploy.config import OperatorConfig
from traindeploy.kube import Kube
from traindeploy.reconciler import Environment, reconcile


def test_lost_status_writes_create_nothing_twice(api_client, apiserver, namespace, mlflow_server, model_name):
    env = Environment(kube=Kube(apiserver), config=OperatorConfig(
        mlflow_tracking_uri=mlflow_server.url, mlflow_artifacts_destination=mlflow_server.artifacts_dir.as_uri()))
    players = Players(api_client, namespace)
    td = create(api_client, namespace, manifests.minimal("churn", model_name))

    first = reconcile(td, env)
    second = reconcile(td, env)  # the same object: the first status never reached the apiserver
    assert second.status["training"]["mlflowRunId"] == first.status["training"]["mlflowRunId"]
    assert len(players.list("kubeflow.org", "v1", "pytorchjobs")) == 1
    registry = MlflowClient(mlflow_server.url)
    runs = registry.search_runs([first.status["training"]["mlflowExperimentId"]],
                                filter_string=f"tags.`traindeploy.io/uid` = '{td['metadata']['uid']}'")
    assert len(runs) == 1

    job = players.get("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    train_into_run(job, {"accuracy": 0.9})
    players.pytorchjob("churn-g1-train", "Succeeded")
    td["status"] = second.status
    registered = reconcile(td, env)
    again = reconcile(td, env)  # registration's status write lost too
    assert registered.status["model"]["version"] == again.status["model"]["version"] == "1"
    assert [v.version for v in registry.search_model_versions(f"name='{model_name}'")] == ["1"]
    assert len(players.list("serving.kserve.io", "v1beta1", "inferenceservices")) == 1
    assert client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "churn")
