"""TrainDeploys and children as the apiserver returns them, shared by the plugin's tests.

Every status here is valid against the CRDs: the cluster tests write them through the status
subresource. Each call returns a fresh copy.
"""

from __future__ import annotations

import copy
import datetime as dt

NOW = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.timezone.utc)

SPEC = {
    "model": {"name": "churn-classifier"},
    "training": {"image": "ghcr.io/example/churn-train:1.4.0"},
    "gate": {"metric": "val_accuracy", "threshold": 0.85},
    "serving": {"canary": {"steps": [10, 50, 100]}, "approval": "Manual"},
}


def traindeploy(status: dict | None = None, name: str = "churn", namespace: str = "ml",
                annotations: dict | None = None) -> dict:
    td = {"apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy",
          "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-11-21T09:00:00Z",
                       "resourceVersion": "17"},
          "spec": copy.deepcopy(SPEC)}
    if annotations:
        td["metadata"]["annotations"] = dict(annotations)
    if status is not None:
        td["status"] = copy.deepcopy(status)
    return td


def manifest(name: str = "churn") -> dict:
    """What a user applies: no status, no server-set metadata."""
    return {"apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy", "metadata": {"name": name},
            "spec": copy.deepcopy(SPEC)}


def condition(kind: str, status: str, reason: str, message: str) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-23T09:50:00Z", "observedGeneration": 4}


# A Knative-mode canary of version 4 at its first step; version 3 serves the rest.
CANARY = {
    "observedGeneration": 4,
    "phase": "Canary",
    "cycle": {"generation": 4, "specHash": "9f2c4e1a", "startedAt": "2026-11-23T09:00:00Z", "trigger": "spec",
              "retrain": 0, "label": "g4"},
    "conditions": [
        condition("Ready", "Unknown", "Canary", "Version 4 takes 10% of traffic."),
        condition("ServingReady", "Unknown", "Canary", "Version 4 takes 10% of traffic."),
        condition("TrainingSucceeded", "True", "TrainingSucceeded", "PyTorchJob churn-g4-train succeeded."),
        condition("GatePassed", "True", "GatePassed", "val_accuracy 0.91 >= 0.85."),
    ],
    "pipeline": {"runId": "a1b2c3", "state": "Succeeded", "url": "http://kfp.example.com/#/runs/details/a1b2c3",
                 "experimentId": "e-17", "startedAt": "2026-11-23T09:00:05Z"},
    "training": {"kind": "PyTorchJob", "name": "churn-g4-train", "state": "Succeeded",
                 "startedAt": "2026-11-23T09:10:00Z", "mlflowRunId": "4f6e0c", "mlflowExperimentId": "12"},
    "model": {"name": "churn-classifier", "version": "4", "source": "runs:/4f6e0c/model",
              "storageUri": "s3://mlflow/12/4f6e0c/artifacts/model",
              "metric": {"name": "val_accuracy", "value": 0.91, "threshold": 0.85, "passed": True}},
    "serving": {"inferenceServiceName": "churn", "url": "http://churn.ml.example.com", "modelVersion": "3",
                "ready": True, "targetVersion": "4", "traffic": "v3 90%, v4 10%"},
    "rollout": {"version": "4", "stableVersion": "3", "mode": "Knative", "state": "Progressing", "step": 0,
                "weight": 10, "startedAt": "2026-11-23T09:45:00Z", "failedVersions": ["2"]},
    "rolloutHistory": [
        {"version": "3", "previousVersion": "2", "result": "ManualRollback", "reason": "Rolled back by annotation.",
         "storageUri": "s3://mlflow/12/3/model", "at": "2026-11-22T12:00:00Z"},
        {"version": "2", "previousVersion": "1", "result": "Promoted", "reason": "All canary steps passed.",
         "storageUri": "s3://mlflow/12/2/model", "at": "2026-11-21T12:00:00Z"},
    ],
    "children": [
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "churn-g4-train"},
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "churn-g3-train"},
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "churn"},
    ],
}

AWAITING = {
    **copy.deepcopy(CANARY),
    "phase": "AwaitingApproval",
    "conditions": [condition("Ready", "Unknown", "AwaitingApproval",
                             "Version 4 waits for approval (annotate traindeploy.io/approve=4).")],
    "rollout": {"version": "4", "stableVersion": "3", "mode": "Knative", "state": "AwaitingApproval", "step": -1,
                "weight": 0, "paused": True, "awaitingApproval": "4"},
}


def pytorchjob(name: str = "churn-g4-train", cycle: str = "g4", conditions: list[dict] | None = None,
               created: str = "2026-11-23T09:10:00Z") -> dict:
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "creationTimestamp": created,
                         "labels": {"traindeploy.io/name": "churn", "traindeploy.io/cycle": cycle,
                                    "traindeploy.io/stage": "training"}},
            "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "pytorch", "image": "ghcr.io/example/churn-train:1.4.0"}]}}}}},
            "status": {"conditions": conditions or []}}


def pytorchjob_condition(kind: str, status: str = "True", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": f"PyTorchJob{kind}", "message": message,
            "lastUpdateTime": "2026-11-23T09:20:00Z", "lastTransitionTime": "2026-11-23T09:20:00Z"}


SUCCEEDED_JOB = [pytorchjob_condition("Created"), pytorchjob_condition("Running", "False"),
                 pytorchjob_condition("Succeeded")]


def experiment(name: str = "churn-g4-tune", cycle: str = "g4") -> dict:
    return {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
            "metadata": {"name": name, "creationTimestamp": "2026-11-23T09:05:00Z",
                         "labels": {"traindeploy.io/name": "churn", "traindeploy.io/cycle": cycle}},
            "spec": {"objective": {"type": "maximize", "objectiveMetricName": "accuracy"}},
            "status": {"trials": 12, "trialsSucceeded": 11, "trialsFailed": 1,
                       "conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                                      {"type": "Succeeded", "status": "True"}],
                       "currentOptimalTrial": {"bestTrialName": "churn-g4-tune-x7k2p", "observation": {
                           "metrics": [{"name": "accuracy", "latest": "0.92", "max": "0.93", "min": "0.70"}]}}}}


def inferenceservice(name: str = "churn", version: str = "4", canary_percent: int | None = 10,
                     ready: str | None = "True", reason: str = "") -> dict:
    predictor: dict = {"model": {"modelFormat": {"name": "mlflow"}, "storageUri": f"s3://mlflow/12/{version}/model"}}
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "creationTimestamp": "2026-11-21T09:40:00Z",
                         "labels": {"traindeploy.io/name": "churn", "traindeploy.io/stage": "serving"},
                         "annotations": {"traindeploy.io/model-version": version}},
            "spec": {"predictor": predictor}, "status": {}}
    if ready is not None:
        isvc["status"]["conditions"] = [{"type": "Ready", "status": ready, "reason": reason,
                                         "lastTransitionTime": "2026-11-23T09:46:00Z"}]
    return isvc


def httproute(canary_weight: int = 10, accepted: str | None = "True") -> dict:
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "churn", "creationTimestamp": "2026-11-23T09:45:00Z",
                          "labels": {"traindeploy.io/name": "churn", "traindeploy.io/stage": "serving"}},
             "spec": {"parentRefs": [{"name": "inference-gateway"}], "rules": [{"backendRefs": [
                 {"name": "churn-predictor", "port": 80, "weight": 100 - canary_weight},
                 {"name": "churn-canary-predictor", "port": 80, "weight": canary_weight}]}]},
             "status": {"parents": []}}
    if accepted is not None:
        route["status"]["parents"] = [{"parentRef": {"name": "inference-gateway"}, "controllerName": "example.com/gw",
                                       "conditions": [{"type": "Accepted", "status": accepted, "reason": "Accepted",
                                                       "message": "", "lastTransitionTime": "2026-11-23T09:45:00Z",
                                                       "observedGeneration": 1}]}]
    return route


def trainjob(conditions: list[dict] | None = None, jobs: list[dict] | None = None) -> dict:
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "churn-g4-train", "creationTimestamp": "2026-11-23T09:10:00Z",
                         "labels": {"traindeploy.io/name": "churn", "traindeploy.io/cycle": "g4"}},
            "spec": {"runtimeRef": {"name": "torch-distributed"}},
            "status": {"conditions": conditions or [], "jobsStatus": jobs or []}}


def pod(name: str, labels: dict, containers: tuple[str, ...] = ("pytorch",),
        created: str = "2026-11-23T09:11:00Z") -> dict:
    return {"metadata": {"name": name, "labels": dict(labels), "creationTimestamp": created},
            "spec": {"containers": [{"name": c, "image": "example"} for c in containers]}}
