"""TrainJob (`trainer.kubeflow.org/v1alpha1`, Trainer v2.3.0): builder and status reader.

A TrainJob names a runtime and overrides only the trainer's image, command, args, env, node count
and per-node resources. Pod scheduling (nodeSelector, tolerations, service account) is not part of
`trainer`; v2.3.0 carries it in `runtimePatches`, keyed by the manager that owns the patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, ChildState, condition
from traindeploy.children.pytorchjob import (
    pod_scheduling,
    program,
    resources_with_gpus,
    training_job,
)

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"

DEFAULT_RUNTIME_REF = {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                       "apiGroup": "trainer.kubeflow.org"}
# The trainer's replicated job and container in the Trainer's runtimes (torch-distributed and the
# other built-in ones); Katib's TrainJob trial template names this container as the primary one.
NODE = "node"
# Owner of our entry in `spec.runtimePatches` (a list map keyed by manager).
PATCH_MANAGER = "traindeploy.io/operator"
# The label that marks a runtime's trainer step (pkg/constants/constants.go, v2.0.0 to v2.3.0): the
# Trainer applies `spec.trainer` to the replicated job whose template carries it. It is `node` in
# torch-distributed, `launcher` in deepspeed-distributed (manifests/base/runtimes/).
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
ANCESTOR_TRAINER = "trainer"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
CRD_NAME = f"{PLURAL}.{GROUP}"
# TrainJob spec fields not every Trainer release serves (trainjob_types.go): both came in v2.2.0.
# v2.0/v2.1's apiserver prunes them silently, so they are written only where the CRD has them.
OPTIONAL_FIELDS = ("runtimePatches", "activeDeadlineSeconds")


def trainer_step(runtime: Mapping[str, Any]) -> str:
    """The name of the runtime's trainer step: the replicated job labelled as the trainer
    ancestor; `node` when none is labelled (the name in the Trainer's own runtimes)."""
    jobs = ((((runtime.get("spec") or {}).get("template") or {}).get("spec") or {}).get("replicatedJobs")) or []
    for job in jobs:
        labels = ((job.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(ANCESTOR_LABEL) == ANCESTOR_TRAINER and job.get("name"):
            return job["name"]
    return NODE


def served_fields(crd: Mapping[str, Any]) -> frozenset[str]:
    """The `spec` fields the served TrainJob version's schema has (of OPTIONAL_FIELDS)."""
    for version in (crd.get("spec") or {}).get("versions") or []:
        if version.get("name") == VERSION and version.get("served"):
            spec = ((((version.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {})
                    .get("spec") or {})
            return frozenset(field for field in OPTIONAL_FIELDS if field in (spec.get("properties") or {}))
    return frozenset()


def needed_fields(training: Mapping[str, Any]) -> dict[str, str]:
    """TrainJob spec fields the training spec needs, with the TrainDeploy field that needs each."""
    needed = {}
    if training.get("activeDeadlineSeconds") is not None:
        needed["activeDeadlineSeconds"] = "spec.training.activeDeadlineSeconds"
    if pod_scheduling(training):
        needed["runtimePatches"] = "spec.training (nodeSelector, tolerations, serviceAccountName)"
    return needed


def runtime_ref(training: Mapping[str, Any]) -> dict:
    """`training.runtimeRef` with the design's defaults filled in."""
    given = training.get("runtimeRef") or {}
    return {key: given.get(key) or default for key, default in DEFAULT_RUNTIME_REF.items()}


def runtime_patches(training: Mapping[str, Any], step: str = NODE) -> list[dict]:
    """One runtime patch putting nodeSelector, tolerations and serviceAccountName on the pods of the
    trainer step's replicated job; none when the user set none of them."""
    pod_spec = pod_scheduling(training)
    if not pod_spec:
        return []
    job_patch = {"name": step, "template": {"spec": {"template": {"spec": pod_spec}}}}
    return [{"manager": PATCH_MANAGER,
             "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job_patch]}}}}]


def job_spec(training: dict, *, env: list[dict], args: list[str], gpu_resource: str, step: str = NODE,
             fields: frozenset[str] = frozenset(OPTIONAL_FIELDS)) -> dict:
    """The TrainJob `spec`; also the Katib trial template when tuning with this backend. `step` is
    the runtime's trainer step; `fields` the optional spec fields the served CRD has (a field it
    lacks is left out: the stage refuses a spec that needs one first)."""
    trainer: dict[str, Any] = program(training, env=env, args=args)
    trainer["numNodes"] = 1 + int(training.get("workers") or 0)
    resources = resources_with_gpus(training.get("resources"), training.get("gpus") or 0, gpu_resource)
    if resources:
        trainer["resourcesPerNode"] = resources

    spec: dict[str, Any] = {"runtimeRef": runtime_ref(training), "trainer": trainer}
    if training.get("activeDeadlineSeconds") is not None and "activeDeadlineSeconds" in fields:
        spec["activeDeadlineSeconds"] = int(training["activeDeadlineSeconds"])
    patches = runtime_patches(training, step)
    if patches and "runtimePatches" in fields:
        spec["runtimePatches"] = patches
    return spec


def build(meta: dict, training: dict, *, env: list[dict], hyperparameters: dict[str, str],
          gpu_resource: str, **options: Any) -> dict:
    """The whole TrainJob for one training cycle; `options` are job_spec's `step` and `fields`."""
    return training_job(API_VERSION, KIND, job_spec, meta, training, env=env, hyperparameters=hyperparameters,
                        gpu_resource=gpu_resource, **options)


def read(obj: dict) -> ChildState:
    """Where the TrainJob stands.

    Its conditions are metav1 conditions updated in place, so order means nothing: Failed or
    Complete True end it, Suspended True is a pause. There is no Running condition; the JobSet's
    child Jobs in `jobsStatus` tell whether anything has started.
    """
    for kind, phase in (("Failed", FAILED), ("Complete", SUCCEEDED), ("Suspended", RUNNING)):
        found = condition(obj, kind)
        if found is not None and found.get("status") == "True":
            return ChildState(phase, found.get("reason") or "", found.get("message") or "")
    jobs = (obj.get("status") or {}).get("jobsStatus") or []
    if any(job.get(count) for job in jobs for count in ("active", "ready", "succeeded", "failed")):
        return ChildState(RUNNING)
    return ChildState(PENDING)


def awaiting_pods(obj: dict) -> bool:
    """Whether the JobSet's Jobs exist but none of their pods has run: a Job counts ready,
    succeeded and failed pods (`active` counts Pending ones too), and the TrainJob has not ended."""
    status = obj.get("status") or {}
    jobs = status.get("jobsStatus") or []
    if not jobs or any(item.get("status") == "True" for item in status.get("conditions") or []):
        return False
    return not any(job.get(count) for job in jobs for count in ("ready", "succeeded", "failed"))


# The label JobSet puts on every pod of its Jobs (JobSet's pkg/constants).
POD_JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"


def pod_selector(name: str) -> str:
    """Every pod of TrainJob `name`: Trainer names the JobSet after the TrainJob."""
    return f"{POD_JOBSET_LABEL}={name}"
