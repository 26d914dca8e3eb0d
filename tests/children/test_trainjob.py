"""TrainJob: the builder's output, the reader's verdicts, and both against the real v2.3.0 CRD."""

from __future__ import annotations

import copy

import pytest

from harness.assertions import dropped_fields
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, trainjob

from .samples import GPU, INJECTED_ENV, TRAINING_TRAINJOB, assert_stored_unpruned, create_and_read_back, meta, \
    write_status

FULL_SPEC = {
    "runtimeRef": {"name": "torch-distributed", "kind": "ClusterTrainingRuntime", "apiGroup": "trainer.kubeflow.org"},
    "trainer": {
        "image": "ghcr.io/example/train:1.2",
        "command": ["python3", "train.py"],
        "args": ["--epochs=3", "--batch_size=64", "--lr=0.01"],
        "env": [
            {"name": "DATA_DIR", "value": "/data"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
            *INJECTED_ENV,
        ],
        "numNodes": 3,
        "resourcesPerNode": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi", GPU: 1}},
    },
    "activeDeadlineSeconds": 7200,
    "runtimePatches": [{
        "manager": "traindeploy.io/operator",
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
            "name": "node",
            "template": {"spec": {"template": {"spec": {
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                "serviceAccountName": "trainer",
            }}}},
        }]}}},
    }],
}


def build(training: dict, hyperparameters: dict | None = None, env: list | None = None) -> dict:
    return trainjob.build(meta("churn-g3"), training, env=INJECTED_ENV if env is None else env,
                          hyperparameters=training.get("hyperparameters", {}) if hyperparameters is None
                          else hyperparameters, gpu_resource=GPU)


def test_full_input_builds_the_whole_trainjob():
    assert build(TRAINING_TRAINJOB) == {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                                        "metadata": meta("churn-g3"), "spec": FULL_SPEC}


def test_minimal_input_gets_the_default_runtime_and_one_node():
    assert build({"image": "img:1"}, hyperparameters={}, env=[])["spec"] == {
        "runtimeRef": {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                       "apiGroup": "trainer.kubeflow.org"},
        "trainer": {"image": "img:1", "numNodes": 1},
    }


@pytest.mark.parametrize(("reason", "training", "check"), [
    ("a namespaced runtime keeps its kind and name",
     {"image": "i", "runtimeRef": {"name": "my-torch", "kind": "TrainingRuntime"}},
     lambda spec: spec["runtimeRef"] == {"name": "my-torch", "kind": "TrainingRuntime",
                                         "apiGroup": "trainer.kubeflow.org"}),
    ("workers become extra nodes", {"image": "i", "workers": 7}, lambda spec: spec["trainer"]["numNodes"] == 8),
    ("only the scheduling fields given are patched", {"image": "i", "serviceAccountName": "sa"},
     lambda spec: spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
     ["template"]["spec"]["template"]["spec"] == {"serviceAccountName": "sa"}),
    ("no runtime patch without scheduling fields", {"image": "i", "gpus": 1},
     lambda spec: "runtimePatches" not in spec and spec["trainer"]["resourcesPerNode"] == {"limits": {GPU: 1}}),
])
def test_builder_cases(reason, training, check):
    assert check(build(training, hyperparameters={}, env=[])["spec"]), reason


def test_inputs_are_not_mutated():
    training, env = copy.deepcopy(TRAINING_TRAINJOB), copy.deepcopy(INJECTED_ENV)
    built = trainjob.build(meta("x"), training, env=env, hyperparameters={"a": "1"}, gpu_resource=GPU)
    built["spec"]["trainer"]["env"][0]["value"] = "changed"
    built["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]["tolerations"][0]["key"] = "changed"
    assert (training, env) == (TRAINING_TRAINJOB, INJECTED_ENV)


# --- reader: metav1 conditions as the Trainer and JobSet write them ------------------------------

T0, T1 = "2026-11-23T10:00:00Z", "2026-11-23T10:40:00Z"


def cond(kind: str, status: str, reason: str, message: str, at: str = T1) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}


def jobs(**counts: int) -> list[dict]:
    return [{"name": "node", **{key: counts.get(key, 0)
                                for key in ("ready", "succeeded", "failed", "active", "suspended")}}]


READER_CASES = [
    ("no status yet", None, PENDING, ""),
    ("jobset created, nothing started", {"jobsStatus": jobs()}, PENDING, ""),
    ("pods running", {"jobsStatus": jobs(active=1, ready=1)}, RUNNING, ""),
    ("suspended", {"conditions": [cond("Suspended", "True", "Suspended", "TrainJob is suspended", T0)],
                   "jobsStatus": jobs(suspended=1)}, RUNNING, "Suspended"),
    ("resumed and running", {"conditions": [cond("Suspended", "False", "Resumed", "TrainJob is resumed")],
                             "jobsStatus": jobs(active=1)}, RUNNING, ""),
    ("complete", {"conditions": [cond("Complete", "True", "AllJobsCompleted", "jobset completed successfully")],
                  "jobsStatus": jobs(succeeded=1)}, SUCCEEDED, "AllJobsCompleted"),
    ("complete after a resume", {"conditions": [
        cond("Suspended", "False", "Resumed", "TrainJob is resumed", T0),
        cond("Complete", "True", "AllJobsCompleted", "jobset completed successfully")],
        "jobsStatus": jobs(succeeded=1)}, SUCCEEDED, "AllJobsCompleted"),
    ("failed jobs", {"conditions": [cond(
        "Failed", "True", "FailedJobs",
        "jobset failed due to one or more job failures (first failed job: churn-g3-node-0)")],
        "jobsStatus": jobs(failed=1)}, FAILED, "FailedJobs"),
    ("max restarts", {"conditions": [cond("Failed", "True", "ReachedMaxRestarts",
                                          "jobset failed due to reaching max number of restarts")],
                      "jobsStatus": jobs(failed=1)}, FAILED, "ReachedMaxRestarts"),
    ("deadline", {"conditions": [cond("Failed", "True", "DeadlineExceeded", "TrainJob exceeded its active deadline")]},
     FAILED, "DeadlineExceeded"),
    ("runtime not supported", {"conditions": [cond("Failed", "True", "TrainingRuntimeNotSupported",
                                                   "unsupported runtime: ClusterTrainingRuntime/torch-x")]},
     FAILED, "TrainingRuntimeNotSupported"),
]


@pytest.mark.parametrize(("reason", "given", "phase", "upstream_reason"), READER_CASES,
                         ids=[case[0] for case in READER_CASES])
def test_reader(reason, given, phase, upstream_reason):
    obj = build(TRAINING_TRAINJOB)
    if given is not None:
        obj["status"] = given
    state = trainjob.read(obj)
    assert (state.phase, state.reason) == (phase, upstream_reason), reason
    if upstream_reason:
        assert state.message == next(c["message"] for c in given["conditions"] if c["reason"] == upstream_reason)


# --- the real apiserver -------------------------------------------------------------------------------


def test_built_trainjob_is_stored_unpruned(api_client, namespace, owner):
    sent = trainjob.build(meta("churn-g3", namespace, owner), TRAINING_TRAINJOB, env=INJECTED_ENV,
                          hyperparameters=TRAINING_TRAINJOB["hyperparameters"], gpu_resource=GPU)
    assert_stored_unpruned(sent, create_and_read_back(api_client, trainjob, sent))


@pytest.mark.parametrize("given", [case[1] for case in READER_CASES if case[1]],
                         ids=[case[0] for case in READER_CASES if case[1]])
def test_upstream_status_is_accepted_and_read(api_client, namespace, given):
    sent = trainjob.build(meta("churn-g3", namespace), TRAINING_TRAINJOB, env=INJECTED_ENV,
                          hyperparameters={}, gpu_resource=GPU)
    stored = write_status(api_client, trainjob, create_and_read_back(api_client, trainjob, sent), given)
    assert dropped_fields(given, stored["status"]) == []
    assert trainjob.read(stored) == trainjob.read({"status": given})


@pytest.mark.parametrize(("status", "awaiting"), [
    ({}, False),  # the JobSet is not made yet: no pods to ask about
    ({"jobsStatus": [{"name": "node", "active": 1}]}, True),  # active counts Pending pods too
    ({"jobsStatus": [{"name": "node", "active": 1, "ready": 1}]}, False),
    ({"jobsStatus": [{"name": "node", "succeeded": 1}],
      "conditions": [{"type": "Complete", "status": "True"}]}, False),
])
def test_awaiting_pods(status, awaiting):
    assert trainjob.awaiting_pods({"status": status}) is awaiting
