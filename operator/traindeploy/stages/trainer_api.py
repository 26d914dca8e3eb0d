"""What the cluster's Kubeflow Trainer offers a TrainJob, for the training and tuning stages (a
tuned TrainJob is the trial template): the referenced runtime's trainer step, and which optional
spec fields the served TrainJob CRD has (v2.0/v2.1 have neither `runtimePatches` nor
`activeDeadlineSeconds`, and their apiserver drops them silently)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traindeploy.children import trainjob
from traindeploy.context import Pass
from traindeploy.kube import Kind
from traindeploy.results import Blocked, Problem

RUNTIMES = {
    "ClusterTrainingRuntime": Kind(trainjob.GROUP, trainjob.VERSION, "clustertrainingruntimes",
                                   "ClusterTrainingRuntime"),
    "TrainingRuntime": Kind(trainjob.GROUP, trainjob.VERSION, "trainingruntimes", "TrainingRuntime"),
}
_SERVED_KEY = "trainjob-fields"


def served_fields(p: Pass) -> frozenset[str]:
    """The optional TrainJob spec fields the cluster serves, read from the CRD once per process.
    A missing CRD is not remembered: it may be installed later."""
    if _SERVED_KEY not in p.env.served:
        crd = p.kube(lambda: p.env.kube.crd(trainjob.CRD_NAME))
        if crd is None:
            raise Problem(Blocked("ChildKindNotInstalled", f"spec.training.backend: TrainJob needs the "
                                  f"CustomResourceDefinition {trainjob.CRD_NAME}; is Kubeflow Trainer installed?"))
        p.env.served[_SERVED_KEY] = trainjob.served_fields(crd)
    return p.env.served[_SERVED_KEY]


def job_options(p: Pass, training: Mapping[str, Any]) -> dict[str, Any]:
    """`step` and `fields` for `trainjob.job_spec`; nothing for another backend. Holds the cycle
    (Blocked) when the spec needs a field the served CRD lacks, or the runtime does not exist:
    both can be fixed on the cluster, and the next pass goes on by itself."""
    if (training.get("backend") or "PyTorchJob") != "TrainJob":
        return {}
    fields = served_fields(p)
    missing = {field: why for field, why in trainjob.needed_fields(training).items() if field not in fields}
    if missing:
        # Read the CRD again on the next try: the Trainer may have been upgraded meanwhile.
        p.env.served.pop(_SERVED_KEY, None)
        said = "; ".join(f"{why} needs TrainJob spec.{field}" for field, why in sorted(missing.items()))
        raise Problem(Blocked("TrainerCapabilityMissing",
                              f"{said}, which the cluster's TrainJob CRD does not have (Kubeflow Trainer "
                              "v2.2 or later has it); upgrade the Trainer or remove the field."))
    ref = trainjob.runtime_ref(training)
    kind = RUNTIMES[ref["kind"]]  # the CRD's enum admits only these two
    if ref["kind"] == "ClusterTrainingRuntime":
        runtime = p.kube(lambda: p.env.kube.get_cluster(kind, ref["name"]))
    else:
        runtime = p.kube(lambda: p.env.kube.get(kind, p.namespace, ref["name"]))
    if runtime is None:
        where = "" if ref["kind"] == "ClusterTrainingRuntime" else f" in namespace {p.namespace}"
        raise Problem(Blocked("TrainingRuntimeNotFound", f"spec.training.runtimeRef: {ref['kind']} {ref['name']}"
                              f"{where} does not exist."))
    return {"step": trainjob.trainer_step(runtime), "fields": fields}
