"""Katib Experiment (`kubeflow.org/v1beta1`, Katib v0.19.0): builder and status reader.

Katib's mutating webhook may not run (it does not in tests, and a cluster can lack it), so the
builder writes every field the webhook would default. The trial template is the training backend's
own job spec with the tuned hyperparameters as `${trialParameters.<name>}` placeholders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, ChildState
from traindeploy.children import pytorchjob, trainjob
from traindeploy.children.pytorchjob import copy_meta

API_VERSION = "kubeflow.org/v1beta1"
KIND = "Experiment"
GROUP = "kubeflow.org"
VERSION = "v1beta1"
PLURAL = "experiments"
TRIAL_KIND = "Trial"
TRIAL_PLURAL = "trials"

# Katib's validating webhook rejects longer names (trial names append 9 characters).
MAX_NAME_LENGTH = 40
DEFAULT_ALGORITHM = "random"
DEFAULT_PARALLEL_TRIALS = 1
DEFAULT_DISTRIBUTION = "uniform"
UNAVAILABLE = "unavailable"

# A metric name the StdOut collector's default filter `([\w|-]+)\s*=\s*...` can capture whole;
# any other name would never be read from the trainer's output.
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_|-]+$")


def readable_metric_name(name: str) -> bool:
    return bool(_METRIC_NAME.match(name))


REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
_SUCCEEDED_TRUE = 'status.conditions.#(type=="{}")#|#(status=="True")#'
_FAILED_TRUE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'

# Per backend: the job module, the container Katib collects metrics from, the GJSON conditions and
# the labels of the pod that prints the metrics (what the webhook would have defaulted).
BACKENDS: dict[str, dict[str, Any]] = {
    "PyTorchJob": {
        "module": pytorchjob,
        "primaryContainerName": pytorchjob.CONTAINER_NAME,
        "successCondition": _SUCCEEDED_TRUE.format("Succeeded"),
        "failureCondition": _FAILED_TRUE,
        "primaryPodLabels": {"training.kubeflow.org/job-role": "master"},
    },
    "TrainJob": {
        "module": trainjob,
        "primaryContainerName": trainjob.NODE,
        "successCondition": _SUCCEEDED_TRUE.format("Complete"),
        "failureCondition": _FAILED_TRUE,
        "primaryPodLabels": {"jobset.sigs.k8s.io/replicatedjob-name": trainjob.NODE,  # the trainer step
                             "batch.kubernetes.io/job-completion-index": "0"},
    },
}


def format_number(value: Any, *, integer: bool) -> str:
    """A feasible-space bound as Katib wants it: a string without float noise ("0.1", not
    "0.1000000000000000055"); an int parameter's bound as a plain integer ("3")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a number: {value!r}")
    number = float(value) if isinstance(value, str) else value
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    if integer:
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(f"an int parameter needs whole numbers, got {value!r}")
        return str(int(number))
    if isinstance(number, int):
        return str(number)
    # 15 significant digits is what a double always holds exactly; it drops arithmetic residue.
    return format(number, ".15g")


def parameter(spec: Mapping[str, Any]) -> dict:
    """One `spec.parameters[]` entry from a TrainDeploy tuning parameter."""
    kind = spec["type"]
    space: dict[str, Any] = {}
    if kind in ("double", "int"):
        integer = kind == "int"
        for key in ("min", "max", "step"):
            if spec.get(key) is not None:
                space[key] = format_number(spec[key], integer=integer)
    elif kind in ("categorical", "discrete"):
        space["list"] = [str(item) for item in spec.get("values") or []]
    else:
        raise ValueError(f"parameter {spec.get('name')!r}: unknown type {kind!r}")
    space["distribution"] = spec.get("distribution") or DEFAULT_DISTRIBUTION
    return {"name": spec["name"], "parameterType": kind, "feasibleSpace": space}


# Katib's StdOut collector runs the primary container as `sh -c "<command> <args> 1>..."`, the
# words joined with spaces and not quoted (wrapWorkerContainer, pkg/webhook/v1beta1/pod/utils.go
# @ v0.19.0). Only the primary pod is wrapped; the other replicas run the same words without a
# shell, so quoting them would change what those see. A word survives both only when the shell
# leaves it as it is: no spaces, quotes, `$`, globs or other shell syntax, and not empty.
_SHELL_INERT = re.compile(r"[\w@%+=:,./-]+")


def survives_stdout_wrapper(word: str) -> bool:
    return bool(_SHELL_INERT.fullmatch(word))


def trial_args(training: Mapping[str, Any], hyperparameters: Mapping[str, Any],
               tuned: list[str]) -> list[str]:
    """The user's args, then `--<name>=<value>` sorted by name, where a tuned name takes Katib's
    placeholder instead of a fixed hyperparameter of the same name."""
    values: dict[str, Any] = dict(hyperparameters)
    values.update({name: "${trialParameters.%s}" % name for name in tuned})
    return pytorchjob.training_args(training, values)


def objective(tuning: Mapping[str, Any]) -> dict:
    """`spec.objective` with one metric strategy per metric, as the webhook would add them."""
    given = tuning["objective"]
    direction = given["direction"]
    metric = given["metricName"]
    additional = list(given.get("additionalMetricNames") or [])
    for name in [metric, *additional]:
        if not readable_metric_name(name):
            raise ValueError(f"metric {name!r} cannot be read from stdout by Katib: print it as "
                             "name=value with a name of letters, digits, '_', '-' or '|'")
    if metric in additional:
        raise ValueError(f"objective metric {metric!r} is also an additional metric")
    strategy = "max" if direction == "maximize" else "min"
    built: dict[str, Any] = {"type": direction, "objectiveMetricName": metric}
    if given.get("goal") is not None:
        built["goal"] = given["goal"]
    if additional:
        built["additionalMetricNames"] = additional
    built["metricStrategies"] = [{"name": name, "value": strategy} for name in [metric, *additional]]
    return built


def build(meta: dict, tuning: dict, training: dict, *, env: list[dict], hyperparameters: dict[str, str],
          gpu_resource: str, job_options: Mapping[str, Any] | None = None) -> dict:
    """The whole Experiment: search space, objective and a trial template of the training backend.
    `job_options` go to the backend's `job_spec` (a TrainJob's trainer `step` and served `fields`);
    a TrainJob trial's metrics come from the trainer step's first pod."""
    name = meta.get("name") or ""
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"Experiment name {name!r} is longer than {MAX_NAME_LENGTH} characters")
    backend_name = training.get("backend") or "PyTorchJob"
    if backend_name not in BACKENDS:
        raise ValueError(f"unknown training backend {backend_name!r}")
    backend = BACKENDS[backend_name]
    module = backend["module"]

    parameters = [parameter(item) for item in tuning["parameters"]]
    tuned = [item["name"] for item in parameters]
    trial_spec = {
        "apiVersion": module.API_VERSION,
        "kind": module.KIND,
        "spec": module.job_spec(training, env=env, args=trial_args(training, hyperparameters, tuned),
                                gpu_resource=gpu_resource, **(job_options or {})),
    }
    pod_labels = dict(backend["primaryPodLabels"])
    if module is trainjob and (job_options or {}).get("step"):
        pod_labels[REPLICATED_JOB_LABEL] = job_options["step"]
    trial_template = {
        "primaryContainerName": backend["primaryContainerName"],
        "successCondition": backend["successCondition"],
        "failureCondition": backend["failureCondition"],
        "primaryPodLabels": pod_labels,
        "trialParameters": [{"name": item, "description": f"Tuned hyperparameter {item}", "reference": item}
                            for item in tuned],
        "trialSpec": trial_spec,
    }

    algorithm: dict[str, Any] = {"algorithmName": tuning.get("algorithm") or DEFAULT_ALGORITHM}
    settings = tuning.get("algorithmSettings") or {}
    if settings:
        algorithm["algorithmSettings"] = [{"name": key, "value": str(settings[key])} for key in sorted(settings)]

    spec: dict[str, Any] = {
        "algorithm": algorithm,
        "objective": objective(tuning),
        "parameters": parameters,
        "parallelTrialCount": int(tuning.get("parallelTrials") or DEFAULT_PARALLEL_TRIALS),
        "maxTrialCount": int(tuning["maxTrials"]),
    }
    if tuning.get("maxFailedTrials") is not None:
        spec["maxFailedTrialCount"] = int(tuning["maxFailedTrials"])
    spec["resumePolicy"] = "Never"
    spec["metricsCollectorSpec"] = {"collector": {"kind": "StdOut"}}
    spec["trialTemplate"] = trial_template
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": copy_meta(meta), "spec": spec}


# --- reader -----------------------------------------------------------------------------------


def _objective_strategy(obj: Mapping[str, Any], metric: str) -> str:
    """The strategy Katib picks the objective's value with: the spec's, else the webhook default."""
    given = (obj.get("spec") or {}).get("objective") or {}
    for item in given.get("metricStrategies") or []:
        if item.get("name") == metric and item.get("value"):
            return item["value"]
    return {"maximize": "max", "minimize": "min"}.get(given.get("type"), "latest")


def best_objective_value(obj: Mapping[str, Any]) -> str | None:
    """The best trial's objective value by its strategy, falling back to `latest` as Katib does
    when min/max is unavailable; None when the metric was never seen."""
    metric = (((obj.get("spec") or {}).get("objective") or {}).get("objectiveMetricName")) or ""
    optimal = (obj.get("status") or {}).get("currentOptimalTrial") or {}
    for item in (optimal.get("observation") or {}).get("metrics") or []:
        if item.get("name") != metric:
            continue
        for key in (_objective_strategy(obj, metric), "latest"):
            value = item.get(key)
            if value not in (None, "", UNAVAILABLE):
                return str(value)
        return None
    return None


def read(obj: dict) -> ChildState:
    """Where the Experiment stands, and its best trial so far.

    Katib appends a condition when it changes and turns Running False before appending Succeeded
    or Failed, so the last True condition is the current state.
    """
    status = obj.get("status") or {}
    optimal = status.get("currentOptimalTrial") or {}
    outputs = {
        "bestTrialName": optimal.get("bestTrialName") or None,
        "bestParameters": {item["name"]: str(item.get("value", ""))
                           for item in optimal.get("parameterAssignments") or [] if item.get("name")},
        "bestObjectiveValue": best_objective_value(obj),
        # Counters are omitempty upstream: absent means 0.
        "trials": int(status.get("trials") or 0),
        "trialsSucceeded": int(status.get("trialsSucceeded") or 0),
        "trialsFailed": int(status.get("trialsFailed") or 0),
    }
    for item in reversed(status.get("conditions") or []):
        if item.get("status") != "True":
            continue
        kind = item.get("type")
        phase = {"Succeeded": SUCCEEDED, "Failed": FAILED, "Running": RUNNING,
                 "Restarting": RUNNING, "Created": RUNNING}.get(kind)
        if phase is not None:
            return ChildState(phase, item.get("reason") or "", item.get("message") or "", outputs)
    return ChildState(PENDING, outputs=outputs)


def unfinished_trials(obj: dict) -> list[str]:
    """The Trials Katib lists as running or pending (`status.runningTrialList` and
    `pendingTrialList`, experiment_types.go @ v0.19.0). Katib leaves them running when the
    Experiment ends (experiment_controller.go): their jobs keep their pods and GPUs."""
    status = obj.get("status") or {}
    names: list[str] = []
    for key in ("runningTrialList", "pendingTrialList"):
        names.extend(name for name in status.get(key) or [] if name and name not in names)
    return names
