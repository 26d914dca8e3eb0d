"""Each failure ends in the right condition and reason; nothing is deployed after a failure."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from e2e import manifests
from e2e.players import train_into_run, wait_for
from e2e.test_lifecycle import _condition, _phase, create
from harness.mlflow_server import MlflowServer


def test_failed_pytorchjob_fails_the_cycle(api_client, namespace, players, operator, model_name):
    create(api_client, namespace, manifests.minimal("churn", model_name))
    players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    players.pytorchjob("churn-g1-train", "Failed")
    td = players.wait_td("churn", _phase("Failed"))
    assert _condition(td, "TrainingSucceeded")["status"] == "False"
    assert _condition(td, "TrainingSucceeded")["reason"] == "TrainingFailed"
    assert "1 Master replica(s) failed" in _condition(td, "TrainingSucceeded")["message"]
    assert _condition(td, "Ready")["reason"] == "TrainingFailed"
    assert players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn") is None


def test_failed_gate_registers_and_deploys_nothing(api_client, namespace, players, operator, mlflow_server,
                                                   model_name):
    create(api_client, namespace, manifests.minimal("churn", model_name))
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    train_into_run(job, {"accuracy": 0.55})
    players.pytorchjob("churn-g1-train", "Succeeded")
    td = players.wait_td("churn", _phase("Failed"))
    gate = _condition(td, "GatePassed")
    assert (gate["status"], gate["reason"]) == ("False", "GateFailed")
    assert "accuracy=0.55 is below the threshold 0.8" in gate["message"]
    assert _condition(td, "ModelRegistered") == {}
    assert MlflowClient(mlflow_server.url).search_model_versions(f"name='{model_name}'") == []
    time.sleep(2)  # the failed cycle stays failed: nothing appears later either
    assert players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn") is None


def test_missing_gate_metric_fails_clearly(api_client, namespace, players, operator, model_name):
    create(api_client, namespace, manifests.minimal("churn", model_name))
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    train_into_run(job, {"loss": 0.3})
    players.pytorchjob("churn-g1-train", "Succeeded")
    td = players.wait_td("churn", _phase("Failed"))
    assert _condition(td, "GatePassed")["reason"] == "GateMetricMissing"


def test_training_deadline_fails_the_stage_and_stops_the_job(api_client, namespace, players, operator,
                                                             model_name):
    body = manifests.minimal("churn", model_name)
    body["spec"]["training"]["activeDeadlineSeconds"] = 2
    create(api_client, namespace, body)
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 2
    players.pytorchjob("churn-g1-train", "Running")  # the controller never finishes it
    td = players.wait_td("churn", _phase("Failed"), timeout=30)
    assert _condition(td, "TrainingSucceeded")["reason"] == "TrainingDeadlineExceeded"
    wait_for(lambda: players.get("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train") is None,
             timeout=10, what="the timed-out job to be deleted")


def test_failed_model_load_fails_serving(api_client, namespace, players, operator, model_name):
    create(api_client, namespace, manifests.minimal("churn", model_name))
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    train_into_run(job, {"accuracy": 0.9})
    players.pytorchjob("churn-g1-train", "Succeeded")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.inferenceservice("churn", failed_load=True)
    td = players.wait_td("churn", _phase("Failed"))
    assert _condition(td, "ServingReady")["reason"] == "ServingFailed"
    assert "ModelLoadFailed" in _condition(td, "ServingReady")["message"]


def test_serving_readiness_deadline(api_client, namespace, players, operator, model_name):
    create(api_client, namespace, manifests.minimal("churn", model_name, serving={"timeoutSeconds": 2}))
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    train_into_run(job, {"accuracy": 0.9})
    players.pytorchjob("churn-g1-train", "Succeeded")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.inferenceservice("churn", ready=False)
    td = players.wait_td("churn", _phase("Failed"), timeout=30)
    assert _condition(td, "ServingReady")["reason"] == "ServingDeadlineExceeded"


class TestMlflowOutage:
    """With an MLflow server of its own, which the test stops and starts again."""

    @pytest.fixture
    def flaky_mlflow(self, tmp_path):
        server = MlflowServer(workdir=tmp_path / "mlflow").start()
        yield server
        server.stop()

    @pytest.fixture
    def operator_settings(self, flaky_mlflow):
        return {"TRAINDEPLOY_MLFLOW_TRACKING_URI": flaky_mlflow.url,
                "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": flaky_mlflow.artifacts_dir.as_uri()}

    def test_mlflow_outage_backs_off_says_so_and_recovers(self, api_client, namespace, players, operator,
                                                          flaky_mlflow, model_name):
        flaky_mlflow.stop()
        create(api_client, namespace, manifests.minimal("churn", model_name))
        td = players.wait_td("churn", lambda td: _condition(td, "Ready").get("reason") == "MLflowUnavailable",
                             what="Ready=False MLflowUnavailable")
        assert _condition(td, "TrainingSucceeded")["status"] == "Unknown"
        assert _condition(td, "TrainingSucceeded")["reason"] == "MLflowUnavailable"
        assert flaky_mlflow.url in _condition(td, "Ready")["message"]
        # No job before the run exists: the job must carry the run id.
        assert players.get("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train") is None

        flaky_mlflow.start()
        job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train", timeout=60)
        td = players.wait_td("churn", _phase("Training"))
        assert _condition(td, "Ready")["reason"] == "Training"
        train_into_run(job, {"accuracy": 0.9})
        players.pytorchjob("churn-g1-train", "Succeeded")
        players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
        runs = MlflowClient(flaky_mlflow.url).search_runs(
            [td["status"]["training"]["mlflowExperimentId"]],
            filter_string=f"tags.`traindeploy.io/uid` = '{td['metadata']['uid']}'")
        assert len(runs) == 1
