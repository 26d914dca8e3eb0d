"""The serving objects and the traffic between versions, in KServe's two deployment modes.

- Knative mode: one InferenceService; KServe splits traffic by `canaryTrafficPercent` between the
  latest revision and the last rolled-out one and reports it in
  `status.components.predictor.traffic`. Promotion sets 100, rollback sets 0 (UPSTREAM.md 4.5).
- Standard mode: KServe does not weight traffic, so the canary version runs as a second
  InferenceService and a TrainDeploy-owned HTTPRoute weights the two predictor Services.
"""

from __future__ import annotations

from typing import NamedTuple

from traindeploy import naming
from traindeploy.children import FAILED, SUCCEEDED, ChildState, httproute, inferenceservice
from traindeploy.kube import Kind
from traindeploy.results import Problem, invalid
from traindeploy.serving.state import INFERENCESERVICE, KNATIVE, Serving

HTTPROUTE = Kind(httproute.GROUP, httproute.VERSION, httproute.PLURAL, httproute.KIND)
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")


def ensure_isvc(s: Serving, name: str, version: str, storage: str, canary_percent: int | None = None) -> dict:
    p = s.p
    meta = naming.child_metadata(p.td, name, stage="serving", annotations={naming.ANNOTATION_MODEL_VERSION: str(version)})
    desired = inferenceservice.build(meta, s.spec, storage_uri=storage, gpu_resource=p.env.config.gpu_resource,
                                     deployment_mode=s.mode_annotation(),
                                     served_model_name=s.name if name != s.name else None,
                                     # Knative: each revision its own URL, so analysis probes the canary.
                                     tag_routing=s.mode == KNATIVE and name == s.name
                                     and s.spec.get("canary") is not None)
    if canary_percent is not None:
        desired["spec"]["predictor"]["canaryTrafficPercent"] = canary_percent
    isvc, action = p.kube(lambda: p.env.kube.ensure(INFERENCESERVICE, desired, owned=("spec",)))
    left = isvc["spec"]["predictor"].get("canaryTrafficPercent")
    if canary_percent is None and left is not None and left < 100:
        # A merge patch keeps a field it does not name: a rollback's 0 left behind would send no
        # traffic to what this object serves now. None removes it (null in the merge patch).
        desired["spec"]["predictor"]["canaryTrafficPercent"] = None
        isvc, _ = p.kube(lambda: p.env.kube.ensure(INFERENCESERVICE, desired, owned=("spec",)))
    p.created(INFERENCESERVICE, name, action)
    if name == s.name:
        s.stable = isvc
        if s.mode is None:  # created just now: KServe's webhook has admitted it
            s.mode = inferenceservice.resolved_mode(isvc)
    if action != "unchanged" and s.mode == KNATIVE and name == s.name:
        _remember_replaced_revision(s, storage, isvc)
    return isvc


def _remember_replaced_revision(s: Serving, storage: str, written: dict) -> None:
    """The revision that was latest when `storage` was first written: the object a patch returns
    still carries the status from before the patch, so its latest revision is the old spec's."""
    if (s.serving.get("replacedRevision") or {}).get("storageUri") == storage:
        return
    before = inferenceservice.predictor(written).get("latestCreatedRevision") or ""
    s.serving["replacedRevision"] = {"storageUri": storage, "revision": before}


def _replaced_revision(s: Serving, storage: str) -> str | None:
    replaced = s.serving.get("replacedRevision") or {}
    return replaced.get("revision") if replaced.get("storageUri") == storage else None


def serves(s: Serving, name: str, isvc: dict, storage: str) -> tuple[bool, str]:
    """Whether InferenceService `name` serves `storage` now, and why not. Its Ready alone can be
    the previous version's: established from the revision (Knative) or the Deployment (Standard)."""
    state = inferenceservice.read(isvc)
    if state.phase != SUCCEEDED:
        return False, state.message or state.reason or state.phase
    if s.mode is None:
        return False, "KServe has not reported the deployment mode it uses yet"
    if s.mode == KNATIVE:
        return inferenceservice.revision_serves(isvc, _replaced_revision(s, storage))
    p = s.p
    deployment = p.kube(lambda: p.env.kube.get(DEPLOYMENT, p.namespace, inferenceservice.predictor_deployment_name(name)))
    return inferenceservice.deployment_serves(deployment, storage)


def ensure_route(s: Serving, canary_name: str | None, weight: int) -> None:
    p = s.p
    gateway = s.spec.get("gateway") or p.env.config.gateway()
    if not gateway:
        raise Problem(invalid("spec.serving.gateway", "Standard mode canaries need a Gateway: set "
                                                      "spec.serving.gateway or the operator's TRAINDEPLOY_GATEWAY."))
    gateway = {**gateway, "namespace": gateway.get("namespace") or p.namespace}
    name = naming.http_route_name(p.name)
    meta = naming.child_metadata(p.td, name, stage="serving")
    desired = httproute.build(meta, gateway=gateway, hostnames=s.spec.get("hostnames") or [],
                              stable_service=httproute.predictor_service(s.name),
                              canary_service=httproute.predictor_service(canary_name) if canary_name else None,
                              canary_weight=weight)
    _, action = p.kube(lambda: p.env.kube.ensure(HTTPROUTE, desired, owned=("spec",)))
    p.created(HTTPROUTE, name, action)


def set_stable(s: Serving, version: str, storage: str, wait: bool = True) -> tuple[bool, str]:
    """All traffic to `version` on the stable InferenceService; the canary objects go. In Standard
    mode, with `wait`, the route and the canary stay until the stable variant serves `version`
    (a promotion); without it (a rollback) they go at once. Returns (done, why not)."""
    if s.mode == KNATIVE:
        ensure_isvc(s, s.name, version, storage, canary_percent=100)
        return True, ""
    isvc = ensure_isvc(s, s.name, version, storage)
    if wait:
        ready, message = serves(s, s.name, isvc, storage)
        if not ready:
            return False, message
    if s.spec.get("canary") is not None or any(c.get("kind") == HTTPROUTE.kind for c in s.p.status.get("children", [])):
        ensure_route(s, None, 0)
    s.p.kube(lambda: s.p.env.kube.delete(INFERENCESERVICE, s.p.namespace, s.canary_name))
    s.p.forget_child(INFERENCESERVICE, s.canary_name)
    return True, ""


class CanaryState(NamedTuple):
    ready: bool
    failed: bool        # the canary's own revision or Deployment failed to load: waiting cannot help
    url: str | None
    message: str


def apply_weight(s: Serving, version: str, storage: str, stable: str, weight: int) -> CanaryState:
    """Puts `weight` percent on the canary; returns where the canary stands."""
    if s.mode == KNATIVE:
        isvc = ensure_isvc(s, s.name, version, storage, canary_percent=weight)
        replaced = _replaced_revision(s, storage)
        ready, url, message = knative_canary_state(isvc, weight, replaced)
        # A failure counts only once it is the canary's: a revision other than the one it replaced
        # (the object a patch returns may still carry the status of an earlier version).
        created = inferenceservice.predictor(isvc).get("latestCreatedRevision")
        failed = not ready and replaced is not None and created not in (None, replaced) and \
            inferenceservice.read(isvc).phase == FAILED
    else:
        ensure_isvc(s, s.name, stable, s.serving["storageUri"])
        isvc = ensure_isvc(s, s.canary_name, version, storage)
        ensure_route(s, s.canary_name, weight)
        ready, message = serves(s, s.canary_name, isvc, storage)
        # In-cluster, the canary InferenceService alone; its predictor URL is the ingress host.
        url = inferenceservice.cluster_address(isvc)
        failed = not ready and inferenceservice.read(isvc).phase == FAILED  # a canary of its own
    s.serving["traffic"] = f"v{stable} {100 - weight}%, v{version} {weight}%"
    return CanaryState(ready, failed, url, message)


def knative_fully_promoted(isvc: dict) -> bool:
    found = inferenceservice.traffic(isvc)
    return len(found) == 1 and bool(found[0].get("latestRevision")) and found[0].get("percent") == 100


def canary_predictor(s: Serving) -> str:
    """What Prometheus queries name as `${canary}`: in Knative mode the canary's own revision
    (Knative labels its metrics `revision_name`; the predictor Service is both revisions'), in
    Standard mode the canary InferenceService's predictor Service."""
    if s.mode == KNATIVE:
        # Analysis runs once the canary is ready: the latest created revision is the canary's.
        revision = inferenceservice.predictor(s.stable or {}).get("latestCreatedRevision")
        return revision or f"{s.name}-predictor"
    return httproute.predictor_service(s.canary_name)


def observe(s: Serving, state: ChildState) -> None:
    s.serving.update({"inferenceServiceName": s.name, "ready": state.phase == SUCCEEDED})
    if state.outputs.get("url"):
        s.serving["url"] = state.outputs["url"]


def knative_canary_state(isvc: dict, weight: int, replaced_revision: str | None) -> tuple[bool, str | None, str]:
    """Ready when the canary's revision (not the one it replaced) is ready and KServe reports the
    weight on it."""
    state = inferenceservice.read(isvc)
    latest = next((t for t in inferenceservice.traffic(isvc) if t.get("latestRevision")), None)
    if state.phase != SUCCEEDED:
        return False, None, state.message or state.reason or state.phase
    revision_ready, message = inferenceservice.revision_serves(isvc, replaced_revision)
    if not revision_ready:
        return False, None, message
    if latest is None or latest.get("percent") != weight:
        return False, None, f"KServe does not report {weight}% on the latest revision yet"
    # The canary revision's own URL (tag routing); the service URL would probe the split.
    url = inferenceservice.latest_tagged_url(isvc)
    if url is None:
        return False, None, "KServe has not given the latest revision a tagged URL yet (enable-tag-routing)"
    return True, url, "ready"
