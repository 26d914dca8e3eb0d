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


def trainjob(outcome: str, pods: dict[str, dict[str, int]], *, at: str, name: str) -> dict:
    """`outcome` is Running, Complete or Failed; `pods` maps each replicated job (e.g. `node`) to
    its pods' counts (active, ready, succeeded, failed); `name` is the TrainJob's (and so its
    JobSet's). As Trainer v2.3.0 writes it over JobSet v0.12.0:

    - Trainer has no Running condition and leaves `conditions` out while there is none
      (kubeflow/trainer pkg/apis/trainer/v1alpha1/trainjob_types.go, `omitempty`); Complete and
      Failed are the JobSet's Completed and Failed conditions under Trainer's types
      (pkg/runtime/framework/plugins/jobset/jobset.go), with the JobSet's reason and message
      (jobset pkg/constants/constants.go; the first failed Job is named in the message,
      pkg/controllers/failure_policy.go).
    - `jobsStatus` counts child Jobs, not pods (jobset pkg/controllers/jobset_controller.go,
      calculateReplicatedJobStatuses): each replicated job of Trainer's runtimes is one Job,
      `<trainjob>-<replicated job>-0`, active while a pod is active and ready once every pod is
      ready or done. All six counts are required.
    """
    conditions = []
    if outcome == "Complete":
        conditions.append({"type": "Complete", "status": "True", "reason": "AllJobsCompleted",
                           "message": "jobset completed successfully", "lastTransitionTime": at})
    elif outcome == "Failed":
        first = next((job for job, counts in pods.items() if counts.get("failed")), next(iter(pods), "node"))
        conditions.append({"type": "Failed", "status": "True", "reason": "FailedJobs",
                           "message": f"jobset failed due to one or more job failures (first failed job: "
                                      f"{name}-{first}-0)", "lastTransitionTime": at})
    status: dict = {"conditions": conditions} if conditions else {}
    status["jobsStatus"] = [{"name": job, **_job_counts(outcome, counts)} for job, counts in pods.items()]
    return status


def _job_counts(outcome: str, pods: dict[str, int]) -> dict[str, int]:
    """One Job's place in JobSet's counts, from its pods' counts."""
    counts = dict.fromkeys(("ready", "succeeded", "failed", "active", "suspended"), 0)
    if outcome == "Complete":
        counts["succeeded"] = 1
    elif outcome == "Failed":
        counts["failed"] = 1 if pods.get("failed") else 0
    else:
        counts["active"] = 1 if pods.get("active") else 0
        done = pods.get("ready", 0) + pods.get("succeeded", 0)
        counts["ready"] = 1 if done and done >= pods.get("active", 0) + pods.get("succeeded", 0) else 0
    return counts
