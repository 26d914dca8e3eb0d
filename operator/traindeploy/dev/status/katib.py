"""Experiment status as Katib v0.19.0's experiment controller writes it (UPSTREAM.md §1.5;
kubeflow/katib pkg/controller.v1beta1/experiment/util/status_util.go and the condition setters in
pkg/apis/controller/experiments/v1beta1/util.go @ v0.19.0).

Pure builders, shared by the dev executor (`traindeploy.dev.katib`) and the test stand-in
(`tests/e2e/players.py`):

- `created`, `running`, `succeeded`, `failed`: the conditions as Katib's setter moves them (a
  changed condition is removed and appended; the same status keeps its `lastTransitionTime`; before
  Succeeded or Failed, Running turns False with its own reason and message);
- `trial_counts`, `optimal_trial`, `metric`: the progress fields (counters are omitempty: 0 is absent);
- `progress` and `update`: what `UpdateExperimentStatus` computes from the trials: counters and
  lists, the best trial by the objective's metric strategy, then goal, failed count and trial
  count, checked in that order.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CREATED, RUNNING, RESTARTING, SUCCEEDED, FAILED = "Created", "Running", "Restarting", "Succeeded", "Failed"

CREATED_REASON = "ExperimentCreated"
RUNNING_REASON = "ExperimentRunning"
GOAL_REACHED = "ExperimentGoalReached"
MAX_TRIALS_REACHED = "ExperimentMaxTrialsReached"
FAILED_REASON = "ExperimentFailed"

CREATED_MESSAGE = "Experiment is created"
RUNNING_MESSAGE = "Experiment is running"
SUCCEEDED_MESSAGES = {
    GOAL_REACHED: "Experiment has succeeded because Objective goal has reached",
    MAX_TRIALS_REACHED: "Experiment has succeeded because max trial count has reached",
}
MAX_FAILED_MESSAGE = "Experiment has failed because max failed count has reached"
SUGGESTION_FAILED_MESSAGE = "Suggestion has failed"

# A metric that never appeared (pkg/controller.v1beta1/consts).
UNAVAILABLE = "unavailable"

# Trial states, in the order Katib checks a trial's conditions when counting.
T_KILLED, T_FAILED, T_SUCCEEDED = "Killed", "Failed", "Succeeded"
T_EARLY_STOPPED, T_RUNNING, T_METRICS_UNAVAILABLE, T_PENDING = \
    "EarlyStopped", "Running", "MetricsUnavailable", "Pending"

# Per trial state: the counter and the list in the Experiment's status.
_STATE_FIELDS = {
    T_RUNNING: ("trialsRunning", "runningTrialList"),
    T_PENDING: ("trialsPending", "pendingTrialList"),
    T_SUCCEEDED: ("trialsSucceeded", "succeededTrialList"),
    T_FAILED: ("trialsFailed", "failedTrialList"),
    T_KILLED: ("trialsKilled", "killedTrialList"),
    T_EARLY_STOPPED: ("trialsEarlyStopped", "earlyStoppedTrialList"),
    T_METRICS_UNAVAILABLE: ("trialMetricsUnavailable", "metricsUnavailableTrialList"),
}
# Every field `progress` owns; a new progress replaces them all.
PROGRESS_FIELDS = ("trials", *[name for pair in _STATE_FIELDS.values() for name in pair], "currentOptimalTrial")
# `currentOptimalTrial` is a struct, not a pointer, in ExperimentStatus (experiment_types.go @
# v0.19.0), so `omitempty` never drops it: the status has it from the first write, empty but for
# its (also struct) observation, and updateTrialsSummary (experiment/util/status_util.go)
# overwrites it only once a trial has an objective value. As the real controller writes it
# (tests/upstream/test_katib.py).
NO_OPTIMAL_TRIAL = {"observation": {}}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Trial:
    """One trial as the status needs it: its state, its parameter assignments (in
    `spec.parameters` order) and its observation metrics (`metric()` entries; none unless the
    collector reported them)."""
    name: str
    state: str
    assignments: tuple[tuple[str, str], ...] = ()
    metrics: tuple[dict, ...] = ()


# --- conditions -------------------------------------------------------------------------------


def _find(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((item for item in conditions if item.get("type") == kind), None)


def _set(conditions: list[dict], kind: str, status: str, reason: str, message: str, at: str) -> list[dict]:
    """Katib's `setCondition`: nothing when status and reason are the same; otherwise the
    condition moves to the end, keeping `lastTransitionTime` when only the reason changed."""
    current = _find(conditions, kind)
    if current is not None and current.get("status") == status and current.get("reason") == reason:
        return conditions
    new = {"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": at, "lastTransitionTime": at}
    if current is not None and current.get("status") == status:
        new["lastTransitionTime"] = current.get("lastTransitionTime", at)
    return [item for item in conditions if item.get("type") != kind] + [new]


def _conditions(status: Mapping[str, Any]) -> list[dict]:
    return [dict(item) for item in status.get("conditions") or []]


def is_completed(status: Mapping[str, Any]) -> bool:
    return any(item.get("type") in (SUCCEEDED, FAILED) and item.get("status") == "True"
               for item in status.get("conditions") or [])


def _with_progress(previous: Mapping[str, Any], progress: Mapping[str, Any]) -> dict:
    """Counters and lists are recounted each time; the best trial is picked again from all trials,
    and kept when none has an objective value."""
    status = {key: copy.deepcopy(value) for key, value in previous.items() if key not in PROGRESS_FIELDS}
    status["currentOptimalTrial"] = copy.deepcopy(previous.get("currentOptimalTrial") or NO_OPTIMAL_TRIAL)
    status.update(copy.deepcopy(dict(progress)))
    return status


def created(at: str) -> dict:
    """The first reconcile: `startTime`, a zero `completionTime` (null on the wire), Created, and
    the empty `currentOptimalTrial`."""
    return {"startTime": at, "completionTime": None,
            "conditions": _set([], CREATED, "True", CREATED_REASON, CREATED_MESSAGE, at),
            "currentOptimalTrial": copy.deepcopy(NO_OPTIMAL_TRIAL)}


def running(previous: Mapping[str, Any], progress: Mapping[str, Any], at: str) -> dict:
    status = _with_progress(previous, progress)
    status["conditions"] = _set(_conditions(previous), RUNNING, "True", RUNNING_REASON, RUNNING_MESSAGE, at)
    return status


def _completed(previous: Mapping[str, Any], progress: Mapping[str, Any], kind: str, reason: str,
               message: str, at: str) -> dict:
    status = _with_progress(previous, progress)
    conditions = _conditions(previous)
    was_running = _find(conditions, RUNNING)
    if was_running is not None:
        conditions = _set(conditions, RUNNING, "False", was_running.get("reason") or RUNNING_REASON,
                          was_running.get("message") or RUNNING_MESSAGE, at)
    status["conditions"] = _set(conditions, kind, "True", reason, message, at)
    status["completionTime"] = at
    return status


def succeeded(previous: Mapping[str, Any], progress: Mapping[str, Any], reason: str, at: str) -> dict:
    """Succeeded with `GOAL_REACHED` or `MAX_TRIALS_REACHED` and Katib's message for it."""
    return _completed(previous, progress, SUCCEEDED, reason, SUCCEEDED_MESSAGES[reason], at)


def failed(previous: Mapping[str, Any], progress: Mapping[str, Any], message: str, at: str) -> dict:
    """Failed, reason `ExperimentFailed`: `MAX_FAILED_MESSAGE`, or the suggestion's failure
    (`SUGGESTION_FAILED_MESSAGE`, here followed by what failed)."""
    return _completed(previous, progress, FAILED, FAILED_REASON, message, at)


# --- progress ---------------------------------------------------------------------------------


def trial_counts(*, succeeded: int = 0, failed: int = 0, running: int = 0, pending: int = 0, killed: int = 0,
                 early_stopped: int = 0, metrics_unavailable: int = 0) -> dict:
    """The counters alone, for a stand-in that has no trials to list; zeros are left out."""
    by_state = {T_SUCCEEDED: succeeded, T_FAILED: failed, T_RUNNING: running, T_PENDING: pending,
                T_KILLED: killed, T_EARLY_STOPPED: early_stopped, T_METRICS_UNAVAILABLE: metrics_unavailable}
    counts = {"trials": sum(by_state.values())}
    counts.update({_STATE_FIELDS[state][0]: count for state, count in by_state.items()})
    return {key: value for key, value in counts.items() if value}


def metric(name: str, *, min: str = UNAVAILABLE, max: str = UNAVAILABLE,  # noqa: A002 (Katib's names)
           latest: str = UNAVAILABLE) -> dict:
    return {"name": name, "min": str(min), "max": str(max), "latest": str(latest)}


def optimal_trial(name: str, assignments: Mapping[str, str] | Iterable[tuple[str, str]],
                  metrics: Iterable[Mapping[str, Any]]) -> dict:
    pairs = assignments.items() if isinstance(assignments, Mapping) else assignments
    return {"bestTrialName": name,
            "parameterAssignments": [{"name": key, "value": str(value)} for key, value in pairs],
            "observation": {"metrics": [dict(item) for item in metrics]}}


def metric_strategies(objective: Mapping[str, Any]) -> dict[str, str]:
    """Metric name to strategy (`min`/`max`/`latest`): the spec's, else the webhook's default
    (`max` when maximizing, `min` when minimizing) for the objective and every additional metric."""
    default = {"maximize": "max", "minimize": "min"}.get(objective.get("type") or "", "latest")
    names = [objective.get("objectiveMetricName") or "", *(objective.get("additionalMetricNames") or [])]
    strategies = {name: default for name in names if name}
    for item in objective.get("metricStrategies") or []:
        if item.get("name") and item.get("value"):
            strategies[item["name"]] = item["value"]
    return strategies


def objective_value(metrics: Iterable[Mapping[str, Any]], objective: Mapping[str, Any]) -> str | None:
    """The trial's objective value by its strategy, `latest` when min/max is unavailable (Katib's
    `getObjectiveMetricValue`); None when the metric is unavailable."""
    name = objective.get("objectiveMetricName")
    strategy = metric_strategies(objective).get(name or "", "latest")
    for item in metrics:
        if item.get("name") != name:
            continue
        value = item.get(strategy) if strategy in ("min", "max") else item.get("latest")
        if value in (None, UNAVAILABLE):
            value = item.get("latest")
        return None if value in (None, "", UNAVAILABLE) else str(value)
    return None


def goal_reached(value: float, objective: Mapping[str, Any]) -> bool:
    goal = objective.get("goal")
    if goal is None:
        return False
    return value >= float(goal) if objective.get("type") == "maximize" else value <= float(goal)


def progress(trials: Sequence[Trial], objective: Mapping[str, Any]) -> tuple[dict, bool]:
    """Counters, lists and `currentOptimalTrial` from the trials, and whether the goal is reached
    by the best of them (Katib's `updateTrialsSummary`; the first of equal values stays best)."""
    fields: dict[str, Any] = {"trials": len(trials)}
    for trial in trials:
        counter, listed = _STATE_FIELDS[trial.state]
        fields[counter] = fields.get(counter, 0) + 1
        fields.setdefault(listed, []).append(trial.name)
    best: Trial | None = None
    best_value = 0.0
    maximize = objective.get("type") == "maximize"
    for trial in trials:
        text = objective_value(trial.metrics, objective)
        if text is None:
            continue
        value = float(text)
        if best is None or (value > best_value if maximize else value < best_value):
            best, best_value = trial, value
    if best is not None:
        fields["currentOptimalTrial"] = optimal_trial(best.name, best.assignments, best.metrics)
    fields = {key: value for key, value in fields.items() if value}
    return fields, best is not None and goal_reached(best_value, objective)


def update(previous: Mapping[str, Any], spec: Mapping[str, Any], trials: Sequence[Trial], at: str) -> dict:
    """The next status from the previous one and the trials, as `UpdateExperimentStatus` does:
    progress always; conditions only while not completed, and Running only once trials exist."""
    status = dict(previous) if previous.get("conditions") else created(at)
    fields, reached = progress(trials, spec.get("objective") or {})
    if is_completed(status) or not trials:
        return _with_progress(status, fields)
    by_state = {state: sum(1 for trial in trials if trial.state == state) for state in _STATE_FIELDS}
    failed_count = by_state[T_FAILED] + by_state[T_METRICS_UNAVAILABLE]
    completed_count = failed_count + by_state[T_SUCCEEDED] + by_state[T_KILLED] + by_state[T_EARLY_STOPPED]
    max_failed, max_trials = spec.get("maxFailedTrialCount"), spec.get("maxTrialCount")
    if reached:
        return succeeded(status, fields, GOAL_REACHED, at)
    if max_failed is not None and failed_count and failed_count >= int(max_failed):
        return failed(status, fields, MAX_FAILED_MESSAGE, at)
    if max_trials is not None and completed_count >= int(max_trials):
        return succeeded(status, fields, MAX_TRIALS_REACHED, at)
    return running(status, fields, at)
