"""Pure lifecycle decisions, table-driven."""

from __future__ import annotations

import pytest

from traindeploy import lifecycle as lc
from traindeploy import reconciler


@pytest.mark.parametrize(("value", "gate", "passes"), [
    (0.91, {"threshold": 0.9}, True),
    (0.90, {"threshold": 0.9}, True),
    (0.89, {"threshold": 0.9, "direction": "maximize"}, False),
    (0.2, {"threshold": 0.25, "direction": "minimize"}, True),
    (0.25, {"threshold": 0.25, "direction": "minimize"}, True),
    (0.3, {"threshold": 0.25, "direction": "minimize"}, False),
])
def test_gate(value, gate, passes):
    assert lc.gate_passes(value, gate) is passes


def test_gate_message_says_which_side():
    assert lc.gate_message("accuracy", 0.8, {"threshold": 0.9}, False) == "accuracy=0.8 is below the threshold 0.9"
    assert lc.gate_message("loss", 0.1, {"threshold": 0.2, "direction": "minimize"}, True) == \
        "loss=0.1 is at or below the threshold 0.2"


@pytest.mark.parametrize(("spec", "stages"), [
    ({"training": {}}, ["training", "gate", "registering", "deploying"]),
    ({"tuning": {"x": 1}, "training": {}}, ["tuning", "training", "gate", "registering", "deploying"]),
    ({"pipeline": {"x": 1}, "tuning": {"x": 1}},
     ["pipeline", "tuning", "training", "gate", "registering", "deploying"]),
])
def test_stages_follow_the_spec(spec, stages):
    assert [stage.name for stage in reconciler.stages_for(spec)] == stages


def test_only_training_relevant_changes_start_a_new_cycle():
    spec = {"model": {"name": "m"}, "training": {"image": "a"}, "serving": {"minReplicas": 1}}
    assert lc.training_spec_hash(spec) == lc.training_spec_hash({**spec, "serving": {"minReplicas": 3}})
    assert lc.training_spec_hash(spec) != lc.training_spec_hash({**spec, "training": {"image": "b"}})


def test_best_trial_overrides_spec_hyperparameters():
    training = {"hyperparameters": {"lr": "0.1", "epochs": "3"}}
    assert lc.effective_hyperparameters(training, {"lr": "0.02"}) == {"lr": "0.02", "epochs": "3"}
    assert lc.effective_hyperparameters({}, None) == {}


def test_credentials_reach_pods_as_secret_references_only():
    env = lc.mlflow_env("http://mlflow:5000", "exp", "run-1", "mlflow-creds",
                        ["MLFLOW_TRACKING_TOKEN", "unrelated-key"])
    assert env == [
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
        {"name": "MLFLOW_EXPERIMENT_NAME", "value": "exp"},
        {"name": "MLFLOW_RUN_ID", "value": "run-1"},
        {"name": "MLFLOW_TRACKING_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": "mlflow-creds", "key": "MLFLOW_TRACKING_TOKEN"}}},
    ]
