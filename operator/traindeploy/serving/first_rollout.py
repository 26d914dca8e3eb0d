"""The first version, and any later one without spec.serving.canary: deploy it on the stable
InferenceService and wait until it is ready; then keep the serving objects as the spec says."""

from __future__ import annotations

from traindeploy.children import FAILED, SUCCEEDED, inferenceservice
from traindeploy.results import Done, Fail, Result
from traindeploy.serving import approvals, history, traffic
from traindeploy.serving.state import DEADLINE_REASON, DEFAULT_TIMEOUT, PROMOTED, STANDARD, Serving, done


def first_rollout(s: Serving, version: str, storage: str) -> Result:
    if s.spec.get("approval") == "Manual" and not approvals.approved(s, version, s.p.status.setdefault("rollout", {})):
        return approvals.await_approval(s, version, "before the first rollout")
    return replace(s, version, storage)


def replace(s: Serving, version: str, storage: str) -> Result:
    """Deploys `version` on the stable InferenceService and waits until it is ready."""
    p = s.p
    if s.serving.get("targetVersion") != version:
        s.serving.update({"targetVersion": version, "startedAt": p.now, "ready": False})
    isvc = traffic.ensure_isvc(s, s.name, version, storage)
    state = inferenceservice.read(isvc)
    traffic.observe(s, state)
    serving_it, why = traffic.serves(s, s.name, isvc, storage) if state.phase == SUCCEEDED else (False, "")
    if serving_it:
        previous = s.serving.get("modelVersion")
        history.now_serving(s, version, storage)
        if s.mode == STANDARD and s.spec.get("canary") is not None:
            traffic.ensure_route(s, None, 0)
        history.record(s, version, previous, PROMOTED, "Rolled out.", storage)
        return done(s)
    if state.phase == FAILED:
        return Fail("ServingFailed", f"InferenceService {s.name} failed ({state.reason}): {state.message}")
    detail = why or state.message
    return p.running(f"InferenceService {s.name} is not ready yet{': ' + detail if detail else '.'}",
                     s.serving["startedAt"], s.spec.get("timeoutSeconds") or DEFAULT_TIMEOUT, DEADLINE_REASON)


def maintain(s: Serving) -> Result:
    """Keeps the serving objects as the spec says (replicas, resources) for the serving version."""
    version, storage = s.serving["modelVersion"], s.serving.get("storageUri")
    if storage is not None:
        isvc = traffic.ensure_isvc(s, s.name, version, storage)
        traffic.observe(s, inferenceservice.read(isvc))
    return done(s)
