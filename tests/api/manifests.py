"""Valid TrainDeploy manifests shared by the API tests.

`minimal()` has only what a user must write; `full()` sets every spec field at least once.
Each call returns a fresh copy, so a test may change what it gets.
"""

from __future__ import annotations

import copy
from typing import Any

GROUP = "traindeploy.io"
VERSION = "v1alpha1"
PLURAL = "traindeploys"
API_VERSION = f"{GROUP}/{VERSION}"

_MINIMAL: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "TrainDeploy",
    "metadata": {"name": "churn"},
    "spec": {
        "model": {"name": "churn-classifier"},
        "training": {"image": "ghcr.io/example/churn-train:1.4.0"},
        "gate": {"metric": "val_accuracy", "threshold": 0.85},
        "serving": {},
    },
}

_FULL: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "TrainDeploy",
    "metadata": {"name": "churn-full", "labels": {"team": "growth"}},
    "spec": {
        "model": {"name": "churn-classifier"},
        "mlflow": {
            "trackingUri": "https://mlflow.example.com",
            "experimentName": "churn/nightly",
            "credentialsSecretRef": {"name": "mlflow-credentials"},
        },
        "pipeline": {
            "endpoint": "http://ml-pipeline.kubeflow.svc:8888",
            "package": {"configMapKeyRef": {"name": "churn-prep", "key": "pipeline.yaml"}},
            # Any JSON value: string, integer, float, boolean, list, object.
            "parameters": {
                "dataset": "s3://data/churn/2026-11",
                "rows": 250000,
                "testFraction": 0.2,
                "shuffle": True,
                "columns": ["tenure", "plan", "charges"],
                "split": {"seed": 7, "stratify": "churned"},
            },
            "experimentName": "churn-prep",
            "tokenSecretRef": {"name": "kfp-token", "key": "token"},
            "timeoutSeconds": 7200,
        },
        "tuning": {
            "algorithm": "bayesianoptimization",
            "algorithmSettings": {"random_state": "42"},
            "objective": {
                "metricName": "val_accuracy",
                "direction": "maximize",
                "goal": 0.95,
                "additionalMetricNames": ["val_loss", "train_loss"],
            },
            "maxTrials": 12,
            "parallelTrials": 3,
            "maxFailedTrials": 4,
            "parameters": [
                {"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "distribution": "logUniform"},
                {"name": "epochs", "type": "int", "min": 2, "max": 20, "step": 2},
                {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd", "adamw"]},
                {"name": "batch_size", "type": "discrete", "values": ["32", "64", "128"]},
            ],
            "timeoutSeconds": 43200,
        },
        "training": {
            "backend": "PyTorchJob",
            "image": "ghcr.io/example/churn-train:1.4.0",
            "command": ["python3", "-m", "churn.train"],
            "args": ["--data=/data"],
            "env": [
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "hyperparameters": {"lr": "0.01", "epochs": "5", "weight_decay": "1e-4"},
            "workers": 3,
            "gpus": 2,
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi"},
                "limits": {"cpu": 8, "memory": "32Gi", "ephemeral-storage": "100G"},
            },
            "nodeSelector": {"node.kubernetes.io/instance-type": "a2-highgpu-2g"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
                 "tolerationSeconds": 300},
            ],
            "restartPolicy": "ExitCode",
            "backoffLimit": 2,
            "activeDeadlineSeconds": 14400,
            "serviceAccountName": "trainer",
        },
        "gate": {"metric": "val_accuracy", "threshold": 0.9, "direction": "maximize"},
        "serving": {
            "modelFormat": {"name": "mlflow", "version": "2"},
            "runtime": "kserve-mlserver",
            "protocolVersion": "grpc-v2",
            "minReplicas": 2,
            "maxReplicas": 6,
            "gpus": 1,
            "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
            "serviceAccountName": "model-reader",
            "timeoutSeconds": 900,
        },
    },
}


def minimal(name: str = "churn") -> dict[str, Any]:
    body = copy.deepcopy(_MINIMAL)
    body["metadata"]["name"] = name
    return body


def full(name: str = "churn-full") -> dict[str, Any]:
    body = copy.deepcopy(_FULL)
    body["metadata"]["name"] = name
    return body


def full_trainjob(name: str = "churn-trainjob") -> dict[str, Any]:
    """The full manifest on the TrainJob backend: runtimeRef instead of the PyTorchJob-only fields,
    and the pipeline package fetched from a URL."""
    body = full(name)
    training = body["spec"]["training"]
    training["backend"] = "TrainJob"
    del training["restartPolicy"], training["backoffLimit"]
    training["runtimeRef"] = {"name": "torch-tuned", "kind": "TrainingRuntime"}
    body["spec"]["pipeline"]["package"] = {"url": "https://artifacts.example.com/churn-prep.yaml"}
    return body
