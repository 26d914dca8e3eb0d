"""The Argo CD health scripts in charts/traindeploy-operator/argocd/, run by a real Lua 5.1.

Table-driven: each sample is an object as the apiserver would hand it to Argo CD, with the health
status and message Argo CD must show. TrainDeploy samples are built with the operator's own
condition setter and lifecycle tables, so their shapes are the ones the reconciler writes; Katib
Experiment and PyTorchJob samples use the exact upstream status shapes (shared/reference/UPSTREAM.md
sections 1.5 and 2.3).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from argocd.health import ARGOCD_DIR, HealthScriptError, run_health, script
from harness.debian import lua_interpreter, lua_version
from harness.paths import REPO_ROOT
from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy.reconciler import BY_NAME, STAGES

TRAINDEPLOY = script("traindeploy.io", "TrainDeploy")
EXPERIMENT = script("kubeflow.org", "Experiment")
PYTORCHJOB = script("kubeflow.org", "PyTorchJob")

T0 = "2026-11-23T09:00:00Z"
URL = "http://churn.team-a.example.com"


# -- TrainDeploy samples ------------------------------------------------------------------------------


def td(status: dict | None = None, generation: int = 1, annotations: dict | None = None) -> dict:
    obj = {
        "apiVersion": "traindeploy.io/v1alpha1",
        "kind": "TrainDeploy",
        "metadata": {"name": "churn", "namespace": "team-a", "generation": generation,
                     "uid": "0b1e7c1a-5d2f-4a57-9c3e-2f1f0e8f7d11"},
        "spec": {"model": {"name": "churn-classifier"},
                 "training": {"image": "ghcr.io/example/churn-train:1.4.0"},
                 "gate": {"metric": "accuracy", "threshold": 0.8}},
    }
    if annotations:
        obj["metadata"]["annotations"] = annotations
    if status is not None:
        obj["status"] = status
    return obj


def conditions(*entries: tuple[str, str, str, str], generation: int = 1) -> list[dict]:
    """Conditions as the reconciler writes them: through `conditions.set_condition`."""
    out: list[dict] = []
    for condition_type, status, reason, message in entries:
        out = cond.set_condition(out, condition_type, status, reason, message, generation, T0)
    return out


def stage_done(stage: str, message: str) -> tuple[str, str, str, str]:
    condition_type = BY_NAME[stage].condition
    return condition_type, cond.TRUE, condition_type, message


def stage_running(stage: str, message: str) -> list[tuple[str, str, str, str]]:
    """A stage in progress: the stage Unknown and Ready False, both with the phase as reason."""
    condition_type, phase = BY_NAME[stage].condition, BY_NAME[stage].phase
    return [(condition_type, cond.UNKNOWN, phase, message), (cond.READY, cond.FALSE, phase, message)]


def failed(stage: str | None, reason: str, message: str, *done) -> dict:
    status = {"observedGeneration": 1, "phase": lc.PHASE_FAILED,
              "conditions": conditions(*done, *([(BY_NAME[stage].condition, cond.FALSE, reason, message)] if stage else []),
                                       (cond.READY, cond.FALSE, reason, message))}
    if stage:
        status["failedStage"] = stage
    return status


def blocked(phase: str, stage: str | None, reason: str, message: str) -> dict:
    entries = [(BY_NAME[stage].condition, cond.UNKNOWN, reason, message)] if stage else []
    return {"observedGeneration": 1, "phase": phase,
            "conditions": conditions(*entries, (cond.READY, cond.FALSE, reason, message))}


TRAINED = [stage_done("training", "PyTorchJob churn-g1-train succeeded."),
           stage_done("gate", lc.gate_message("accuracy", 0.91, {"threshold": 0.8}, True)),
           stage_done("registering", "Registered churn-classifier version 3.")]
SERVING_V3 = {"inferenceServiceName": "churn", "url": URL, "modelVersion": "3", "ready": True,
              "traffic": lc.serving_traffic("3")}
READY_V3 = {
    "observedGeneration": 1,
    "phase": lc.PHASE_READY,
    "cycle": {"generation": 1, "specHash": "9f2c4e1a0b3d5e6f", "startedAt": T0},
    "conditions": conditions(*TRAINED, stage_done("deploying", "InferenceService churn is ready with version 3."),
                             (cond.READY, cond.TRUE, "Ready",
                              f"Model churn-classifier version 3 is serving at {URL}.")),
    "training": {"kind": "PyTorchJob", "name": "churn-g1-train", "state": "Succeeded"},
    "model": {"name": "churn-classifier", "version": "3", "source": "runs:/4f6e0c/model",
              "metric": {"name": "accuracy", "value": 0.91, "threshold": 0.8, "passed": True}},
    "serving": SERVING_V3,
    "children": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "churn-g1-train"},
                 {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "churn"}],
}


def ready_v3(**changes) -> dict:
    status = {**READY_V3, **changes}
    return status


def rollout_of_v4(**rollout) -> dict:
    """v3 serves all traffic while v4 waits for a manual approval before its first canary step."""
    return ready_v3(rollout={"version": "4", "stableVersion": "3", "state": "AwaitingApproval", "step": -1,
                             "weight": 0, "startedAt": T0, **rollout},
                    serving={**SERVING_V3, "targetVersion": "4"})


APPROVE_V4 = "kubectl annotate td/churn traindeploy.io/approve=4"

TRAINDEPLOY_SAMPLES = [
    pytest.param(td(), "Progressing", "waiting for the TrainDeploy operator to report status", id="no-status"),
    pytest.param(td({}), "Progressing", "waiting for the TrainDeploy operator to report status", id="empty-status"),
    pytest.param(td(READY_V3, generation=2), "Progressing", "waiting for the operator to observe generation 2",
                 id="new-generation-not-observed"),
    pytest.param(td({"observedGeneration": 1, "phase": "Pending", "conditions": []}), "Progressing", "Pending",
                 id="pending"),
    pytest.param(td({"observedGeneration": 1, "phase": "PipelineRunning",
                     "conditions": conditions(*stage_running("pipeline", "KFP run 5f1c0d2e is Running."))}),
                 "Progressing", "PipelineRunning: KFP run 5f1c0d2e is Running.", id="pipeline-running"),
    pytest.param(td({"observedGeneration": 1, "phase": "Tuning", "conditions": conditions(
                     stage_done("pipeline", "KFP run 5f1c0d2e succeeded."),
                     *stage_running("tuning", "Experiment churn-g1-tune is running. 4 trials so far."))}),
                 "Progressing", "Tuning: Experiment churn-g1-tune is running. 4 trials so far.", id="tuning"),
    # A new cycle while the previous version still serves: ServingReady stays True from before.
    pytest.param(td({"observedGeneration": 2, "phase": "Training", "conditions": conditions(
                     stage_done("deploying", "InferenceService churn is ready with version 3."),
                     *stage_running("training", "PyTorchJob churn-g2-train is running."), generation=2),
                     "serving": SERVING_V3}, generation=2),
                 "Progressing", "Training: PyTorchJob churn-g2-train is running.", id="training-while-v3-serves"),
    pytest.param(td({"observedGeneration": 1, "phase": "Deploying", "conditions": conditions(
                     *TRAINED, *stage_running("deploying", "InferenceService churn is not ready yet: "
                                                           "Revision churn-predictor-00001 is not ready."))}),
                 "Progressing", "Deploying: InferenceService churn is not ready yet: "
                                "Revision churn-predictor-00001 is not ready.", id="deploying"),
    pytest.param(td(READY_V3), "Healthy", f"model churn-classifier version 3 is serving at {URL} (v3 100%)",
                 id="ready"),
    pytest.param(td(failed("training", "TrainingFailed",
                           "PyTorchJob churn-g1-train failed (PyTorchJobFailed): PyTorchJob churn-g1-train is "
                           "failed because 1 Master replica(s) failed.")),
                 "Degraded", "TrainingFailed: PyTorchJob churn-g1-train failed (PyTorchJobFailed): PyTorchJob "
                             "churn-g1-train is failed because 1 Master replica(s) failed. (failed stage: training)",
                 id="training-failed"),
    pytest.param(td(failed("gate", "GateFailed", lc.gate_message("accuracy", 0.55, {"threshold": 0.8}, False)
                           + "; nothing is registered or deployed.",
                           stage_done("training", "PyTorchJob churn-g1-train succeeded."))),
                 "Degraded", "GateFailed: accuracy=0.55 is below the threshold 0.8; nothing is registered or "
                             "deployed. (failed stage: gate)", id="gate-failed"),
    pytest.param(td(failed(None, "InvalidSpec",
                           "spec.mlflow.trackingUri is not set and the operator has no default MLflow URI.")),
                 "Degraded", "InvalidSpec: spec.mlflow.trackingUri is not set and the operator has no default "
                             "MLflow URI.", id="invalid-spec"),
    pytest.param(td(failed("deploying", "ServingDeadlineExceeded",
                           "InferenceService churn is not ready yet. Deadline of 1800s exceeded.", *TRAINED)),
                 "Degraded", "ServingDeadlineExceeded: InferenceService churn is not ready yet. Deadline of 1800s "
                             "exceeded. (failed stage: deploying)", id="serving-deadline"),
    # Ready=False with a failure reason counts even before the phase says Failed.
    pytest.param(td({"observedGeneration": 1, "phase": "Deploying", "conditions": conditions(
                     *TRAINED, (cond.READY, cond.FALSE, "ServingFailed",
                                "InferenceService churn failed (ModelLoadFailed): model failed to load"))}),
                 "Degraded", "ServingFailed: InferenceService churn failed (ModelLoadFailed): model failed to load",
                 id="failure-reason-before-phase"),
    # A temporary outage: the operator retries, so Argo CD must not call it Degraded.
    pytest.param(td(blocked("Training", "training", "MLflowUnavailable",
                            "MLflow at http://127.0.0.1:5999 is unavailable: connection refused")),
                 "Progressing", "Training: blocked, retrying: MLflowUnavailable: MLflow at http://127.0.0.1:5999 is "
                                "unavailable: connection refused", id="mlflow-unavailable"),
    pytest.param(td(blocked("Pending", None, "SecretNotFound", "Secret team-a/mlflow-creds does not exist.")),
                 "Progressing", "Pending: blocked, retrying: SecretNotFound: Secret team-a/mlflow-creds does not "
                                "exist.", id="secret-not-found"),
    pytest.param(td(rollout_of_v4(paused=True, awaitingApproval="4")), "Suspended",
                 f"rollout of model churn-classifier version 4 is paused for approval (traffic: v3 100%); "
                 f"to approve: {APPROVE_V4}", id="awaiting-approval"),
    pytest.param(td(rollout_of_v4(paused=True, awaitingApproval="4"), annotations={"traindeploy.io/approve": "3"}),
                 "Suspended", f"rollout of model churn-classifier version 4 is paused for approval (traffic: v3 100%); "
                              f"to approve: {APPROVE_V4} --overwrite", id="awaiting-approval-old-annotation"),
    pytest.param(td(rollout_of_v4(paused=True, awaitingApproval="4"), annotations={"traindeploy.io/approve": "4"}),
                 "Progressing", "version 4 is approved; waiting for the operator to resume the rollout",
                 id="approved-not-yet-resumed"),
    pytest.param(td(rollout_of_v4(paused=True, awaitingApproval="4"), annotations={"traindeploy.io/approve": "v4"}),
                 "Progressing", "version 4 is approved; waiting for the operator to resume the rollout",
                 id="approved-with-v-prefix"),
    # A first rollout (nothing serves yet) waits before it starts, in phase AwaitingApproval.
    pytest.param(td({"observedGeneration": 1, "phase": "AwaitingApproval", "conditions": conditions(
                     *TRAINED[:2], stage_done("registering", "Registered churn-classifier version 1."),
                     ("ServingReady", cond.UNKNOWN, "AwaitingApproval",
                      "Version 1 waits for approval before the first step (annotate traindeploy.io/approve=1)."),
                     (cond.READY, cond.FALSE, "Deploying",
                      "Version 1 waits for approval before the first step (annotate traindeploy.io/approve=1).")),
                     "model": {"name": "churn-classifier", "version": "1"},
                     "serving": {"inferenceServiceName": "churn", "ready": False, "targetVersion": "1"},
                     "rollout": {"version": "1", "state": "AwaitingApproval", "step": -1, "weight": 0,
                                 "paused": True, "awaitingApproval": "1"}}),
                 "Suspended", "rollout of model churn-classifier version 1 is paused for approval; to approve: "
                              "kubectl annotate td/churn traindeploy.io/approve=1", id="first-rollout-awaiting-approval"),
    # The RolloutPaused condition alone is a signal too; the version then comes from serving.targetVersion.
    pytest.param(td({**READY_V3, "serving": {**SERVING_V3, "targetVersion": "5"},
                     "conditions": READY_V3["conditions"] + [
                         {"type": "RolloutPaused", "status": "True", "reason": "AwaitingApproval",
                          "message": "Version 5 waits for approval.", "lastTransitionTime": T0,
                          "observedGeneration": 1}]}),
                 "Suspended", "rollout of model churn-classifier version 5 is paused for approval (traffic: v3 100%); "
                              "to approve: kubectl annotate td/churn traindeploy.io/approve=5", id="rollout-paused-condition"),
    pytest.param(td({**READY_V3, "phase": "Canary", "conditions": conditions(
                     *TRAINED, *stage_running("deploying", "InferenceService churn is ready with version 3.")),
                     "serving": {**SERVING_V3, "targetVersion": "4", "traffic": "v3 90%, v4 10%"},
                     "rollout": {"version": "4", "stableVersion": "3", "state": "Progressing", "step": 0,
                                 "weight": 10, "paused": False, "message": "Canary at 10%, step 1 of 3."}}),
                 "Progressing", "Canary (v3 90%, v4 10%): Canary at 10%, step 1 of 3.", id="canary-step"),
    # A rolled-back canary fails the cycle; the stable version keeps serving.
    pytest.param(td({**READY_V3, "phase": "Failed", "failedStage": "deploying",
                     "conditions": conditions(*TRAINED, ("ServingReady", cond.TRUE, "RolledBack",
                                                         "Version 3 serves all traffic after a rollback: canary probe "
                                                         "answered 500, expected 200."),
                                              (cond.READY, cond.FALSE, "RolledBack",
                                               "canary probe answered 500, expected 200.")),
                     "rollout": {"version": "4", "stableVersion": "3", "state": "RolledBack", "weight": 0,
                                 "paused": False, "message": "canary probe answered 500, expected 200.",
                                 "failedVersions": ["4"]}}),
                 "Degraded", "RolledBack: canary probe answered 500, expected 200. (failed stage: deploying); "
                             "version 3 is still serving", id="canary-rolled-back"),
    pytest.param(td(ready_v3(rollout={"version": "4", "stableVersion": "3", "state": "RolledBack",
                                      "message": "canary not ready within 600s", "failedVersions": ["4"]})),
                 "Healthy", f"model churn-classifier version 3 is serving at {URL} (v3 100%); version 4 was rolled "
                            "back: canary not ready within 600s", id="ready-after-rollback"),
]


@pytest.mark.parametrize(("obj", "status", "message"), TRAINDEPLOY_SAMPLES)
def test_traindeploy_health(obj, status, message, tmp_path):
    health = run_health(TRAINDEPLOY, obj, tmp_path)
    assert (health.status, health.message) == (status, message)


def _reasons(pattern: str) -> set[str]:
    sources = (REPO_ROOT / "operator" / "traindeploy").rglob("*.py")
    return {reason for path in sources for reason in re.findall(pattern, path.read_text())}


def test_every_failure_reason_of_the_operator_is_degraded_and_every_outage_progressing(tmp_path):
    """The script's reason lists follow the stages: `Fail` reasons (and the deadline reasons)
    end a cycle; `Blocked` reasons are outages the operator retries. A Ready=False with any of
    them, in a phase that is not yet Failed, must read accordingly."""
    failures = _reasons(r'\bFail\(\s*"([A-Za-z]+)"') | {s.deadline_reason for s in STAGES if s.deadline_reason} \
        | {"InvalidSpec"}
    outages = _reasons(r'\bBlocked\(\s*"([A-Za-z]+)"')
    assert {"TrainingFailed", "GateFailed", "InvalidSpec"} <= failures and "MLflowUnavailable" in outages
    wrong = {}
    for reason in sorted(failures | outages):
        obj = td(blocked("Training", "training", reason, f"something about {reason}"))
        health = run_health(TRAINDEPLOY, obj, tmp_path)
        expected = "Degraded" if reason in failures else "Progressing"
        if health.status != expected:
            wrong[reason] = f"{health.status}, want {expected}"
    assert not wrong, (f"update FAILURE_REASONS / RETRIED_REASONS in {TRAINDEPLOY.name}: {wrong}")


# -- Katib Experiment samples (UPSTREAM.md 1.5) ---------------------------------------------------------


def katib_condition(condition_type: str, status: str, reason: str, message: str) -> dict:
    return {"type": condition_type, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": T0, "lastTransitionTime": T0}


CREATED = katib_condition("Created", "True", "ExperimentCreated", "Experiment is created")
RUNNING = katib_condition("Running", "True", "ExperimentRunning", "Experiment is running")
NOT_RUNNING = katib_condition("Running", "False", "ExperimentRunning", "Experiment is running")


def experiment(status: dict | None) -> dict:
    obj = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "churn-g1-tune", "namespace": "team-a", "generation": 1},
        "spec": {"objective": {"type": "maximize", "goal": 0.95, "objectiveMetricName": "accuracy",
                               "additionalMetricNames": ["loss"]},
                 "algorithm": {"algorithmName": "random"}, "parallelTrialCount": 3, "maxTrialCount": 12,
                 "maxFailedTrialCount": 3},
    }
    if status is not None:
        obj["status"] = status
    return obj


OPTIMAL = {
    "bestTrialName": "churn-g1-tune-x7k2p9qd",
    "parameterAssignments": [{"name": "lr", "value": "0.0213"}, {"name": "momentum", "value": "0.71"}],
    "observation": {"metrics": [{"name": "loss", "min": "0.0009", "max": "0.41", "latest": "0.0009"},
                                {"name": "accuracy", "min": "0.80", "max": "0.96", "latest": "0.96"}]},
}

EXPERIMENT_SAMPLES = [
    pytest.param(experiment(None), "Progressing", "waiting for the Katib controller to start the experiment",
                 id="no-status"),
    # completionTime is written as null at creation (it reaches Lua as nil).
    pytest.param(experiment({"startTime": T0, "completionTime": None, "conditions": [CREATED]}),
                 "Progressing", "Experiment is created; trials: 0 of 12", id="created"),
    pytest.param(experiment({"startTime": T0, "completionTime": None, "conditions": [CREATED, RUNNING],
                             "trials": 4, "trialsRunning": 3, "trialsSucceeded": 1,
                             "runningTrialList": ["churn-g1-tune-a", "churn-g1-tune-b", "churn-g1-tune-c"]}),
                 "Progressing", "Experiment is running; trials: 4 of 12 (1 succeeded, 3 running)", id="running"),
    pytest.param(experiment({"startTime": T0, "completionTime": "2026-11-23T09:40:00Z",
                             "conditions": [CREATED, NOT_RUNNING, katib_condition(
                                 "Succeeded", "True", "ExperimentGoalReached",
                                 "Experiment has succeeded because Objective goal has reached")],
                             "currentOptimalTrial": OPTIMAL, "trials": 6, "trialsSucceeded": 5, "trialsFailed": 1}),
                 "Healthy", "Experiment has succeeded because Objective goal has reached; trials: 6 of 12 "
                            "(5 succeeded, 1 failed); best trial churn-g1-tune-x7k2p9qd (accuracy=0.96)",
                 id="goal-reached"),
    pytest.param(experiment({"startTime": T0, "completionTime": "2026-11-23T10:40:00Z",
                             "conditions": [CREATED, NOT_RUNNING, katib_condition(
                                 "Succeeded", "True", "ExperimentMaxTrialsReached",
                                 "Experiment has succeeded because max trial count has reached")],
                             "currentOptimalTrial": OPTIMAL, "trials": 12, "trialsSucceeded": 12}),
                 "Healthy", "Experiment has succeeded because max trial count has reached; trials: 12 of 12 "
                            "(12 succeeded); best trial churn-g1-tune-x7k2p9qd (accuracy=0.96)",
                 id="max-trials-reached"),
    pytest.param(experiment({"startTime": T0, "completionTime": "2026-11-23T09:20:00Z",
                             "conditions": [CREATED, NOT_RUNNING, katib_condition(
                                 "Failed", "True", "ExperimentFailed",
                                 "Experiment has failed because max failed count has reached")],
                             "trials": 4, "trialsFailed": 2, "trialMetricsUnavailable": 1, "trialsSucceeded": 1}),
                 "Degraded", "ExperimentFailed: Experiment has failed because max failed count has reached; "
                             "trials: 4 of 12 (1 succeeded, 2 failed, 1 without metrics)", id="failed"),
    # A restart removes Succeeded and sets Restarting; Running may stay True beside it.
    pytest.param(experiment({"startTime": T0, "conditions": [CREATED, RUNNING, katib_condition(
                                 "Restarting", "True", "ExperimentRestarting", "Experiment is restarted")],
                             "trials": 12, "trialsSucceeded": 12}),
                 "Progressing", "Experiment is restarted; trials: 12 of 12 (12 succeeded)", id="restarting"),
]


@pytest.mark.parametrize(("obj", "status", "message"), EXPERIMENT_SAMPLES)
def test_experiment_health(obj, status, message, tmp_path):
    health = run_health(EXPERIMENT, obj, tmp_path)
    assert (health.status, health.message) == (status, message)


# -- PyTorchJob samples (UPSTREAM.md 2.3) -----------------------------------------------------------------

JOB = "churn-g1-train"


def job_condition(condition_type: str, status: str, reason: str, message: str) -> dict:
    return {"type": condition_type, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": T0, "lastTransitionTime": T0}


def selector(replica: str) -> str:
    return (f"training.kubeflow.org/job-name={JOB},training.kubeflow.org/operator-name=pytorchjob-controller,"
            f"training.kubeflow.org/replica-type={replica.lower()}")


def pytorchjob(status: dict | None) -> dict:
    obj = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": JOB, "namespace": "team-a", "generation": 1},
        "spec": {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "restartPolicy": "OnFailure",
                       "template": {"spec": {"containers": [{"name": "pytorch", "image": "train:1"}]}}},
            "Worker": {"replicas": 2, "restartPolicy": "OnFailure",
                       "template": {"spec": {"containers": [{"name": "pytorch", "image": "train:1"}]}}}}},
    }
    if status is not None:
        obj["status"] = status
    return obj


JOB_CREATED = job_condition("Created", "True", "PyTorchJobCreated", f"PyTorchJob {JOB} is created.")
JOB_RUNNING = job_condition("Running", "True", "PyTorchJobRunning", f"PyTorchJob {JOB} is running.")
JOB_NOT_RUNNING = job_condition("Running", "False", "PyTorchJobRunning", f"PyTorchJob {JOB} is running.")
ACTIVE = {"Master": {"active": 1, "selector": selector("Master")},
          "Worker": {"active": 2, "selector": selector("Worker")}}

PYTORCHJOB_SAMPLES = [
    pytest.param(pytorchjob(None), "Progressing", "waiting for the Training Operator to create the job's pods",
                 id="no-status"),
    pytest.param(pytorchjob({"startTime": T0, "lastReconcileTime": T0, "conditions": [JOB_CREATED],
                             "replicaStatuses": {"Master": {"selector": selector("Master")},
                                                 "Worker": {"selector": selector("Worker")}}}),
                 "Progressing", f"PyTorchJob {JOB} is created.", id="created"),
    pytest.param(pytorchjob({"startTime": T0, "conditions": [JOB_CREATED, JOB_RUNNING], "replicaStatuses": ACTIVE}),
                 "Progressing", f"PyTorchJob {JOB} is running. (Master: 1 active; Worker: 2 active)", id="running"),
    # Restarting replaces Running.
    pytest.param(pytorchjob({"startTime": T0, "conditions": [JOB_CREATED, job_condition(
                                 "Restarting", "True", "PyTorchJobRestarting",
                                 f"PyTorchJob {JOB} is restarting because 1 Worker replica(s) failed.")],
                             "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 1, "failed": 1}}}),
                 "Progressing", f"PyTorchJob {JOB} is restarting because 1 Worker replica(s) failed. "
                                "(Master: 1 active; Worker: 1 active, 1 failed)", id="restarting"),
    pytest.param(pytorchjob({"startTime": T0, "completionTime": "2026-11-23T09:40:00Z",
                             "conditions": [JOB_CREATED, JOB_NOT_RUNNING, job_condition(
                                 "Succeeded", "True", "PyTorchJobSucceeded",
                                 f"PyTorchJob {JOB} is successfully completed.")],
                             "replicaStatuses": {"Master": {"succeeded": 1}, "Worker": {"succeeded": 2}}}),
                 "Healthy", f"PyTorchJob {JOB} is successfully completed.", id="succeeded"),
    pytest.param(pytorchjob({"startTime": T0, "completionTime": "2026-11-23T09:10:00Z",
                             "conditions": [JOB_CREATED, JOB_NOT_RUNNING, job_condition(
                                 "Failed", "True", "PyTorchJobFailed",
                                 f"PyTorchJob {JOB} is failed because 1 Master replica(s) failed.")],
                             "replicaStatuses": {"Master": {"failed": 1}, "Worker": {"active": 2}}}),
                 "Degraded", f"PyTorchJobFailed: PyTorchJob {JOB} is failed because 1 Master replica(s) failed. "
                             "(Master: 1 failed; Worker: 2 active)", id="failed"),
    pytest.param(pytorchjob({"startTime": T0, "conditions": [JOB_CREATED, JOB_NOT_RUNNING, job_condition(
                                 "Failed", "True", "PyTorchJobFailed",
                                 f"Job {JOB} has failed because it has reached the specified backoff limit")]}),
                 "Degraded", f"PyTorchJobFailed: Job {JOB} has failed because it has reached the specified "
                             "backoff limit", id="backoff-limit"),
    # Suspending turns Running False with the Suspended reason and appends Suspended=True.
    pytest.param(pytorchjob({"conditions": [JOB_CREATED, job_condition(
                                 "Running", "False", "PyTorchJobSuspended", f"PyTorchJob {JOB} is suspended."),
                                 job_condition("Suspended", "True", "PyTorchJobSuspended",
                                               f"PyTorchJob {JOB} is suspended.")]}),
                 "Suspended", f"PyTorchJob {JOB} is suspended.", id="suspended"),
    # Resumed: Suspended=False moves to the end; the last True condition is Created again.
    pytest.param(pytorchjob({"startTime": T0, "conditions": [JOB_CREATED, job_condition(
                                 "Running", "False", "PyTorchJobSuspended", f"PyTorchJob {JOB} is suspended."),
                                 job_condition("Suspended", "False", "PyTorchJobResumed",
                                               f"PyTorchJob {JOB} is resumed.")]}),
                 "Progressing", f"PyTorchJob {JOB} is created.", id="resumed"),
]


@pytest.mark.parametrize(("obj", "status", "message"), PYTORCHJOB_SAMPLES)
def test_pytorchjob_health(obj, status, message, tmp_path):
    health = run_health(PYTORCHJOB, obj, tmp_path)
    assert (health.status, health.message) == (status, message)


# -- the scripts, the interpreter and the sandbox ------------------------------------------------------------


def test_the_three_scripts_are_named_for_the_configmap_keys():
    assert sorted(p.name for p in ARGOCD_DIR.glob("*.lua")) == [
        "kubeflow.org_Experiment.lua", "kubeflow.org_PyTorchJob.lua", "traindeploy.io_TrainDeploy.lua"]


def test_the_interpreter_is_lua_5_1():
    assert lua_version(lua_interpreter()).startswith("Lua 5.1")


# Libraries and syntax Argo CD's health-script sandbox (gopher-lua, Lua 5.1, no open libs) lacks; a
# method call (`x:f()`) is refused as well, since strings have no methods there.
FORBIDDEN = re.compile(r"\b(string|math|io|debug|utf8|coroutine)\s*\.|\brequire\b|\bgoto\b|//|"
                       r"\btable\.(unpack|pack|move)\b|[\w\"')\]]\s*:\s*\w+\s*[(\"{]")


@pytest.mark.parametrize("path", sorted(ARGOCD_DIR.glob("*.lua")), ids=lambda p: p.name)
def test_scripts_use_only_what_argocd_provides(path: Path):
    code = "\n".join(line.split("--", 1)[0] if not line.lstrip().startswith("--") else ""
                     for line in path.read_text().splitlines())
    # Drop string literals so that their text cannot match.
    code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', code)
    assert not FORBIDDEN.findall(code), f"{path.name} uses something Argo CD's Lua sandbox lacks"
    assert path.read_text().rstrip().endswith("return hs")


@pytest.mark.parametrize(("body", "error"), [
    ('hs = {status = string.format("%s", "Healthy")} return hs', "raised an error"),
    ('local s = "Healthy" hs = {status = s:lower()} return hs', "raised an error"),
    ('hs = {status = tostring(math.floor(1))} return hs', "raised an error"),
    ('for i = 1, 2 do goto done end ::done:: return {status = "Healthy"}', "cannot load"),
    ('return {status = "Fine"}', "invalid status"),
    ('hs = {status = "Healthy"}', "returned nil"),
], ids=["string-library", "string-method", "math-library", "lua-5.2-goto", "invalid-status", "no-return"])
def test_the_runner_refuses_what_argocd_would(body, error, tmp_path):
    """The wrapper is as strict as Argo CD: a script relying on the string or math library, on
    Lua 5.2 syntax, or returning something Argo CD rejects, fails here too."""
    bad = tmp_path / "bad.lua"
    bad.write_text(body + "\n")
    with pytest.raises(HealthScriptError, match=error):
        run_health(bad, td(), tmp_path)
