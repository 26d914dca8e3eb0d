"""PyTorchJob status as the Training Operator v1.9 writes it, TrainJob status as Trainer v2.3
writes it (UPSTREAM.md 2.3 and 3; kubeflow/training-operator pkg/controller.v1/common/status.go
and pkg/util/status.go, kubeflow/trainer pkg/runtime/framework/plugins/jobset/jobset.go).

Pure: each function returns the whole `status` for the replica counts it is given.
"""

from __future__ import annotations

import datetime as dt

PYTORCHJOB_SELECTOR = ("training.kubeflow.org/job-name={job},training.kubeflow.org/operator-name="
                       "pytorchjob-controller,training.kubeflow.org/replica-type={replica}")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: str, reason: str, message: str, at: str) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": at, "lastTransitionTime": at}


def pytorchjob(name: str, outcome: str, replicas: dict[str, dict[str, int]], *, started: str,
               finished: str | None = None, failed_replicas: tuple[str, int] | None = None) -> dict:
    """`outcome` is Created, Running, Succeeded or Failed; `replicas` maps Master/Worker to their
    active/succeeded/failed counts. The setter's order: Created, then Running (turned False in
    place on the end), then the end condition appended."""
    at = finished or started
    conditions = [_condition("Created", "True", "PyTorchJobCreated", f"PyTorchJob {name} is created.", started)]
    if outcome != "Created":
        running = outcome == "Running"
        conditions.append(_condition("Running", "True" if running else "False", "PyTorchJobRunning",
                                     f"PyTorchJob {name} is running.", started))
    if outcome == "Succeeded":
        conditions.append(_condition("Succeeded", "True", "PyTorchJobSucceeded",
                                     f"PyTorchJob {name} is successfully completed.", at))
    elif outcome == "Failed":
        kind, count = failed_replicas or ("Master", 1)
        conditions.append(_condition("Failed", "True", "PyTorchJobFailed",
                                     f"PyTorchJob {name} is failed because {count} {kind} replica(s) failed.", at))
    status: dict = {"startTime": started, "conditions": conditions,
                    "replicaStatuses": {
                        kind: {**counts, "selector": PYTORCHJOB_SELECTOR.format(job=name, replica=kind.lower())}
                        for kind, counts in replicas.items()}}
    if outcome in ("Succeeded", "Failed"):
        status["completionTime"] = at
    return status


def trainjob(outcome: str, jobs: dict[str, dict[str, int]], *, at: str) -> dict:
    """`outcome` is Running (no condition: Trainer has no Running condition), Complete or Failed;
    `jobs` maps each replicated job (e.g. `node`) to its counts; all six counts are required."""
    conditions = []
    if outcome == "Complete":
        conditions.append({"type": "Complete", "status": "True", "reason": "AllJobsCompleted",
                           "message": "jobset completed successfully", "lastTransitionTime": at})
    elif outcome == "Failed":
        conditions.append({"type": "Failed", "status": "True", "reason": "FailedJobs",
                           "message": "jobset failed", "lastTransitionTime": at})
    counts = ("ready", "succeeded", "failed", "active", "suspended")
    return {"conditions": conditions,
            "jobsStatus": [{"name": job, **{key: values.get(key, 0) for key in counts}}
                           for job, values in jobs.items()]}
