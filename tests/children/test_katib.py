"""Katib Experiment: the builder writes what the webhook would default; the reader follows the
experiment controller's conditions and picks the best objective value as Katib does."""

from __future__ import annotations

import copy
import json
import re

import pytest

from harness.assertions import dropped_fields
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, katib, pytorchjob, trainjob

from .samples import GPU, INJECTED_ENV, TRAINING, TRAINING_TRAINJOB, TUNING, assert_stored_unpruned, \
    create_and_read_back, meta, write_status

PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")
TUNED_ARGS = ["--epochs=3", "--batch_size=${trialParameters.batch_size}", "--layers=${trialParameters.layers}",
              "--lr=${trialParameters.lr}", "--optimizer=${trialParameters.optimizer}"]


def build(tuning: dict = TUNING, training: dict = TRAINING, name: str = "churn-hpo",
          hyperparameters: dict | None = None) -> dict:
    return katib.build(meta(name), tuning, training, env=INJECTED_ENV, gpu_resource=GPU,
                       hyperparameters=training["hyperparameters"] if hyperparameters is None else hyperparameters)


def test_full_input_builds_the_search_and_everything_the_webhook_would_default():
    spec = build()["spec"]
    template = spec.pop("trialTemplate")
    assert spec == {
        "algorithm": {"algorithmName": "tpe", "algorithmSettings": [
            {"name": "gamma", "value": "0.25"}, {"name": "n_EI_candidates", "value": "24"}]},
        "objective": {"type": "maximize", "objectiveMetricName": "accuracy", "goal": 0.95,
                      "additionalMetricNames": ["loss"],
                      "metricStrategies": [{"name": "accuracy", "value": "max"}, {"name": "loss", "value": "max"}]},
        "parameters": [
            {"name": "lr", "parameterType": "double",
             "feasibleSpace": {"min": "0.0001", "max": "0.1", "distribution": "logUniform"}},
            {"name": "layers", "parameterType": "int",
             "feasibleSpace": {"min": "2", "max": "8", "step": "2", "distribution": "uniform"}},
            {"name": "optimizer", "parameterType": "categorical",
             "feasibleSpace": {"list": ["adam", "sgd"], "distribution": "uniform"}},
            {"name": "batch_size", "parameterType": "discrete",
             "feasibleSpace": {"list": ["32", "64", "128"], "distribution": "uniform"}},
        ],
        "parallelTrialCount": 3,
        "maxTrialCount": 12,
        "maxFailedTrialCount": 4,
        "resumePolicy": "Never",
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
    }
    trial_spec = template.pop("trialSpec")
    assert template == {
        "primaryContainerName": "pytorch",
        "successCondition": 'status.conditions.#(type=="Succeeded")#|#(status=="True")#',
        "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
        "primaryPodLabels": {"training.kubeflow.org/job-role": "master"},
        "trialParameters": [{"name": name, "description": f"Tuned hyperparameter {name}", "reference": name}
                            for name in ("lr", "layers", "optimizer", "batch_size")],
    }
    # The trial is the backend's own job spec, with the tuned values as placeholders.
    assert trial_spec == {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                          "spec": pytorchjob.job_spec(TRAINING, env=INJECTED_ENV, args=TUNED_ARGS, gpu_resource=GPU)}


def test_trainjob_backend_uses_the_node_container_and_jobset_pod_labels():
    template = build(training=TRAINING_TRAINJOB)["spec"]["trialTemplate"]
    assert template["primaryContainerName"] == "node"
    assert template["successCondition"] == 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    assert template["failureCondition"] == 'status.conditions.#(type=="Failed")#|#(status=="True")#'
    assert template["primaryPodLabels"] == {"jobset.sigs.k8s.io/replicatedjob-name": "node",
                                            "batch.kubernetes.io/job-completion-index": "0"}
    assert template["trialSpec"] == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "spec": trainjob.job_spec(TRAINING_TRAINJOB, env=INJECTED_ENV, args=TUNED_ARGS, gpu_resource=GPU)}


@pytest.mark.parametrize("training", [TRAINING, TRAINING_TRAINJOB], ids=["PyTorchJob", "TrainJob"])
def test_every_placeholder_is_declared_and_every_declared_parameter_is_used(training):
    """Katib's validator rejects a template whose placeholders and trialParameters differ."""
    template = build(training=training)["spec"]["trialTemplate"]
    used = set(PLACEHOLDER.findall(json.dumps(template["trialSpec"])))
    declared = {item["name"] for item in template["trialParameters"]}
    assert used == declared == {item["name"] for item in TUNING["parameters"]}
    assert {item["reference"] for item in template["trialParameters"]} == declared


def test_tuned_parameters_override_fixed_hyperparameters_of_the_same_name():
    tuning = {**TUNING, "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 0.1}]}
    spec = build(tuning, hyperparameters={"lr": "0.5", "epochs": "3"}, training={**TRAINING, "args": []})["spec"]
    args = spec["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "containers"][0]["args"]
    assert args == ["--epochs=3", "--lr=${trialParameters.lr}"]


def test_minimal_tuning_gets_the_design_and_webhook_defaults():
    tuning = {"objective": {"metricName": "loss", "direction": "minimize"}, "maxTrials": 5,
              "parameters": [{"name": "lr", "type": "double", "min": 0.01, "max": 0.1}]}
    spec = build(tuning, training={"image": "img:1"}, hyperparameters={})["spec"]
    assert spec["algorithm"] == {"algorithmName": "random"}
    assert spec["objective"] == {"type": "minimize", "objectiveMetricName": "loss",
                                 "metricStrategies": [{"name": "loss", "value": "min"}]}
    assert spec["parallelTrialCount"] == 1
    assert "maxFailedTrialCount" not in spec
    assert spec["parameters"][0]["feasibleSpace"]["distribution"] == "uniform"
    assert spec["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "containers"][0]["args"] == ["--lr=${trialParameters.lr}"]


@pytest.mark.parametrize(("value", "integer", "expected"), [
    (0.1, False, "0.1"),
    (0.1 + 0.2, False, "0.3"),
    (1e-05, False, "1e-05"),
    (0.0001, False, "0.0001"),
    (100.0, False, "100"),
    (2, False, "2"),
    (-0.5, False, "-0.5"),
    ("0.25", False, "0.25"),
    (3, True, "3"),
    (3.0, True, "3"),
    ("12", True, "12"),
])
def test_numbers_are_written_without_float_noise(value, integer, expected):
    assert katib.format_number(value, integer=integer) == expected


@pytest.mark.parametrize(("value", "integer"), [(2.5, True), (True, False), (float("nan"), False), (None, False)])
def test_numbers_that_katib_cannot_take_are_refused(value, integer):
    with pytest.raises(ValueError):
        katib.format_number(value, integer=integer)


@pytest.mark.parametrize(("reason", "name", "tuning"), [
    ("name over 40 characters", "x" * 41, TUNING),
    ("objective metric not printable as name=value",
     "ok", {**TUNING, "objective": {"metricName": "val/acc", "direction": "maximize"}}),
    ("additional metric not printable", "ok",
     {**TUNING, "objective": {"metricName": "acc", "direction": "maximize", "additionalMetricNames": ["val loss"]}}),
    ("objective among additional metrics", "ok",
     {**TUNING, "objective": {"metricName": "acc", "direction": "maximize", "additionalMetricNames": ["acc"]}}),
])
def test_builder_refuses_what_katib_would_reject_or_never_measure(reason, name, tuning):
    with pytest.raises(ValueError):
        build(tuning, name=name)


def test_a_40_character_name_is_fine():
    assert build(name="x" * 40)["metadata"]["name"] == "x" * 40


def test_inputs_are_not_mutated():
    tuning, training, env = copy.deepcopy(TUNING), copy.deepcopy(TRAINING), copy.deepcopy(INJECTED_ENV)
    built = katib.build(meta("churn-hpo"), tuning, training, env=env, hyperparameters=training["hyperparameters"],
                        gpu_resource=GPU)
    built["spec"]["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "tolerations"][0]["key"] = "changed"
    assert (tuning, training, env) == (TUNING, TRAINING, INJECTED_ENV)


# --- reader: status as the v0.19.0 experiment controller writes it ---------------------------------

T0, T1, T2 = "2026-11-23T10:00:00Z", "2026-11-23T10:02:00Z", "2026-11-23T10:40:00Z"


def cond(kind: str, status: str, reason: str, message: str, at: str) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": at, "lastTransitionTime": at}


CREATED = cond("Created", "True", "ExperimentCreated", "Experiment is created", T0)
RUNNING_TRUE = cond("Running", "True", "ExperimentRunning", "Experiment is running", T1)
RUNNING_FALSE = cond("Running", "False", "ExperimentRunning", "Experiment is running", T2)
GOAL = cond("Succeeded", "True", "ExperimentGoalReached",
            "Experiment has succeeded because Objective goal has reached", T2)
MAX_TRIALS = cond("Succeeded", "True", "ExperimentMaxTrialsReached",
                  "Experiment has succeeded because max trial count has reached", T2)
FAILED_COUNT = cond("Failed", "True", "ExperimentFailed",
                    "Experiment has failed because max failed count has reached", T2)
SUGGESTION_FAILED = cond("Failed", "True", "ExperimentFailed", "Suggestion has failed", T2)
RESTARTING = cond("Restarting", "True", "ExperimentRestarting", "Experiment is restarted", T2)

OPTIMAL = {
    "bestTrialName": "churn-hpo-x7k2p9qd",
    "parameterAssignments": [{"name": "lr", "value": "0.0213"}, {"name": "layers", "value": "4"},
                             {"name": "optimizer", "value": "adam"}, {"name": "batch_size", "value": "64"}],
    "observation": {"metrics": [{"name": "accuracy", "min": "0.80", "max": "0.96", "latest": "0.95"},
                                {"name": "loss", "min": "0.0009", "max": "0.41", "latest": "0.0009"}]},
}
# Before any trial has an observation the controller writes the empty struct (it is not a pointer).
NO_OPTIMAL = {"bestTrialName": "", "observation": {}}
BEST_PARAMETERS = {"lr": "0.0213", "layers": "4", "optimizer": "adam", "batch_size": "64"}


def status(*conditions: dict, optimal: dict = NO_OPTIMAL, completed: bool = False, **counters: int) -> dict:
    built = {"startTime": T0, "completionTime": T2 if completed else None, "conditions": list(conditions),
             "currentOptimalTrial": optimal, **counters}
    for kind in ("succeeded", "running", "failed"):
        count = counters.get(f"trials{kind.capitalize()}", 0)
        if count:
            built[f"{kind}TrialList"] = [f"churn-hpo-{kind[:3]}{i:05d}" for i in range(count)]
    return built


READER_CASES = [
    ("no status yet", None, PENDING, "", {}),
    ("created, no trials", status(CREATED), RUNNING, "ExperimentCreated", {}),
    ("running", status(CREATED, RUNNING_TRUE, trials=3, trialsRunning=2, trialsSucceeded=1, optimal=OPTIMAL),
     RUNNING, "ExperimentRunning", {"trials": 3, "trialsSucceeded": 1}),
    ("goal reached", status(CREATED, RUNNING_FALSE, GOAL, completed=True, optimal=OPTIMAL, trials=6,
                            trialsSucceeded=5, trialsFailed=1), SUCCEEDED, "ExperimentGoalReached",
     {"trials": 6, "trialsSucceeded": 5, "trialsFailed": 1}),
    ("max trials", status(CREATED, RUNNING_FALSE, MAX_TRIALS, completed=True, optimal=OPTIMAL, trials=12,
                          trialsSucceeded=12), SUCCEEDED, "ExperimentMaxTrialsReached",
     {"trials": 12, "trialsSucceeded": 12}),
    ("max failed", status(CREATED, RUNNING_FALSE, FAILED_COUNT, completed=True, trials=4, trialsFailed=4),
     FAILED, "ExperimentFailed", {"trials": 4, "trialsFailed": 4}),
    ("suggestion failed", status(CREATED, SUGGESTION_FAILED, completed=True), FAILED, "ExperimentFailed", {}),
    ("restarted after max trials", status(CREATED, RUNNING_FALSE, RESTARTING, optimal=OPTIMAL, trials=12,
                                          trialsSucceeded=12), RUNNING, "ExperimentRestarting",
     {"trials": 12, "trialsSucceeded": 12}),
]


@pytest.mark.parametrize(("reason", "given", "phase", "upstream_reason", "counters"), READER_CASES,
                         ids=[case[0] for case in READER_CASES])
def test_reader(reason, given, phase, upstream_reason, counters):
    obj = build()
    if given is not None:
        obj["status"] = given
    state = katib.read(obj)
    assert (state.phase, state.reason) == (phase, upstream_reason), reason
    assert {key: state.outputs[key] for key in ("trials", "trialsSucceeded", "trialsFailed")} == {
        "trials": 0, "trialsSucceeded": 0, "trialsFailed": 0, **counters}
    if given is not None and given.get("currentOptimalTrial") is OPTIMAL:
        assert state.outputs["bestTrialName"] == "churn-hpo-x7k2p9qd"
        assert state.outputs["bestParameters"] == BEST_PARAMETERS
        assert state.outputs["bestObjectiveValue"] == "0.96"
    else:
        assert (state.outputs["bestTrialName"], state.outputs["bestParameters"],
                state.outputs["bestObjectiveValue"]) == (None, {}, None)


def _metric(**values: str) -> dict:
    return {"bestTrialName": "t", "parameterAssignments": [],
            "observation": {"metrics": [{"name": "m", **values}, {"name": "other", "min": "9", "max": "9",
                                                                     "latest": "9"}]}}


@pytest.mark.parametrize(("reason", "objective", "metric", "expected"), [
    ("maximize takes max", {"type": "maximize"}, {"min": "1", "max": "3", "latest": "2"}, "3"),
    ("minimize takes min", {"type": "minimize"}, {"min": "1", "max": "3", "latest": "2"}, "1"),
    ("an explicit strategy wins", {"type": "maximize", "metricStrategies": [{"name": "m", "value": "latest"}]},
     {"min": "1", "max": "3", "latest": "2"}, "2"),
    ("unavailable max falls back to latest", {"type": "maximize"},
     {"min": "unavailable", "max": "unavailable", "latest": "2"}, "2"),
    ("never measured", {"type": "maximize"},
     {"min": "unavailable", "max": "unavailable", "latest": "unavailable"}, None),
])
def test_best_objective_value(reason, objective, metric, expected):
    obj = {"spec": {"objective": {"objectiveMetricName": "m", **objective}},
           "status": {"currentOptimalTrial": _metric(**metric)}}
    assert katib.read(obj).outputs["bestObjectiveValue"] == expected, reason


# --- the real apiserver (the Katib CRDs keep unknown fields; this proves the round trip) ----------


@pytest.mark.parametrize("training", [TRAINING, TRAINING_TRAINJOB], ids=["PyTorchJob", "TrainJob"])
def test_built_experiment_is_stored_unpruned(api_client, namespace, owner, training):
    sent = katib.build(meta("churn-hpo", namespace, owner), TUNING, training, env=INJECTED_ENV,
                       hyperparameters=training["hyperparameters"], gpu_resource=GPU)
    assert_stored_unpruned(sent, create_and_read_back(api_client, katib, sent))


@pytest.mark.parametrize("given", [case[1] for case in READER_CASES if case[1]],
                         ids=[case[0] for case in READER_CASES if case[1]])
def test_upstream_status_is_accepted_and_read(api_client, namespace, given):
    sent = katib.build(meta("churn-hpo", namespace), TUNING, TRAINING, env=INJECTED_ENV,
                       hyperparameters={}, gpu_resource=GPU)
    stored = write_status(api_client, katib, create_and_read_back(api_client, katib, sent), given)
    assert dropped_fields({k: v for k, v in given.items() if v is not None}, stored["status"]) == []
    assert katib.read(stored) == katib.read({**sent, "status": given})
