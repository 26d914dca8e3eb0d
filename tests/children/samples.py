"""Inputs shared by the child tests: a full-featured TrainDeploy spec and apiserver helpers.

The inputs use every field a builder maps, so the schema-acceptance tests prove that none of them
is pruned by the upstream CRD.
"""

from __future__ import annotations

import copy
from types import ModuleType

from kubernetes import client

from harness.assertions import dropped_fields

GPU = "nvidia.com/gpu"

INJECTED_ENV = [
    {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlflow.svc:5000"},
    {"name": "MLFLOW_TRACKING_TOKEN",
     "valueFrom": {"secretKeyRef": {"name": "mlflow-credentials", "key": "MLFLOW_TRACKING_TOKEN"}}},
    {"name": "MLFLOW_RUN_NAME", "value": "churn-g3"},
]

TRAINING = {
    "backend": "PyTorchJob",
    "image": "ghcr.io/example/train:1.2",
    "command": ["python3", "train.py"],
    "args": ["--epochs=3"],
    "env": [
        {"name": "DATA_DIR", "value": "/data"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        # Shadowed by the operator's entry of the same name.
        {"name": "MLFLOW_RUN_NAME", "value": "mine"},
    ],
    "hyperparameters": {"lr": "0.01", "batch_size": "64"},
    "workers": 2,
    "gpus": 1,
    "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
    "restartPolicy": "OnFailure",
    "backoffLimit": 3,
    "activeDeadlineSeconds": 7200,
    "serviceAccountName": "trainer",
}

TRAINING_TRAINJOB = {
    **{key: value for key, value in TRAINING.items() if key not in ("restartPolicy", "backoffLimit")},
    "backend": "TrainJob",
    "runtimeRef": {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"},
}

TUNING = {
    "algorithm": "tpe",
    "algorithmSettings": {"n_EI_candidates": "24", "gamma": "0.25"},
    "objective": {"metricName": "accuracy", "direction": "maximize", "goal": 0.95,
                  "additionalMetricNames": ["loss"]},
    "maxTrials": 12,
    "parallelTrials": 3,
    "maxFailedTrials": 4,
    "parameters": [
        {"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "distribution": "logUniform"},
        {"name": "layers", "type": "int", "min": 2, "max": 8, "step": 2},
        {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]},
        {"name": "batch_size", "type": "discrete", "values": ["32", "64", "128"]},
    ],
}

SERVING = {
    "modelFormat": {"name": "mlflow", "version": "2"},
    "runtime": "kserve-mlserver",
    "protocolVersion": "v2",
    "minReplicas": 1,
    "maxReplicas": 3,
    "gpus": 1,
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "serviceAccountName": "model-reader",
}

STORAGE_URI = "s3://mlflow/1/models/m-0a1b2c/artifacts"


def meta(name: str, namespace: str = "ml", owner: dict | None = None) -> dict:
    """Metadata as the caller builds it: labels, an annotation and a controller owner reference."""
    built = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "traindeploy", "traindeploy.io/name": "churn"},
        "annotations": {"traindeploy.io/cycle": "3"},
    }
    if owner is not None:
        built["ownerReferences"] = [owner]
    return built


def create_and_read_back(api_client, module: ModuleType, body: dict) -> dict:
    """Create the object with the module's GVR and return it as stored."""
    api = client.CustomObjectsApi(api_client)
    namespace = body["metadata"]["namespace"]
    api.create_namespaced_custom_object(module.GROUP, module.VERSION, namespace, module.PLURAL,
                                        copy.deepcopy(body))
    return api.get_namespaced_custom_object(module.GROUP, module.VERSION, namespace, module.PLURAL,
                                            body["metadata"]["name"])


def assert_stored_unpruned(sent: dict, stored: dict) -> None:
    """Nothing the builder wrote was pruned or changed by the apiserver."""
    assert stored["apiVersion"] == sent["apiVersion"] and stored["kind"] == sent["kind"]
    assert dropped_fields(sent["spec"], stored["spec"]) == []
    for key in ("labels", "annotations", "ownerReferences"):
        if key in sent["metadata"]:
            assert dropped_fields(sent["metadata"][key], stored["metadata"].get(key)) == [], key


def write_status(api_client, module: ModuleType, stored: dict, status: dict) -> dict:
    """Write status through the status subresource, as the upstream controller does, and return
    the object read back. The full status is sent so lists are replaced whole."""
    api = client.CustomObjectsApi(api_client)
    namespace, name = stored["metadata"]["namespace"], stored["metadata"]["name"]
    api.patch_namespaced_custom_object_status(module.GROUP, module.VERSION, namespace, module.PLURAL,
                                              name, {"status": copy.deepcopy(status)})
    return api.get_namespaced_custom_object(module.GROUP, module.VERSION, namespace, module.PLURAL, name)
