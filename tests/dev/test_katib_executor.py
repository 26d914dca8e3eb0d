"""The Katib executor of `traindeploy dev`: the pure parts table by table (algorithms, search
space, template, metrics, status vs the operator's reader), then real searches on the real
apiserver with trials as real processes (a small Python script printing Katib's `name=value`)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
from kubernetes import client

from traindeploy.children import FAILED, RUNNING, SUCCEEDED, katib
from traindeploy.dev import katib as executor_module
from traindeploy.dev.katib import (KatibExecutor, SuggestionFailed, TemplateError, TrialLaunch, grid, merge_patch,
                                   observation, parse_metrics, primary_container, sampler, search_space, substitute)
from traindeploy.dev.status import katib as st

GPU = "nvidia.com/gpu"
TRAINING = {"backend": "PyTorchJob", "image": "ghcr.io/traindeploy/example-trainer:0.1",
            "command": ["python", "/app/train.py"], "args": ["--seed=7"], "workers": 1,
            "hyperparameters": {"epochs": "3", "lr": "0.5"}}
TUNING = {"algorithm": "tpe", "algorithmSettings": {"random_state": "3"},
          "objective": {"metricName": "accuracy", "direction": "maximize", "additionalMetricNames": ["loss"]},
          "maxTrials": 6, "parallelTrials": 2,
          "parameters": [{"name": "lr", "type": "double", "min": 0.0001, "max": 1.0, "distribution": "logUniform"},
                         {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]}]}


def experiment(name: str = "hpo", tuning: dict = TUNING, training: dict = TRAINING, namespace: str = "ns") -> dict:
    """The Experiment exactly as the operator builds it."""
    return katib.build({"name": name, "namespace": namespace}, tuning, training, env=[{"name": "SEED", "value": "7"}],
                       hyperparameters=training["hyperparameters"], gpu_resource=GPU)


def double(name, low, high, step=None, distribution="uniform"):
    space = {"min": str(low), "max": str(high), "distribution": distribution}
    if step is not None:
        space["step"] = str(step)
    return {"name": name, "parameterType": "double", "feasibleSpace": space}


def integer(name, low, high, step=None, distribution="uniform"):
    return {**double(name, low, high, step, distribution), "parameterType": "int"}


def listed(name, values, kind="categorical"):
    return {"name": name, "parameterType": kind, "feasibleSpace": {"list": values, "distribution": "uniform"}}


PARAMETERS = [double("lr", 0.001, 0.1, distribution="logUniform"), integer("layers", 2, 8, 2),
              listed("optimizer", ["adam", "sgd"])]


# --- algorithms -------------------------------------------------------------------------------


def algorithm(name, **settings):
    return {"algorithmName": name, "algorithmSettings": [{"name": k, "value": str(v)} for k, v in settings.items()]}


def first_suggestions(built, space, count=3):
    study = optuna.create_study(sampler=built, direction="maximize")
    asked = []
    for _ in range(count):
        trial = study.ask(fixed_distributions=space)
        asked.append(dict(trial.params))
        study.tell(trial, float(len(asked)))
    return asked


@pytest.mark.parametrize("name, settings, expected", [
    ("random", {"random_state": 7}, optuna.samplers.RandomSampler),
    ("grid", {"random_state": 7}, optuna.samplers.GridSampler),
    ("tpe", {"random_state": 7, "n_startup_trials": 2, "n_EI_candidates": 12, "gamma": 0.25},
     optuna.samplers.TPESampler),
    ("multivariate-tpe", {"random_state": 7}, optuna.samplers.TPESampler),
    ("cmaes", {"random_state": 7, "sigma": 0.3}, optuna.samplers.CmaEsSampler),
    ("sobol", {"random_state": 7}, optuna.samplers.QMCSampler),
])
def test_each_algorithm_maps_to_its_optuna_sampler_and_honours_the_seed(name, settings, expected):
    parameters = [double("lr", 0.001, 0.1, 0.001), integer("layers", 2, 8, 2), listed("optimizer", ["adam", "sgd"])]
    space = search_space(parameters)
    built = sampler(algorithm(name, **settings), parameters)
    assert isinstance(built, expected)
    again = sampler(algorithm(name, **settings), parameters)
    assert first_suggestions(built, space) == first_suggestions(again, space), "random_state makes it repeatable"


def test_tpe_settings_reach_the_sampler():
    built = sampler(algorithm("multivariate-tpe", n_startup_trials=4, n_ei_candidates=8, gamma=0.5), PARAMETERS)
    assert (built._n_startup_trials, built._n_ei_candidates, built._multivariate) == (4, 8, True)
    assert built._gamma(16) == 2  # hyperopt: ceil(0.5 * sqrt(16))
    assert sampler(algorithm("sobol"), PARAMETERS)._qmc_type == "sobol"


def test_bayesianoptimization_is_the_gaussian_process_sampler_when_torch_is_there(monkeypatch):
    monkeypatch.setattr(executor_module, "has_module", lambda name: True)
    assert isinstance(sampler(algorithm("bayesianoptimization", random_state=7, n_initial_points=3), PARAMETERS),
                      optuna.samplers.GPSampler)
    monkeypatch.setattr(executor_module, "has_module", lambda name: name != "torch")
    with pytest.raises(SuggestionFailed, match="bayesianoptimization.*torch"):
        sampler(algorithm("bayesianoptimization"), PARAMETERS)
    with pytest.raises(SuggestionFailed, match="base_estimator RF"):
        sampler(algorithm("bayesianoptimization", base_estimator="RF"), PARAMETERS)


@pytest.mark.parametrize("name", ["hyperband", "enas", "darts", "pbt", "no-such-algorithm"])
def test_an_algorithm_without_an_optuna_sampler_fails_naming_it(name):
    with pytest.raises(SuggestionFailed, match=f"'{name}'"):
        sampler(algorithm(name), PARAMETERS)


def test_a_setting_that_is_no_number_fails_naming_it():
    with pytest.raises(SuggestionFailed, match="random_state"):
        sampler(algorithm("random", random_state="seven"), PARAMETERS)


# --- search space -----------------------------------------------------------------------------

F, I, C = optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution, \
    optuna.distributions.CategoricalDistribution


@pytest.mark.parametrize("parameter, expected", [
    (double("lr", 0.1, 0.5), F(0.1, 0.5)),
    (double("lr", 0.1, 0.5, 0.1), F(0.1, 0.5, step=0.1)),
    (double("lr", 0.0001, 0.1, 0.01, "logUniform"), F(0.0001, 0.1, log=True)),
    (double("lr", 0, 0.1, distribution="logUniform"), F(1e-10, 0.1, log=True)),
    (integer("layers", 2, 8), I(2, 8)),
    (integer("layers", 2, 8, 2), I(2, 8, step=2)),
    (integer("units", 0, 512, distribution="logUniform"), I(1, 512, log=True)),
    (listed("optimizer", ["adam", "sgd"]), C(["adam", "sgd"])),
    (listed("batch_size", ["32", "64"], "discrete"), C(["32", "64"])),
])
def test_parameters_map_to_optuna_distributions(parameter, expected):
    assert search_space([parameter]) == {parameter["name"]: expected}


@pytest.mark.parametrize("parameter, problem", [
    (double("lr", 0.1, 0.5, distribution="normal"), "'lr': distribution normal"),
    (integer("n", 1, 5, distribution="logNormal"), "'n': distribution logNormal"),
    ({"name": "x", "parameterType": "unknown", "feasibleSpace": {}}, "'x' has type 'unknown'"),
    (listed("opt", []), "'opt' has an empty list"),
])
def test_a_space_optuna_cannot_sample_fails_naming_the_parameter(parameter, problem):
    with pytest.raises(SuggestionFailed, match=re.escape(problem)):
        search_space([parameter])


def test_the_grid_is_every_step_and_a_grid_search_visits_each_point_once():
    parameters = [double("lr", 0.1, 0.5, 0.1), integer("layers", 2, 6, 2), listed("opt", ["adam", "sgd"])]
    assert grid(parameters) == {"lr": [0.1, 0.2, 0.3, 0.4, 0.5], "layers": [2, 4, 6], "opt": ["adam", "sgd"]}
    with pytest.raises(SuggestionFailed, match="step for the double parameter 'x'"):
        grid([double("x", 0, 1)])
    small = [double("lr", 0.1, 0.2, 0.1), listed("opt", ["adam", "sgd"])]
    seen = first_suggestions(sampler(algorithm("grid"), small), search_space(small), count=4)
    assert sorted((item["lr"], item["opt"]) for item in seen) == [(0.1, "adam"), (0.1, "sgd"), (0.2, "adam"),
                                                                  (0.2, "sgd")]


# --- trial template ---------------------------------------------------------------------------


def test_substitution_fills_the_operators_template_and_the_master_container_is_launched():
    template = experiment()["spec"]["trialTemplate"]
    trial_spec = substitute(template, {"lr": "0.0213", "optimizer": "sgd"}, trial_name="hpo-x7k2p9qd", namespace="ns")
    container = primary_container(trial_spec, template["primaryContainerName"])
    assert container["name"] == "pytorch"
    assert container["image"] == TRAINING["image"]
    assert container["command"] == ["python", "/app/train.py"]
    assert container["args"] == ["--seed=7", "--epochs=3", "--lr=0.0213", "--optimizer=sgd"]
    assert {"name": "SEED", "value": "7"} in container["env"]
    worker = trial_spec["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert worker["args"] == container["args"], "every replica gets the values"
    assert "${" not in str(trial_spec)


def test_substitution_for_a_trainjob_template():
    training = {**TRAINING, "backend": "TrainJob"}
    training.pop("workers")
    template = experiment(training=training)["spec"]["trialTemplate"]
    trial_spec = substitute(template, {"lr": "0.1", "optimizer": "adam"}, trial_name="t", namespace="ns")
    container = primary_container(trial_spec, template["primaryContainerName"])
    assert container["name"] == "node"
    assert container["args"] == ["--seed=7", "--epochs=3", "--lr=0.1", "--optimizer=adam"]


def test_meta_references_and_template_errors():
    template = {
        "trialParameters": [{"name": "lr", "reference": "lr"}, {"name": "trial", "reference": "${trialSpec.Name}"},
                            {"name": "ns", "reference": "${trialSpec.Namespace}"},
                            {"name": "kind", "reference": "${trialSpec.Kind}"},
                            {"name": "team", "reference": "${trialSpec.Labels[team]}"}],
        "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"labels": {"team": "ml"}},
                      "spec": {"template": {"spec": {"containers": [{"name": "main", "args": [
                          "--lr=${trialParameters.lr}", "${trialParameters.trial}/${trialParameters.ns}",
                          "${trialParameters.kind}-${trialParameters.team}"]}]}}}},
    }
    filled = substitute(template, {"lr": "0.1"}, trial_name="hpo-b2c4d5f6", namespace="ns")
    assert primary_container(filled, "main")["args"] == ["--lr=0.1", "hpo-b2c4d5f6/ns", "Job-ml"]
    with pytest.raises(TemplateError, match="not a parameter"):
        substitute(template, {"momentum": "0.1"}, trial_name="t", namespace="ns")
    with pytest.raises(TemplateError, match="consume"):
        substitute(template, {"lr": "0.1", "momentum": "0.9"}, trial_name="t", namespace="ns")
    undeclared = {**template, "trialParameters": template["trialParameters"][:1]}
    with pytest.raises(TemplateError, match=re.escape("${trialParameters.trial}")):
        substitute(undeclared, {"lr": "0.1"}, trial_name="t", namespace="ns")
    with pytest.raises(TemplateError, match="no container named 'other'"):
        primary_container(filled, "other")


# --- metrics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("line, names, expected", [
    ("loss=0.3", ["loss"], [("loss", "0.3")]),
    ("accuracy=.98", ["accuracy"], [("accuracy", ".98")]),
    ("Score=-7.53e-05", ["Score"], [("Score", "-7.53e-05")]),
    ("Score=1E0 Score = 1.23E10", ["Score"], [("Score", "1E0"), ("Score", "1.23E10")]),
    ("epoch 1 loss=0.31 accuracy=0.9", ["accuracy", "loss"], [("loss", "0.31"), ("accuracy", "0.9")]),
    ("epoch=1 val_loss=0.2 loss=0.4", ["loss"], [("loss", "0.4")]),
    ("accuracy=abc", ["accuracy"], []),
    ("acc=0.5", ["accuracy"], []),
])
def test_metric_lines_parse_with_katibs_default_filter(line, names, expected):
    assert [(sample.name, sample.value) for sample in parse_metrics([line], names)] == expected


def test_min_max_and_latest_by_timestamp_with_unavailable_metrics():
    lines = ["2026-05-01T10:00:02Z accuracy=0.7", "2026-05-01T10:00:03.5Z accuracy=0.9",
             "2026-05-01T10:00:01Z accuracy=0.5", "no metric here", "accuracy=0.95"]
    samples = parse_metrics(lines, ["accuracy", "loss"])
    assert samples[0].timestamp == dt.datetime(2026, 5, 1, 10, 0, 2, tzinfo=dt.timezone.utc)
    assert observation(samples, ["accuracy", "loss"]) == [
        # The line without a timestamp has the zero time: the latest is the newest stamped one.
        {"name": "accuracy", "min": "0.5", "max": "0.95", "latest": "0.9"},
        {"name": "loss", "min": "unavailable", "max": "unavailable", "latest": "unavailable"}]
    unstamped = parse_metrics(["accuracy=0.9", "accuracy=0.8"], ["accuracy"])
    assert observation(unstamped, ["accuracy"])[0]["latest"] == "0.8"


def test_a_custom_metrics_format():
    samples = parse_metrics(["accuracy: 0.75 (epoch 2)"], ["accuracy"], [r"(\w+):\s*(\d+\.\d+)"])
    assert [(sample.name, sample.value) for sample in samples] == [("accuracy", "0.75")]


# --- status vs the operator's reader ----------------------------------------------------------

OBJECTIVE = {"type": "maximize", "objectiveMetricName": "accuracy", "goal": 0.9, "additionalMetricNames": ["loss"],
             "metricStrategies": [{"name": "accuracy", "value": "max"}, {"name": "loss", "value": "max"}]}
SPEC = {"objective": OBJECTIVE, "maxTrialCount": 4, "maxFailedTrialCount": 2}
T0, T1, T2 = "2026-05-01T10:00:00Z", "2026-05-01T10:01:00Z", "2026-05-01T10:02:00Z"


def trial(name, state, accuracy=None, lr="0.01"):
    metrics = () if accuracy is None else (st.metric("accuracy", min="0.1", max=accuracy, latest=accuracy),
                                           st.metric("loss"))
    return st.Trial(f"hpo-{name}", state, (("lr", lr), ("optimizer", "adam")), metrics)


def kinds(status):
    return [(item["type"], item["status"], item["reason"]) for item in status["conditions"]]


@pytest.mark.parametrize("reason, spec, trials, conditions, counts", [
    ("no trials yet: Created only", SPEC, [], [("Created", "True", "ExperimentCreated")], {}),
    ("a trial runs", SPEC, [trial("a", st.T_RUNNING)],
     [("Created", "True", "ExperimentCreated"), ("Running", "True", "ExperimentRunning")],
     {"trials": 1, "trialsRunning": 1}),
    ("the goal is reached (maximize: best >= goal)", SPEC,
     [trial("a", st.T_SUCCEEDED, "0.92"), trial("b", st.T_RUNNING)],
     [("Created", "True", "ExperimentCreated"), ("Running", "False", "ExperimentRunning"),
      ("Succeeded", "True", "ExperimentGoalReached")], {"trials": 2, "trialsSucceeded": 1, "trialsRunning": 1}),
    ("the goal comes before the failed count", SPEC,
     [trial("a", st.T_FAILED), trial("b", st.T_METRICS_UNAVAILABLE), trial("c", st.T_SUCCEEDED, "0.95")],
     [("Created", "True", "ExperimentCreated"), ("Running", "False", "ExperimentRunning"),
      ("Succeeded", "True", "ExperimentGoalReached")],
     {"trials": 3, "trialsFailed": 1, "trialMetricsUnavailable": 1, "trialsSucceeded": 1}),
    ("failed and metrics-unavailable trials reach maxFailedTrialCount", SPEC,
     [trial("a", st.T_FAILED), trial("b", st.T_METRICS_UNAVAILABLE), trial("c", st.T_SUCCEEDED, "0.5")],
     [("Created", "True", "ExperimentCreated"), ("Running", "False", "ExperimentRunning"),
      ("Failed", "True", "ExperimentFailed")],
     {"trials": 3, "trialsFailed": 1, "trialMetricsUnavailable": 1, "trialsSucceeded": 1}),
    ("maxTrialCount completed trials", {**SPEC, "maxFailedTrialCount": 3},
     [trial("a", st.T_SUCCEEDED, "0.5"), trial("b", st.T_SUCCEEDED, "0.6"), trial("c", st.T_FAILED),
      trial("d", st.T_SUCCEEDED, "0.55")],
     [("Created", "True", "ExperimentCreated"), ("Running", "False", "ExperimentRunning"),
      ("Succeeded", "True", "ExperimentMaxTrialsReached")], {"trials": 4, "trialsSucceeded": 3, "trialsFailed": 1}),
    ("minimize: best <= goal", {**SPEC, "objective": {**OBJECTIVE, "type": "minimize", "goal": 0.3,
                                                      "metricStrategies": []}},
     [trial("a", st.T_SUCCEEDED, "0.2")],
     [("Created", "True", "ExperimentCreated"), ("Running", "False", "ExperimentRunning"),
      ("Succeeded", "True", "ExperimentGoalReached")], {"trials": 1, "trialsSucceeded": 1}),
])
def test_status_moves_as_katibs_experiment_controller(reason, spec, trials, conditions, counts):
    previous = st.update({}, spec, [], T0)
    if trials:
        previous = st.update(previous, spec, [trial("a", st.T_RUNNING)], T1)
    built = st.update(previous, spec, trials, T2)
    assert kinds(built) == conditions, reason
    assert {key: built[key] for key in built if key.startswith("trial")} == counts, reason
    assert built["startTime"] == T0
    assert built["completionTime"] == (T2 if st.is_completed(built) else None)
    read = katib.read({"spec": spec, "status": built})
    assert read.phase == {"Succeeded": SUCCEEDED, "Failed": FAILED}.get(conditions[-1][0], RUNNING)
    assert read.outputs["trials"] == counts.get("trials", 0)


def test_the_best_trial_reaches_the_operators_reader_with_its_parameters():
    trials = [trial("a", st.T_SUCCEEDED, "0.81", lr="0.1"), trial("b", st.T_SUCCEEDED, "0.87", lr="0.0213"),
              trial("c", st.T_SUCCEEDED, "0.87", lr="0.05"), trial("d", st.T_FAILED)]
    spec = {**SPEC, "objective": {**OBJECTIVE, "goal": None}}
    built = st.update(st.update({}, spec, [], T0), spec, trials, T1)
    assert built["currentOptimalTrial"] == {
        "bestTrialName": "hpo-b",  # the first of equal values stays best, as in Katib
        "parameterAssignments": [{"name": "lr", "value": "0.0213"}, {"name": "optimizer", "value": "adam"}],
        "observation": {"metrics": [{"name": "accuracy", "min": "0.1", "max": "0.87", "latest": "0.87"},
                                    {"name": "loss", "min": "unavailable", "max": "unavailable",
                                     "latest": "unavailable"}]}}
    state = katib.read({"spec": spec, "status": built})
    assert (state.phase, state.reason) == (SUCCEEDED, "ExperimentMaxTrialsReached")
    assert state.outputs == {"bestTrialName": "hpo-b", "bestParameters": {"lr": "0.0213", "optimizer": "adam"},
                             "bestObjectiveValue": "0.87", "trials": 4, "trialsSucceeded": 3, "trialsFailed": 1}


def test_conditions_keep_their_transition_time_and_a_completed_status_keeps_counting():
    spec = {**SPEC, "objective": {**OBJECTIVE, "goal": 0.5}}
    running = st.update(st.update({}, spec, [], T0), spec, [trial("a", st.T_RUNNING)], T1)
    assert st.update(running, spec, [trial("a", st.T_RUNNING)], T2) == running, "nothing changed, nothing new"
    done = st.update(running, spec, [trial("a", st.T_SUCCEEDED, "0.6"), trial("b", st.T_RUNNING)], T2)
    later = st.update(done, spec, [trial("a", st.T_SUCCEEDED, "0.6"), trial("b", st.T_SUCCEEDED, "0.7")],
                      "2026-05-01T10:03:00Z")
    assert later["conditions"] == done["conditions"] and later["completionTime"] == T2
    assert (later["trialsSucceeded"], "trialsRunning" in later) == (2, False)
    assert later["currentOptimalTrial"]["bestTrialName"] == "hpo-b"
    created, running_false, succeeded = done["conditions"]
    assert created["lastTransitionTime"] == T0 and running_false["lastTransitionTime"] == T2
    assert running_false["message"] == "Experiment is running"


def test_the_stand_in_and_the_executor_write_through_the_same_builders():
    failed = st.failed(st.created(T0), st.trial_counts(failed=3), st.MAX_FAILED_MESSAGE, T1)
    assert kinds(failed) == [("Created", "True", "ExperimentCreated"), ("Failed", "True", "ExperimentFailed")]
    assert katib.read({"status": failed}).outputs["trialsFailed"] == 3
    assert st.trial_counts(succeeded=2, running=1) == {"trials": 3, "trialsSucceeded": 2, "trialsRunning": 1}


def test_merge_patch_removes_what_went_away():
    old = {"trials": 2, "trialsRunning": 2, "conditions": [1], "currentOptimalTrial": {"bestTrialName": "a", "x": 1}}
    new = {"trials": 2, "trialsSucceeded": 2, "conditions": [1, 2], "currentOptimalTrial": {"bestTrialName": "b"}}
    assert merge_patch(old, new) == {"trialsRunning": None, "trialsSucceeded": 2, "conditions": [1, 2],
                                     "currentOptimalTrial": {"bestTrialName": "b", "x": None}}
    assert merge_patch(new, new) == {}


# --- real searches on the real apiserver ------------------------------------------------------

TRAIN = textwrap.dedent("""
    import math, os, sys, time
    args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--"))
    mode = os.environ.get("TRIAL_MODE", "learn")
    if mode == "fail":
        sys.exit(3)
    if mode == "sleep":
        time.sleep(120)
    lr = float(args["lr"])
    best = 1 - (math.log10(lr) + 2) ** 2 / 8 - (0.05 if args.get("optimizer") == "sgd" else 0)
    print("trial", os.environ["KATIB_TRIAL_NAME"], "lr", lr, flush=True)
    for epoch in (1, 2, 3):
        accuracy = best * epoch / 3
        print(f"epoch={epoch} accuracy={accuracy:.6f} loss={1 - accuracy:.6f}", flush=True)
""")


class ScriptLauncher:
    """Runs the trial's args with a small script instead of the image (what the real launcher
    does with the image's local code), and records what it started."""

    def __init__(self, tmp_path: Path, mode: str = "learn") -> None:
        self.script = tmp_path / "train.py"
        self.script.write_text(TRAIN)
        self.mode = mode
        self.started: list[tuple[TrialLaunch, subprocess.Popen]] = []
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, trial: TrialLaunch, mode: str | None = None) -> subprocess.Popen:
        # `mode` per call: searches launch from their own threads, so a shared attribute would race.
        with self._lock:
            running = sum(1 for _, process in self.started if process.poll() is None)
            self.most_at_once = max(self.most_at_once, running + 1)
            with open(trial.log_path, "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, str(self.script), *trial.container.get("args", [])], stdout=log,
                    stderr=subprocess.STDOUT, env={**os.environ, **trial.env, "TRIAL_MODE": mode or self.mode},
                    start_new_session=True)
            self.started.append((trial, process))
            return process


def create(api_client, namespace: str, obj: dict) -> dict:
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        katib.GROUP, katib.VERSION, namespace, katib.PLURAL, obj)


def wait_experiment(api_client, namespace: str, name: str, predicate, timeout: float = 30.0) -> dict:
    custom = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + timeout
    obj: dict = {}
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(katib.GROUP, katib.VERSION, namespace, katib.PLURAL, name)
        if predicate(obj):
            return obj
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s; status: {obj.get('status')!r}")


def completed(obj: dict) -> bool:
    return st.is_completed(obj.get("status") or {})


def best_accuracy(log: Path) -> float:
    return max(float(value) for value in re.findall(r"accuracy=([0-9.]+)", log.read_text()))


def test_a_tpe_search_runs_real_trials_and_reports_the_best(api_client, namespace, tmp_path):
    launcher = ScriptLauncher(tmp_path)
    obj = experiment(namespace=namespace)
    create(api_client, namespace, obj)
    with KatibExecutor(api_client, namespace, launcher, tmp_path / "work", poll_interval=0.05, watch_timeout=1):
        done = wait_experiment(api_client, namespace, "hpo", completed)
    status = done["status"]
    assert kinds(status)[-1] == ("Succeeded", "True", "ExperimentMaxTrialsReached")
    assert (status["trials"], status["trialsSucceeded"]) == (6, 6)
    assert len(launcher.started) == 6 and launcher.most_at_once <= 2
    assert all(trial.log_path.is_file() and trial.log_path.parent == tmp_path / "work" / namespace / "hpo"
               for trial, _ in launcher.started)
    assert all(re.fullmatch(r"hpo-[a-z0-9]{8}", trial.name) for trial, _ in launcher.started)
    # The best trial is the one whose own log shows the highest accuracy.
    scores = {trial.name: best_accuracy(trial.log_path) for trial, _ in launcher.started}
    best = max(scores, key=scores.get)
    args = {trial.name: trial.container["args"] for trial, _ in launcher.started}
    state = katib.read(done)
    assert state.outputs["bestTrialName"] == best
    assert [f"--{k}={v}" for k, v in state.outputs["bestParameters"].items()] == args[best][2:]
    assert float(state.outputs["bestObjectiveValue"]) == pytest.approx(scores[best])
    lr = float(state.outputs["bestParameters"]["lr"])
    assert 0.0001 <= lr <= 1.0 and state.outputs["bestParameters"]["optimizer"] in ("adam", "sgd")


def test_the_goal_ends_a_minimizing_search_early_and_failures_fail_it(api_client, namespace, tmp_path):
    tuning = {**TUNING, "algorithm": "random", "parallelTrials": 1, "maxTrials": 5,
              "objective": {"metricName": "loss", "direction": "minimize", "goal": 0.95,
                            "additionalMetricNames": ["accuracy"]}}
    create(api_client, namespace, experiment("goal", tuning, namespace=namespace))
    failing = {**TUNING, "algorithm": "random", "parallelTrials": 1, "maxTrials": 5, "maxFailedTrials": 2}
    create(api_client, namespace, experiment("broken", failing, namespace=namespace))
    create(api_client, namespace, experiment("refused", {**failing, "maxFailedTrials": 1}, namespace=namespace))
    launcher = ScriptLauncher(tmp_path)
    modes = {"goal": "learn", "broken": "fail"}

    def launch(trial: TrialLaunch) -> subprocess.Popen:
        experiment_name = trial.name.rsplit("-", 1)[0]
        if experiment_name == "refused":
            raise LookupError(f"no local code for {trial.container['image']}")
        return launcher(trial, mode=modes[experiment_name])

    with KatibExecutor(api_client, namespace, launch, tmp_path / "work", poll_interval=0.05, watch_timeout=1):
        goal = wait_experiment(api_client, namespace, "goal", completed)
        broken = wait_experiment(api_client, namespace, "broken", completed)
        refused = wait_experiment(api_client, namespace, "refused", completed)
    # Every loss the script prints is below 0.95 at its last epoch: the first trial reaches the goal.
    assert kinds(goal["status"])[-1] == ("Succeeded", "True", "ExperimentGoalReached")
    assert (goal["status"]["trials"], goal["status"]["trialsSucceeded"]) == (1, 1)
    names = [item["name"] for item in goal["status"]["currentOptimalTrial"]["observation"]["metrics"]]
    assert names == ["loss", "accuracy"]
    assert float(katib.read(goal).outputs["bestObjectiveValue"]) <= 0.95
    assert kinds(broken["status"])[-1] == ("Failed", "True", "ExperimentFailed")
    assert broken["status"]["conditions"][-1]["message"] == st.MAX_FAILED_MESSAGE
    assert (broken["status"]["trials"], broken["status"]["trialsFailed"]) == (2, 2)
    assert broken["status"]["currentOptimalTrial"] == st.NO_OPTIMAL_TRIAL, "no trial had a value"
    assert kinds(refused["status"])[-1] == ("Failed", "True", "ExperimentFailed")
    assert (refused["status"]["trials"], refused["status"]["trialsFailed"]) == (1, 1)


def test_an_algorithm_without_optuna_fails_and_deleting_or_stopping_ends_trials(api_client, namespace, tmp_path):
    hyperband = {**TUNING, "algorithm": "hyperband", "algorithmSettings": {"r_l": "9", "resource_name": "epochs"}}
    create(api_client, namespace, experiment("hb", hyperband, namespace=namespace))
    create(api_client, namespace, experiment("slow", namespace=namespace))
    launcher = ScriptLauncher(tmp_path, mode="sleep")
    executor = KatibExecutor(api_client, namespace, launcher, tmp_path / "work", poll_interval=0.05, watch_timeout=1)
    with executor:
        hb = wait_experiment(api_client, namespace, "hb", completed)
        wait_experiment(api_client, namespace, "slow", lambda obj: (obj.get("status") or {}).get("trialsRunning") == 2)
        # Created while the executor watches, then given more parallel trials, as Katib allows.
        create(api_client, namespace, experiment("slow2", {**TUNING, "parallelTrials": 1}, namespace=namespace))
        wait_experiment(api_client, namespace, "slow2", lambda obj: (obj.get("status") or {}).get("trialsRunning") == 1)
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            katib.GROUP, katib.VERSION, namespace, katib.PLURAL, "slow2", {"spec": {"parallelTrialCount": 2}})
        wait_experiment(api_client, namespace, "slow2", lambda obj: (obj.get("status") or {}).get("trialsRunning") == 2)
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            katib.GROUP, katib.VERSION, namespace, katib.PLURAL, "slow")
        deleted = [process for trial, process in launcher.started if trial.name.startswith("slow-")]
        deadline = time.monotonic() + 15
        while any(process.poll() is None for process in deleted) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [process.poll() for process in deleted] == [-15, -15], "SIGTERM to each trial of the deleted one"
        kept = [process for trial, process in launcher.started if trial.name.startswith("slow2-")]
        assert [process.poll() for process in kept] == [None, None]
    assert [process.poll() for process in kept] == [-15, -15], "stop() ended the other Experiment's trials"
    state = katib.read(hb)
    assert (state.phase, state.reason) == (FAILED, "ExperimentFailed")
    assert state.message.startswith("Suggestion has failed") and "'hyperband'" in state.message
    assert not [trial for trial, _ in launcher.started if trial.name.startswith("hb-")]
