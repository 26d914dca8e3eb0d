"""TrainDeploy manifests for end-to-end tests."""

from __future__ import annotations

import copy


def minimal(name: str, model_name: str, **spec_overrides) -> dict:
    """Training + registry + serving only."""
    body = {
        "apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model_name},
            "training": {"image": "ghcr.io/traindeploy/example-trainer:0.1",
                         "command": ["python", "/app/train.py"],
                         "hyperparameters": {"lr": "0.01", "epochs": "3"},
                         "gpus": 1},
            "gate": {"metric": "accuracy", "threshold": 0.8},
            "serving": {},
        },
    }
    body["spec"].update(copy.deepcopy(spec_overrides))
    return body


def full(name: str, model_name: str, kfp_endpoint: str) -> dict:
    """Every stage on: KFP data preparation, Katib search, multi-worker GPU training."""
    body = minimal(name, model_name)
    body["spec"].update({
        "pipeline": {"endpoint": kfp_endpoint,
                     "package": {"configMapKeyRef": {"name": "prep-pipeline", "key": "pipeline.yaml"}},
                     "parameters": {"rows": 1000, "source": "s3://data/raw"}},
        "tuning": {"algorithm": "random",
                   "objective": {"metricName": "accuracy", "direction": "maximize", "goal": 0.99},
                   "maxTrials": 4, "parallelTrials": 2,
                   "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 0.1},
                                  {"name": "batch_size", "type": "categorical", "values": ["32", "64"]}]},
    })
    body["spec"]["training"]["workers"] = 2
    return body
