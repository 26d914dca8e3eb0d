"""PyTorchJob (`kubeflow.org/v1`, Training Operator v1.9.4): builder and status reader.

The small helpers for env, args and resources live here too because every training backend (and
the Katib trial template) must turn a TrainDeploy's `training` block into a container the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, ChildState

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
GROUP = "kubeflow.org"
VERSION = "v1"
PLURAL = "pytorchjobs"

# The Training Operator's validating webhook requires a container of exactly this name in every
# replica; Katib's trial template names it as the primary container.
CONTAINER_NAME = "pytorch"
DEFAULT_RESTART_POLICY = "OnFailure"
DEFAULT_CLEAN_POD_POLICY = "Running"

# Conditions that say where the job stands; `Created` alone means the controller has seen it.
_TERMINAL = {"Succeeded": SUCCEEDED, "Failed": FAILED}
_ACTIVE = ("Suspended", "Restarting", "Running", "Created")


# --- helpers shared by the training backends -------------------------------------------------


def merge_env(user: list[dict] | None, injected: list[dict]) -> list[dict]:
    """The user's env followed by the operator's; an injected name wins over a user entry of the
    same name (the user's is dropped), so the operator's MLflow settings cannot be shadowed."""
    injected_names = {item["name"] for item in injected}
    kept = [copy.deepcopy(item) for item in user or [] if item.get("name") not in injected_names]
    return kept + [copy.deepcopy(item) for item in injected]


def hyperparameter_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """`--name=value` per hyperparameter, sorted by name so the child spec is stable across
    reconciles (a dict's order would otherwise leak into the object and cause spurious updates)."""
    return [f"--{name}={hyperparameters[name]}" for name in sorted(hyperparameters)]


def training_args(training: Mapping[str, Any], hyperparameters: Mapping[str, Any]) -> list[str]:
    """The user's args, then the hyperparameters."""
    return [str(arg) for arg in training.get("args") or []] + hyperparameter_args(hyperparameters)


def resources_with_gpus(resources: Mapping[str, Any] | None, gpus: int, gpu_resource: str) -> dict:
    """The user's requests/limits plus `limits[gpu_resource] = gpus` when gpus > 0.

    Extended resources may not be overcommitted, so a request for the GPU resource the user also
    wrote is aligned with the limit; everything else is kept as written.
    """
    merged: dict[str, Any] = copy.deepcopy(dict(resources or {}))
    if gpus and gpus > 0:
        merged["limits"] = {**(merged.get("limits") or {}), gpu_resource: int(gpus)}
        if gpu_resource in (merged.get("requests") or {}):
            merged["requests"][gpu_resource] = int(gpus)
    return {key: value for key, value in merged.items() if value}


def program(training: Mapping[str, Any], *, env: list[dict], args: list[str]) -> dict[str, Any]:
    """What runs: image, command, args and env, as PyTorchJob containers and TrainJob's trainer
    both spell them. Empty fields are left out so the stored object equals the sent one."""
    built: dict[str, Any] = {"image": training["image"]}
    if training.get("command"):
        built["command"] = [str(part) for part in training["command"]]
    if args:
        built["args"] = list(args)
    merged_env = merge_env(training.get("env"), env)
    if merged_env:
        built["env"] = merged_env
    return built


def container(training: Mapping[str, Any], *, name: str, env: list[dict], args: list[str],
              gpu_resource: str) -> dict:
    """The training container."""
    built: dict[str, Any] = {"name": name, **program(training, env=env, args=args)}
    resources = resources_with_gpus(training.get("resources"), training.get("gpus") or 0, gpu_resource)
    if resources:
        built["resources"] = resources
    return built


def pod_scheduling(training: Mapping[str, Any]) -> dict:
    """nodeSelector, tolerations and serviceAccountName as pod spec fields, only those given."""
    fields: dict[str, Any] = {}
    if training.get("nodeSelector"):
        fields["nodeSelector"] = dict(training["nodeSelector"])
    if training.get("tolerations"):
        fields["tolerations"] = copy.deepcopy(list(training["tolerations"]))
    if training.get("serviceAccountName"):
        fields["serviceAccountName"] = training["serviceAccountName"]
    return fields


def copy_meta(meta: Mapping[str, Any]) -> dict:
    """The caller's metadata, deep-copied so later edits of the child never reach the caller."""
    return copy.deepcopy(dict(meta))


# --- builder ----------------------------------------------------------------------------------


def job_spec(training: Mapping[str, Any], *, env: list[dict], args: list[str], gpu_resource: str) -> dict:
    """The PyTorchJob `spec`: Master 1 plus Worker `workers` (left out when 0), the same pod on
    each. Reused verbatim as the Katib trial template, where `args` carry the trial placeholders."""
    restart_policy = training.get("restartPolicy") or DEFAULT_RESTART_POLICY
    workers = int(training.get("workers") or 0)

    def replica(replicas: int) -> dict:
        pod_spec = {"containers": [container(training, name=CONTAINER_NAME, env=env, args=args,
                                             gpu_resource=gpu_resource)],
                    **pod_scheduling(training)}
        return {"replicas": replicas, "restartPolicy": restart_policy, "template": {"spec": pod_spec}}

    replica_specs = {"Master": replica(1)}
    if workers > 0:
        replica_specs["Worker"] = replica(workers)
    spec: dict[str, Any] = {"pytorchReplicaSpecs": replica_specs}

    # The Training Operator defaults cleanPodPolicy to None (pkg/apis/kubeflow.org/v1/pytorch_defaults.go):
    # Workers would keep running, and keep their GPUs, after the Master failed.
    run_policy: dict[str, Any] = {"cleanPodPolicy": training.get("cleanPodPolicy") or DEFAULT_CLEAN_POD_POLICY}
    if training.get("backoffLimit") is not None:
        run_policy["backoffLimit"] = int(training["backoffLimit"])
    if training.get("activeDeadlineSeconds") is not None:
        run_policy["activeDeadlineSeconds"] = int(training["activeDeadlineSeconds"])
    spec["runPolicy"] = run_policy
    return spec


def training_job(api_version: str, kind: str, spec_builder, meta: dict, training: dict, *, env: list[dict],
                 hyperparameters: dict[str, str], gpu_resource: str, **options: Any) -> dict:
    """A whole training job object (PyTorchJob or TrainJob) from its kind's `job_spec`; `options`
    go to the kind's `job_spec` (the TrainJob's trainer step and served fields)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": copy_meta(meta),
        "spec": spec_builder(training, env=env, args=training_args(training, hyperparameters),
                             gpu_resource=gpu_resource, **options),
    }


def build(meta: dict, training: dict, *, env: list[dict], hyperparameters: dict[str, str],
          gpu_resource: str) -> dict:
    """The whole PyTorchJob for one training cycle."""
    return training_job(API_VERSION, KIND, job_spec, meta, training, env=env, hyperparameters=hyperparameters,
                        gpu_resource=gpu_resource)


# --- reader -----------------------------------------------------------------------------------


def read(obj: dict) -> ChildState:
    """Where the job stands, from its last True condition.

    The Training Operator appends a condition when it changes and turns `Running` False when the
    job ends, so the last True condition is the current state: Succeeded/Failed end the job;
    Suspended, Restarting, Running or Created mean it is under way; no condition yet is Pending.
    """
    status = obj.get("status") or {}
    outputs = {key: status[key] for key in ("startTime", "completionTime") if status.get(key)}
    for item in reversed(status.get("conditions") or []):
        if item.get("status") != "True":
            continue
        kind = item.get("type")
        if kind in _TERMINAL:
            return ChildState(_TERMINAL[kind], item.get("reason") or "", item.get("message") or "", outputs)
        if kind in _ACTIVE:
            return ChildState(RUNNING, item.get("reason") or "", item.get("message") or "", outputs)
    return ChildState(PENDING, outputs=outputs)


def awaiting_pods(obj: dict) -> bool:
    """Whether the job's pods exist but have not run: the controller sets Created once it made
    them and Running once every pod runs, so Created alone means some pod is Pending (not yet
    placed, or pulling its image)."""
    true = [item.get("type") for item in (obj.get("status") or {}).get("conditions") or []
            if item.get("status") == "True"]
    return true == ["Created"]


# The label the Training Operator puts on every pod of a job (UPSTREAM.md 2.1).
POD_JOB_LABEL = "training.kubeflow.org/job-name"


def pod_selector(name: str) -> str:
    """Every pod of job `name`."""
    return f"{POD_JOB_LABEL}={name}"
