"""PyTorchJob: the builder's output, the reader's verdicts, and both against the real CRD."""

from __future__ import annotations

import copy

import pytest

from harness.assertions import dropped_fields
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, pytorchjob

from .samples import GPU, INJECTED_ENV, TRAINING, assert_stored_unpruned, create_and_read_back, meta, \
    write_status

FULL_CONTAINER = {
    "name": "pytorch",
    "image": "ghcr.io/example/train:1.2",
    "command": ["python3", "train.py"],
    "args": ["--epochs=3", "--batch_size=64", "--lr=0.01"],
    "env": [
        {"name": "DATA_DIR", "value": "/data"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        *INJECTED_ENV,
    ],
    "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi", GPU: 1}},
}
FULL_POD = {
    "containers": [FULL_CONTAINER],
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
    "serviceAccountName": "trainer",
}
FULL_SPEC = {
    "pytorchReplicaSpecs": {
        "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": FULL_POD}},
        "Worker": {"replicas": 2, "restartPolicy": "OnFailure", "template": {"spec": FULL_POD}},
    },
    "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3, "activeDeadlineSeconds": 7200},
}


def build(training: dict, hyperparameters: dict | None = None, env: list | None = None,
          gpu_resource: str = GPU) -> dict:
    return pytorchjob.build(meta("churn-g3"), training, env=INJECTED_ENV if env is None else env,
                            hyperparameters=training.get("hyperparameters", {}) if hyperparameters is None
                            else hyperparameters, gpu_resource=gpu_resource)


def test_full_input_builds_the_whole_job():
    built = build(TRAINING)
    assert built == {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                     "metadata": meta("churn-g3"), "spec": FULL_SPEC}


def test_minimal_input_gets_the_design_defaults():
    built = build({"image": "img:1"}, hyperparameters={}, env=[])
    assert built["spec"] == {"pytorchReplicaSpecs": {"Master": {
        "replicas": 1, "restartPolicy": "OnFailure",
        "template": {"spec": {"containers": [{"name": "pytorch", "image": "img:1"}]}}}},
        "runPolicy": {"cleanPodPolicy": "Running"}}


@pytest.mark.parametrize(("reason", "training", "hyperparameters", "check"), [
    ("no Worker replica when workers is 0", {"image": "i", "workers": 0}, {},
     lambda spec: list(spec["pytorchReplicaSpecs"]) == ["Master"]),
    ("restartPolicy applies to every replica", {"image": "i", "workers": 1, "restartPolicy": "ExitCode"}, {},
     lambda spec: {r["restartPolicy"] for r in spec["pytorchReplicaSpecs"].values()} == {"ExitCode"}),
    ("backoffLimit 0 is kept", {"image": "i", "backoffLimit": 0}, {},
     lambda spec: spec["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0}),
    ("no GPU limit when gpus is 0", {"image": "i", "gpus": 0, "resources": {"limits": {"cpu": "1"}}}, {},
     lambda spec: _container(spec)["resources"] == {"limits": {"cpu": "1"}}),
    ("a GPU request the user wrote follows the limit", {"image": "i", "gpus": 2,
                                                        "resources": {"requests": {GPU: 1}}}, {},
     lambda spec: _container(spec)["resources"] == {"requests": {GPU: 2}, "limits": {GPU: 2}}),
    ("hyperparameters are sorted after the user's args", {"image": "i", "args": ["a"]},
     {"z": "1", "a": "2", "m": "x y"},
     lambda spec: _container(spec)["args"] == ["a", "--a=2", "--m=x y", "--z=1"]),
    ("running pods are cleaned when nothing is given: Workers free their GPUs after the Master failed",
     {"image": "i", "workers": 2}, {}, lambda spec: spec["runPolicy"] == {"cleanPodPolicy": "Running"}),
    ("cleanPodPolicy as the user chose", {"image": "i", "cleanPodPolicy": "None"}, {},
     lambda spec: spec["runPolicy"] == {"cleanPodPolicy": "None"}),
])
def test_builder_cases(reason, training, hyperparameters, check):
    assert check(build(training, hyperparameters=hyperparameters, env=[])["spec"]), reason


def test_gpu_resource_name_comes_from_the_caller():
    built = build({"image": "i", "gpus": 1}, hyperparameters={}, env=[], gpu_resource="amd.com/gpu")
    assert _container(built["spec"])["resources"] == {"limits": {"amd.com/gpu": 1}}


def test_injected_env_replaces_the_users_entry_of_the_same_name():
    env = _container(build(TRAINING)["spec"])["env"]
    assert [item["name"] for item in env] == [
        "DATA_DIR", "HF_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_RUN_NAME"]
    assert env[-1] == {"name": "MLFLOW_RUN_NAME", "value": "churn-g3"}


def test_inputs_are_not_mutated_and_outputs_do_not_alias_them():
    training, env, metadata = copy.deepcopy(TRAINING), copy.deepcopy(INJECTED_ENV), meta("x")
    built = pytorchjob.build(metadata, training, env=env, hyperparameters={"lr": "1"}, gpu_resource=GPU)
    assert (training, env, metadata) == (TRAINING, INJECTED_ENV, meta("x"))
    _container(built["spec"])["env"][0]["value"] = "changed"
    built["metadata"]["labels"]["new"] = "x"
    _container(built["spec"])["resources"]["requests"]["cpu"] = "9"
    assert (training, env, metadata) == (TRAINING, INJECTED_ENV, meta("x"))


def _container(spec: dict) -> dict:
    return spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]


# --- reader: status blocks as the Training Operator writes them --------------------------------

T0, T1, T2 = "2026-11-23T10:00:00Z", "2026-11-23T10:01:00Z", "2026-11-23T10:40:00Z"


def cond(kind: str, status: str, reason: str, message: str, at: str = T0) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": at, "lastTransitionTime": at}


CREATED = cond("Created", "True", "PyTorchJobCreated", "PyTorchJob churn-g3 is created.")
RUNNING_TRUE = cond("Running", "True", "PyTorchJobRunning", "PyTorchJob churn-g3 is running.", T1)
RUNNING_FALSE = cond("Running", "False", "PyTorchJobRunning", "PyTorchJob churn-g3 is running.", T2)
SUCCEEDED_TRUE = cond("Succeeded", "True", "PyTorchJobSucceeded",
                      "PyTorchJob churn-g3 is successfully completed.", T2)
FAILED_REPLICA = cond("Failed", "True", "PyTorchJobFailed",
                      "PyTorchJob churn-g3 is failed because 1 Master replica(s) failed.", T2)
FAILED_BACKOFF = cond("Failed", "True", "PyTorchJobFailed",
                      "Job churn-g3 has failed because it has reached the specified backoff limit", T2)
FAILED_DEADLINE = cond("Failed", "True", "PyTorchJobFailed",
                       "Job churn-g3 has failed because it was active longer than specified deadline", T2)
RESTARTING = cond("Restarting", "True", "PyTorchJobRestarting",
                  "PyTorchJob churn-g3 is restarting because 1 Worker replica(s) failed.", T1)
SUSPENDED_RUNNING = cond("Running", "False", "PyTorchJobSuspended", "PyTorchJob churn-g3 is suspended.", T1)
SUSPENDED = cond("Suspended", "True", "PyTorchJobSuspended", "PyTorchJob churn-g3 is suspended.", T1)
RESUMED = cond("Suspended", "False", "PyTorchJobResumed", "PyTorchJob churn-g3 is resumed.", T2)

SELECTOR = ("training.kubeflow.org/job-name=churn-g3,training.kubeflow.org/operator-name=pytorchjob-controller,"
            "training.kubeflow.org/replica-type=")


def status(*conditions: dict, done: bool = False, **replicas: dict) -> dict:
    built = {"startTime": T0, "lastReconcileTime": T2, "conditions": list(conditions)}
    if done:
        built["completionTime"] = T2
    if replicas:
        built["replicaStatuses"] = {kind: {**counts, "selector": SELECTOR + kind.lower()}
                                    for kind, counts in replicas.items()}
    return built


READER_CASES = [
    ("no status yet", None, PENDING, ""),
    ("created", status(CREATED), RUNNING, "PyTorchJobCreated"),
    ("running", status(CREATED, RUNNING_TRUE, Master={"active": 1}, Worker={"active": 2}),
     RUNNING, "PyTorchJobRunning"),
    ("restarting replaces running", status(CREATED, RESTARTING, Master={"active": 1}, Worker={"failed": 1}),
     RUNNING, "PyTorchJobRestarting"),
    ("suspended", status(CREATED, SUSPENDED_RUNNING, SUSPENDED), RUNNING, "PyTorchJobSuspended"),
    ("resumed, not yet running again", status(CREATED, SUSPENDED_RUNNING, RESUMED), RUNNING, "PyTorchJobCreated"),
    ("succeeded", status(CREATED, RUNNING_FALSE, SUCCEEDED_TRUE, done=True,
                         Master={"succeeded": 1}, Worker={"succeeded": 2}), SUCCEEDED, "PyTorchJobSucceeded"),
    ("failed replica", status(CREATED, RUNNING_FALSE, FAILED_REPLICA, done=True, Master={"failed": 1}),
     FAILED, "PyTorchJobFailed"),
    ("failed backoff", status(CREATED, RUNNING_FALSE, FAILED_BACKOFF, done=True), FAILED, "PyTorchJobFailed"),
    ("failed deadline", status(CREATED, RUNNING_FALSE, FAILED_DEADLINE, done=True), FAILED, "PyTorchJobFailed"),
]


@pytest.mark.parametrize(("reason", "given", "phase", "upstream_reason"), READER_CASES,
                         ids=[case[0] for case in READER_CASES])
def test_reader(reason, given, phase, upstream_reason):
    obj = build(TRAINING)
    if given is not None:
        obj["status"] = given
    state = pytorchjob.read(obj)
    assert (state.phase, state.reason) == (phase, upstream_reason), reason
    if given and given["conditions"][-1]["status"] == "True":
        assert state.message == given["conditions"][-1]["message"]


def test_reader_reports_times():
    done = status(CREATED, RUNNING_FALSE, SUCCEEDED_TRUE, done=True)
    assert pytorchjob.read({"status": done}).outputs == {"startTime": T0, "completionTime": T2}
    assert pytorchjob.read({}).outputs == {}


# --- the real apiserver with the v1.9.4 CRD -------------------------------------------------------


def test_built_job_is_stored_unpruned(api_client, namespace, owner):
    sent = pytorchjob.build(meta("churn-g3", namespace, owner), TRAINING, env=INJECTED_ENV,
                            hyperparameters=TRAINING["hyperparameters"], gpu_resource=GPU)
    assert_stored_unpruned(sent, create_and_read_back(api_client, pytorchjob, sent))


@pytest.mark.parametrize("given", [case[1] for case in READER_CASES if case[1]],
                         ids=[case[0] for case in READER_CASES if case[1]])
def test_upstream_status_is_accepted_and_read(api_client, namespace, given):
    sent = pytorchjob.build(meta("churn-g3", namespace), TRAINING, env=INJECTED_ENV,
                            hyperparameters={}, gpu_resource=GPU)
    stored = write_status(api_client, pytorchjob, create_and_read_back(api_client, pytorchjob, sent), given)
    assert dropped_fields(given, stored["status"]) == []
    assert pytorchjob.read(stored) == pytorchjob.read({"status": given})
