"""KServe InferenceService (`serving.kserve.io/v1beta1`, KServe v0.20.0): builder and status reader.

The predictor serves the registered model from its storage URI with the `model` spec (format,
protocol, optional runtime). Canary traffic is not set here; a rollout adds it on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, ChildState, condition
from traindeploy.children.pytorchjob import copy_meta, resources_with_gpus

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DEPLOYMENT_MODES = ("Knative", "Standard")
# KServe v0.15 knows only the legacy annotation values and falls back to its default for any other
# (GetDeploymentMode, pkg/controller/v1beta1/inferenceservice/utils/utils.go @ v0.15.0); v0.16 and
# later accept both and their defaulting webhook rewrites the legacy ones to the new names
# (inference_service_defaults.go @ v0.20.0). See mode_annotation.
LEGACY_MODE_VALUES = {"Knative": "Serverless", "Standard": "RawDeployment"}
MODE_VALUES = DEPLOYMENT_MODES + tuple(LEGACY_MODE_VALUES.values())


def normal_mode(value: str | None) -> str | None:
    """Knative or Standard for any name KServe gives them; None for anything else (ModelMesh)."""
    for mode, legacy in LEGACY_MODE_VALUES.items():
        if value in (mode, legacy):
            return mode
    return None


def resolved_mode(obj: dict | None) -> str | None:
    """The deployment mode KServe uses for an InferenceService: `status.deploymentMode` (written
    from v0.16), else the annotation (KServe's defaulting webhook writes it when its default is
    Standard/RawDeployment, v0.15 to v0.20), else Knative, the mode of an admitted object that
    carries neither. None for an object that does not exist yet."""
    if obj is None:
        return None
    status_mode = (obj.get("status") or {}).get("deploymentMode")
    if status_mode:
        return normal_mode(status_mode)
    annotation = (obj["metadata"].get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    if annotation:
        return normal_mode(annotation)
    return DEPLOYMENT_MODES[0]


def mode_annotation(mode: str, evidence: dict | None) -> str:
    """The annotation value for `mode` that the cluster's KServe understands and keeps. `evidence`
    is an InferenceService this cluster's KServe admitted (the stable one): a value it holds for
    the same mode is kept as it is (v0.16+ rewrite legacy values, and writing ours back would be a
    patch every pass); one that reports status.deploymentMode in the new names is v0.16 or later
    and takes them. v0.15.2 also reports status.deploymentMode, in the legacy names it alone knows
    (controller.go @ v0.15.2; v0.15.0 reports none), so a legacy name there, or no evidence, gets
    the legacy name, which every version from v0.15 understands."""
    if evidence is not None:
        held = (evidence["metadata"].get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
        if held and normal_mode(held) == mode:
            return held
        if (evidence.get("status") or {}).get("deploymentMode") in DEPLOYMENT_MODES:
            return mode
    return LEGACY_MODE_VALUES[mode]
DEFAULT_MODEL_FORMAT = "mlflow"
# kserve-mlserver, the runtime for mlflow models, speaks only v2; without an explicit protocol
# auto-selection counts the model as v1 and finds no runtime.
DEFAULT_PROTOCOL = "v2"
DEFAULT_MIN_REPLICAS = 1
# modelStatus.transitionStatus values that will not clear without a spec change.
FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")


# KServe's runtime for the mlflow format: MLServer, which serves the model under
# MLSERVER_MODEL_NAME. KServe's defaulter sets it to the InferenceService's name only when it is
# not set (SetMlServerDefaults with AppendEnvVarIfNotExists, v0.15 to v0.20), and KServe's own
# routing reads it too (GetModelName).
MLSERVER_FORMATS = ("mlflow",)
MLSERVER_RUNTIME = "kserve-mlserver"


# Knative mode: KServe tags the traffic targets (`latest`, `prev`) and Knative gives a tagged
# target, and only a tagged one, its own URL, when this annotation is "true"
# (reconcilers/knative/ksvc_reconciler.go @ v0.15.0 to v0.20.0): the canary revision can then be
# probed alone.
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
LATEST_TAG = "latest"


def build(meta: dict, serving: dict, *, storage_uri: str, gpu_resource: str,
          deployment_mode: str | None = None, served_model_name: str | None = None,
          tag_routing: bool = False) -> dict:
    """The whole InferenceService for one model version. `deployment_mode` is the annotation value
    as written (see mode_annotation). `served_model_name` makes MLServer answer under that name
    rather than this object's (a canary answers the stable variant's paths). `tag_routing` asks
    KServe for a URL per revision (a Knative-mode canary)."""
    if not storage_uri:
        raise ValueError("an InferenceService needs a storage URI")
    if deployment_mode is not None and deployment_mode not in MODE_VALUES:
        raise ValueError(f"deployment mode must be one of {MODE_VALUES}, got {deployment_mode!r}")
    metadata = copy_meta(meta)
    if deployment_mode is not None:
        metadata["annotations"] = {**(metadata.get("annotations") or {}),
                                   DEPLOYMENT_MODE_ANNOTATION: deployment_mode}
    if tag_routing:
        metadata["annotations"] = {**(metadata.get("annotations") or {}), TAG_ROUTING_ANNOTATION: "true"}

    given_format = serving.get("modelFormat") or {}
    model_format: dict[str, Any] = {"name": given_format.get("name") or DEFAULT_MODEL_FORMAT}
    if given_format.get("version"):
        model_format["version"] = str(given_format["version"])
    model: dict[str, Any] = {"modelFormat": model_format,
                             "protocolVersion": serving.get("protocolVersion") or DEFAULT_PROTOCOL}
    if serving.get("runtime"):
        model["runtime"] = serving["runtime"]
    model["storageUri"] = storage_uri
    if served_model_name and model_format["name"] in MLSERVER_FORMATS and \
            serving.get("runtime") in (None, MLSERVER_RUNTIME):
        model["env"] = [{"name": "MLSERVER_MODEL_NAME", "value": served_model_name}]
    resources = resources_with_gpus(serving.get("resources"), serving.get("gpus") or 0, gpu_resource)
    if resources:
        model["resources"] = resources

    min_replicas = serving.get("minReplicas")
    predictor: dict[str, Any] = {
        "minReplicas": int(DEFAULT_MIN_REPLICAS if min_replicas is None else min_replicas)}
    if serving.get("maxReplicas") is not None:
        predictor["maxReplicas"] = int(serving["maxReplicas"])
    if serving.get("serviceAccountName"):
        predictor["serviceAccountName"] = serving["serviceAccountName"]
    predictor["model"] = model
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": {"predictor": predictor}}


def _url(status: Mapping[str, Any]) -> str | None:
    return status.get("url") or (status.get("address") or {}).get("url") or None


def predictor(obj: dict) -> dict:
    """`status.components.predictor`: revisions, traffic and the predictor's own URL."""
    return ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}


def traffic(obj: dict) -> list[dict]:
    """The traffic split KServe reports in Knative mode, one entry per revision."""
    return predictor(obj).get("traffic") or []


def latest_tagged_url(obj: dict) -> str | None:
    """The URL of the latest revision's own traffic target (tag `latest`), which only tag routing
    gives it: the canary revision alone, not the split."""
    for target in traffic(obj):
        if target.get("latestRevision") and target.get("tag") == LATEST_TAG:
            return target.get("url") or None
    return None


def cluster_address(obj: dict) -> str | None:
    """`status.address.url`: the in-cluster address of this InferenceService (Standard mode's
    `components.predictor.url` is the ingress host, raw_kube_reconciler.go @ v0.20.0)."""
    return ((obj.get("status") or {}).get("address") or {}).get("url") or None


def predictor_address(obj: dict) -> str | None:
    """Where the predictor answers: its own URL first, else the InferenceService's."""
    return predictor(obj).get("url") or _url(obj.get("status") or {})


# KServe names the predictor's Deployment (Standard mode) "<isvc>-predictor"
# (constants.PredictorServiceName) and writes the storage URI on its pod template, and on the
# Knative revision template, as this annotation, where the storage initializer reads it
# (pkg/controller/v1beta1/inferenceservice/components/predictor.go, v0.15.0 to v0.20.0).
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"


def predictor_deployment_name(name: str) -> str:
    return f"{name}-predictor"


def revision_serves(obj: dict, replaced_revision: str | None) -> tuple[bool, str]:
    """Knative mode: whether the spec last written runs on a ready revision. A spec change makes
    Knative create a revision; until KServe reports one other than `replaced_revision` (the
    latest when that spec was written), Ready is the old revision's."""
    found = predictor(obj)
    created, ready = found.get("latestCreatedRevision"), found.get("latestReadyRevision")
    if not created or created == replaced_revision:
        return False, "KServe has not reported a revision for the new spec yet"
    if ready != created:
        return False, f"revision {created} is not ready yet"
    return True, f"revision {created} is ready"


def deployment_serves(deployment: dict | None, storage_uri: str) -> tuple[bool, str]:
    """Standard mode: whether the predictor Deployment runs `storage_uri` on all its replicas and
    on no other, as `kubectl rollout status` decides that a rollout is complete. KServe keeps
    `PredictorReady` True through a rolling update (UPSTREAM.md errata), so its Ready says nothing
    about which version answers."""
    if deployment is None:
        return False, "KServe has not created the predictor Deployment yet"
    name = deployment["metadata"]["name"]
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    if (template.get("annotations") or {}).get(STORAGE_URI_ANNOTATION) != storage_uri:
        return False, f"Deployment {name} does not run {storage_uri} yet"
    status = deployment.get("status") or {}
    if (status.get("observedGeneration") or 0) < (deployment["metadata"].get("generation") or 0):
        return False, f"Deployment {name} has not observed its new template yet"
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    if updated < wanted:
        return False, f"Deployment {name}: {updated} of {wanted} replicas updated"
    if (status.get("replicas") or 0) > updated:
        return False, f"Deployment {name}: {status['replicas'] - updated} old replicas are pending termination"
    available = status.get("availableReplicas") or 0
    if available < updated:
        return False, f"Deployment {name}: {available} of {updated} updated replicas available"
    return True, f"Deployment {name} runs {storage_uri} on {updated} replicas"


def read(obj: dict, generation: int | None = None) -> ChildState:
    """Where the InferenceService stands.

    `generation` is accepted for symmetry but not compared: KServe copies `status.observedGeneration`
    from the ksvc or Deployment, not from the InferenceService, so it says nothing about whether
    this spec has been seen. The conditions are read as they are.

    A model that failed to load (or has no runtime) is FAILED even while `Ready` is True, because
    then an older revision or ReplicaSet is what answers, not the spec just written.
    """
    status = obj.get("status") or {}
    ready = condition(obj, "Ready")
    is_ready = ready is not None and ready.get("status") == "True"
    outputs = {"url": _url(status), "ready": is_ready, "deploymentMode": status.get("deploymentMode")}

    model_status = status.get("modelStatus") or {}
    if model_status.get("transitionStatus") in FAILED_TRANSITIONS:
        failure = model_status.get("lastFailureInfo") or {}
        return ChildState(FAILED, failure.get("reason") or model_status["transitionStatus"],
                          failure.get("message") or "", outputs)
    if is_ready:
        return ChildState(SUCCEEDED, outputs=outputs)
    if not status.get("conditions"):
        return ChildState(PENDING, outputs=outputs)
    # The predictor's own condition first: in Standard mode Ready copies the first failing
    # dependent, IngressReady ("Predictor ingress not created", no message), while PredictorReady
    # says what holds the pods (MinimumReplicasUnavailable: "Deployment does not have minimum
    # availability.", inference_service_status.go @ v0.20.0); in Knative mode both carry the
    # revision's reason.
    for kind in ("PredictorReady", "Ready"):
        found = condition(obj, kind)
        if found is not None and found.get("status") != "True" and (found.get("reason") or found.get("message")):
            return ChildState(RUNNING, found.get("reason") or "", found.get("message") or "", outputs)
    return ChildState(RUNNING, outputs=outputs)
