"""Every stage on: a KFP run, a Katib search whose best trial feeds training, multi-worker GPU
training, the gate, registration and serving; and the Trainer v2 (TrainJob) backend."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client
from mlflow import MlflowClient

from e2e import manifests
from e2e.players import train_into_run
from e2e.test_lifecycle import _condition, _phase, create
from harness.kfp_fake import KfpFake

PIPELINE = Path(__file__).parents[1] / "kfp" / "data" / "prep_pipeline.yaml"


def pipeline_config_map(api_client, namespace: str) -> None:
    client.CoreV1Api(api_client).create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="prep-pipeline"), data={"pipeline.yaml": PIPELINE.read_text()}))


def only_run(kfp: KfpFake) -> dict:
    runs = list(kfp.runs.values())
    assert len(runs) == 1, f"expected one KFP run, found {len(runs)}"
    return runs[0]


def test_full_path_with_every_stage(api_client, namespace, players, operator, mlflow_server, model_name, kfp):
    pipeline_config_map(api_client, namespace)
    create(api_client, namespace, manifests.full("churn", model_name, kfp.url))

    td = players.wait_td("churn", lambda td: (td.get("status", {}).get("pipeline") or {}).get("runId"))
    assert td["status"]["phase"] == "PipelineRunning"
    run = only_run(kfp)
    assert run["display_name"] == f"traindeploy-{namespace}-churn-g1-{td['metadata']['uid']}"
    assert run["runtime_config"]["parameters"] == {"rows": 1000, "source": "s3://data/raw"}
    assert run["pipeline_spec"]["pipelineInfo"]["name"]
    kfp.set_run_state(run["run_id"], "RUNNING")
    kfp.set_run_state(run["run_id"], "SUCCEEDED")

    experiment = players.wait_child("kubeflow.org", "v1beta1", "experiments", "churn-g1-tune")
    td = players.wait_td("churn", _phase("Tuning"))
    assert _condition(td, "PipelineSucceeded")["status"] == "True"
    assert td["status"]["pipeline"]["state"] == "SUCCEEDED"
    assert td["status"]["pipeline"]["url"].endswith(f"/#/runs/details/{run['run_id']}")
    trial = experiment["spec"]["trialTemplate"]["trialSpec"]
    assert trial["kind"] == "PyTorchJob"
    assert experiment["spec"]["maxTrialCount"] == 4
    players.experiment("churn-g1-tune", "Succeeded", best={"lr": "0.0213", "batch_size": "64"}, value="0.97")

    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    td = players.wait_td("churn", _phase("Training"))
    assert td["status"]["tuning"]["bestParameters"] == {"lr": "0.0213", "batch_size": "64"}
    assert td["status"]["tuning"]["bestObjectiveValue"] == "0.97"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Worker"]["replicas"] == 2
    master = replicas["Master"]["template"]["spec"]["containers"][0]
    assert "--lr=0.0213" in master["args"] and "--batch_size=64" in master["args"]
    assert "--epochs=3" in master["args"]
    assert master["resources"]["limits"]["nvidia.com/gpu"] == 1

    run_id = train_into_run(job, {"accuracy": 0.96})
    players.pytorchjob("churn-g1-train", "Succeeded")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.inferenceservice("churn", ready=True)
    td = players.wait_td("churn", _phase("Ready"))

    assert [c["type"] for c in td["status"]["conditions"] if c["status"] == "True"] == [
        "PipelineSucceeded", "TuningSucceeded", "TrainingSucceeded", "GatePassed", "ModelRegistered",
        "ServingReady", "Ready"]
    version = MlflowClient(mlflow_server.url).get_model_version(model_name, td["status"]["model"]["version"])
    assert version.tags["traindeploy.io/kfp-run-id"] == run["run_id"]
    assert version.tags["traindeploy.io/katib-best-trial"] == "churn-g1-tune-x7k2p9qd"
    assert version.tags["traindeploy.io/generation"] == "1"
    assert version.run_id == run_id
    assert {c["kind"] for c in td["status"]["children"]} == {"Experiment", "PyTorchJob", "InferenceService"}


def test_failed_kfp_run_fails_the_cycle(api_client, namespace, players, operator, model_name, kfp):
    pipeline_config_map(api_client, namespace)
    create(api_client, namespace, manifests.full("churn", model_name, kfp.url))
    players.wait_td("churn", lambda td: (td.get("status", {}).get("pipeline") or {}).get("runId"))
    kfp.set_run_state(only_run(kfp)["run_id"], "FAILED", error_message="prep step exited with 1")
    td = players.wait_td("churn", _phase("Failed"))
    condition = _condition(td, "PipelineSucceeded")
    assert (condition["status"], condition["reason"]) == ("False", "PipelineFailed")
    assert "prep step exited with 1" in condition["message"]
    assert players.get("kubeflow.org", "v1beta1", "experiments", "churn-g1-tune") is None


def test_failed_katib_experiment_fails_the_cycle(api_client, namespace, players, operator, model_name):
    body = manifests.full("churn", model_name, "http://unused")
    del body["spec"]["pipeline"]
    create(api_client, namespace, body)
    players.wait_child("kubeflow.org", "v1beta1", "experiments", "churn-g1-tune")
    players.experiment("churn-g1-tune", "Failed")
    td = players.wait_td("churn", _phase("Failed"))
    condition = _condition(td, "TuningSucceeded")
    assert (condition["status"], condition["reason"]) == ("False", "TuningFailed")
    assert "max failed count" in condition["message"]
    assert players.get("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train") is None


def test_stuck_katib_experiment_hits_its_deadline(api_client, namespace, players, operator, model_name):
    body = manifests.full("churn", model_name, "http://unused")
    del body["spec"]["pipeline"]
    body["spec"]["tuning"]["timeoutSeconds"] = 3
    create(api_client, namespace, body)
    players.wait_child("kubeflow.org", "v1beta1", "experiments", "churn-g1-tune")
    players.experiment("churn-g1-tune", "Running")
    td = players.wait_td("churn", _phase("Failed"), timeout=30)
    assert _condition(td, "TuningSucceeded")["reason"] == "TuningDeadlineExceeded"


def test_trainjob_backend(api_client, namespace, players, operator, model_name):
    body = manifests.minimal("churn", model_name)
    body["spec"]["training"].update({"backend": "TrainJob", "workers": 1})
    players.trainer_runtime("torch-distributed")
    create(api_client, namespace, body)
    job = players.wait_child("trainer.kubeflow.org", "v1alpha1", "trainjobs", "churn-g1-train")
    assert job["spec"]["trainer"]["numNodes"] == 2
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] in (1, "1")
    assert players.get("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train") is None
    train_into_run(job, {"accuracy": 0.9})
    players.trainjob("churn-g1-train", "Complete")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.inferenceservice("churn", ready=True)
    td = players.wait_td("churn", _phase("Ready"))
    assert td["status"]["training"]["kind"] == "TrainJob"


def test_a_package_that_is_not_a_pipeline_is_invalid_spec(api_client, namespace, players, operator, model_name,
                                                           kfp):
    client.CoreV1Api(api_client).create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="prep-pipeline"), data={"pipeline.yaml": "just: [some, yaml]"}))
    create(api_client, namespace, manifests.full("churn", model_name, kfp.url))
    td = players.wait_td("churn", _phase("Failed"))
    ready = _condition(td, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "not a compiled KFP pipeline" in ready["message"]
    assert kfp.runs == {}
