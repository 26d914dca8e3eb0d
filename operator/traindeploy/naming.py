"""Deterministic child names, the labels that find a TrainDeploy's children, owner references.

Children are named from the TrainDeploy and the training cycle's generation, never with
generateName: an operator restarted at any moment finds what it created instead of creating it
twice. Names are cut to each kind's limit with a short hash of the full name, so two long
TrainDeploy names never collide.
"""

from __future__ import annotations

import hashlib
import re

from traindeploy import GROUP, KIND, VERSION
from traindeploy.children.katib import MAX_NAME_LENGTH as EXPERIMENT_NAME_MAX

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "traindeploy"
LABEL_NAME = "traindeploy.io/name"
LABEL_CYCLE = "traindeploy.io/cycle"
LABEL_STAGE = "traindeploy.io/stage"
# On training jobs and Experiments: the training spec their cycle trains, so a lost status can
# tell whether that cycle is still the one the spec asks for.
ANNOTATION_SPEC_HASH = "traindeploy.io/spec-hash"
# ... and the retrain token already acted on when their cycle started.
ANNOTATION_RETRAIN_TOKEN = "traindeploy.io/retrain-token"
# On InferenceServices: the model version the object was last written for.
ANNOTATION_MODEL_VERSION = "traindeploy.io/model-version"

# Pods and Services of a PyTorchJob are "<job>-worker-<index>", and Services are DNS labels (63).
JOB_NAME_MAX = 48
# KServe derives "<isvc>-predictor-<namespace>" host names from the InferenceService name.
INFERENCESERVICE_NAME_MAX = 45


def dns_label(name: str, suffix: str, max_length: int) -> str:
    """`<name>-<suffix>` as an RFC 1035 label of at most `max_length` characters.

    TrainDeploy names are DNS subdomains (dots, a leading digit, up to 253 characters); when the
    name must be altered to fit, a hash of the original keeps distinct names distinct.
    """
    base = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not base[:1].isalpha():
        base = f"td-{base}"
    tail = f"-{suffix}" if suffix else ""
    if base == name and len(base) + len(tail) <= max_length:
        return base + tail
    tail = f"-{hashlib.sha256(name.encode()).hexdigest()[:6]}{tail}"
    return base[: max_length - len(tail)].rstrip("-") + tail


# `cycle` is the training cycle's label: g3 for the cycle of generation 3, g3r1 for its first retrain.

def training_job_name(td_name: str, cycle: str) -> str:
    return dns_label(td_name, f"{cycle}-train", JOB_NAME_MAX)


def experiment_name(td_name: str, cycle: str) -> str:
    return dns_label(td_name, f"{cycle}-tune", EXPERIMENT_NAME_MAX)


def inference_service_name(td_name: str) -> str:
    return dns_label(td_name, "", INFERENCESERVICE_NAME_MAX)


def canary_inference_service_name(td_name: str) -> str:
    """The second InferenceService of a Standard-mode canary."""
    return dns_label(td_name, "canary", INFERENCESERVICE_NAME_MAX)


def http_route_name(td_name: str) -> str:
    return dns_label(td_name, "", INFERENCESERVICE_NAME_MAX)


def pipeline_run_name(namespace: str, td_name: str, cycle: str, uid: str) -> str:
    """KFP display names are free text; this one is unique per TrainDeploy and cycle, and finds a
    run again before one is created. The uid keeps a TrainDeploy deleted and created again under
    the same name from adopting the old one's run (KFP runs outlive the TrainDeploy)."""
    return f"traindeploy-{namespace}-{td_name}-{cycle}-{uid}"


def labels(td: dict, cycle: str | None = None, stage: str | None = None) -> dict[str, str]:
    """Labels on every child: one label finds all children of a TrainDeploy."""
    result = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: td["metadata"]["name"]}
    if cycle is not None:
        result[LABEL_CYCLE] = cycle
    if stage is not None:
        result[LABEL_STAGE] = stage
    return result


def owner_reference(td: dict) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": td["metadata"]["name"],
        "uid": td["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(td: dict, name: str, cycle: str | None = None, stage: str | None = None,
                   annotations: dict[str, str] | None = None) -> dict:
    meta = {
        "name": name,
        "namespace": td["metadata"]["namespace"],
        "labels": labels(td, cycle, stage),
        "ownerReferences": [owner_reference(td)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def owner_uid(obj: dict) -> str | None:
    """The uid of the TrainDeploy that controls `obj`, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/") and ref.get("controller"):
            return ref.get("uid")
    return None


def cycle_annotations(cycle: dict) -> dict[str, str]:
    """What a training job or Experiment records of its cycle, for a status rebuilt from the world."""
    annotations = {ANNOTATION_SPEC_HASH: cycle["specHash"]}
    if cycle.get("retrainToken"):
        annotations[ANNOTATION_RETRAIN_TOKEN] = cycle["retrainToken"]
    return annotations
