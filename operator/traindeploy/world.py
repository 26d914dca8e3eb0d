"""Status rebuilt from the world when it is missing: status is a report, not the only memory.

When a TrainDeploy's status has no cycle (it was wiped, or lost with a restore from backup), the
cycle in progress is the newest one its training jobs and Experiments are labelled with
(`traindeploy.io/cycle`), provided its `traindeploy.io/spec-hash` annotation is the spec's; the
stages then find their runs, jobs and versions again by name and tags. When status names no
served version, the version serving all traffic is the one MLflow's `champion` alias names (it
moves only on promotion), and a canary in progress is read off the InferenceServices (Knative:
`canaryTrafficPercent`; Standard: the canary InferenceService and the HTTPRoute's weights).
The retrain token a cycle started after is recorded on its children, so no token trains twice.
"""

from __future__ import annotations

from traindeploy import lifecycle as lc
from traindeploy import naming, triggers
from traindeploy.children import httproute
from traindeploy.context import Pass
from traindeploy.results import Fail
from traindeploy.serving import history
from traindeploy.serving.state import KNATIVE, PROGRESSING, Serving
from traindeploy.serving.traffic import HTTPROUTE, INFERENCESERVICE
from traindeploy.stages import registration
from traindeploy.stages.training import BACKENDS
from traindeploy.stages.tuning import EXPERIMENT

RECOVERED = "recovered"


def rebuild(p: Pass) -> None:
    """Fills in what status lost from what exists. Cheap when nothing was lost."""
    if not p.status.get("cycle"):
        _rebuild_cycle(p)
    # Only a status that lost its serving record entirely: during the first rollout the record
    # exists without a version, and reading MLflow's champion then would cost a request per pass.
    if not p.status.get("serving") and p.spec.get("serving") is not None:
        _rebuild_serving(p)


def _owned(p: Pass, items: list[dict]) -> list[dict]:
    return [item for item in items if naming.owner_uid(item) == p.meta["uid"]]


def _rebuild_cycle(p: Pass) -> None:
    selector = f"{naming.LABEL_NAME}={p.name}"
    kind, _ = BACKENDS[(p.spec.get("training") or {}).get("backend", "PyTorchJob")]
    children = _owned(p, p.kube(lambda: p.env.kube.list(kind, p.namespace, selector)))
    if p.spec.get("tuning"):
        children += _owned(p, p.kube(lambda: p.env.kube.list(EXPERIMENT, p.namespace, selector)))
    labelled = [c for c in children if (c["metadata"].get("labels") or {}).get(naming.LABEL_CYCLE)]
    if not labelled:
        return
    newest = max(labelled, key=lambda c: triggers.parse_cycle_label(c["metadata"]["labels"][naming.LABEL_CYCLE]))
    if (newest["metadata"].get("annotations") or {}).get(naming.ANNOTATION_SPEC_HASH) != lc.training_spec_hash(p.spec):
        return  # the spec changed since: a new cycle is due anyway
    label = newest["metadata"]["labels"][naming.LABEL_CYCLE]
    generation, retrain = triggers.parse_cycle_label(label)
    token = (newest["metadata"].get("annotations") or {}).get(naming.ANNOTATION_RETRAIN_TOKEN)
    p.status["cycle"] = triggers.cycle_record(generation, retrain, lc.training_spec_hash(p.spec),
                                              newest["metadata"].get("creationTimestamp") or p.now,
                                              "spec" if retrain == 0 else RECOVERED, token)
    if token:  # acted on before this cycle started: not a request to train again
        p.status.setdefault("retrain", {}).setdefault("lastToken", token)
    p.event("Normal", "StatusRebuilt", f"Found training cycle {label} from its children; status was rebuilt.")


def _rebuild_serving(p: Pass) -> None:
    s = Serving.of(p)
    stable = p.kube(lambda: p.env.kube.get(INFERENCESERVICE, p.namespace, s.name))
    if stable is None or naming.owner_uid(stable) != p.meta["uid"]:
        return
    model_name = p.spec["model"]["name"]
    champion = p.mlflow(lambda client: client.alias_version(model_name, registration.ALIAS_CHAMPION))
    if champion is None:
        return  # nothing was promoted yet: the first rollout is still the stages' to finish
    storage = registration.storage_uri(p, model_name, champion)
    if isinstance(storage, Fail):
        return
    s.serving.update({"modelVersion": champion, "storageUri": storage, "inferenceServiceName": s.name,
                      "traffic": lc.serving_traffic(champion)})
    history.record(s, champion, None, "Promoted", "Found serving when status was rebuilt.", storage)
    rollout = _rollout_in_progress(s, stable, champion)
    if rollout:
        p.status["rollout"] = rollout
        s.serving["traffic"] = f"v{champion} {100 - rollout['weight']}%, v{rollout['version']} {rollout['weight']}%"
    p.event("Normal", "StatusRebuilt", f"Found version {champion} serving; status was rebuilt.")


def _rollout_in_progress(s: Serving, stable: dict, champion: str) -> dict | None:
    """The canary step the InferenceServices show, if one is in progress."""
    p = s.p
    if s.mode == KNATIVE:
        version = (stable["metadata"].get("annotations") or {}).get(naming.ANNOTATION_MODEL_VERSION)
        weight = (stable["spec"]["predictor"]).get("canaryTrafficPercent")
        if version == champion or weight is None or not 0 < weight < 100:
            return None
    else:
        canary = p.kube(lambda: p.env.kube.get(INFERENCESERVICE, p.namespace, s.canary_name))
        route = p.kube(lambda: p.env.kube.get(HTTPROUTE, p.namespace, naming.http_route_name(p.name)))
        if canary is None or route is None:
            return None
        version = (canary["metadata"].get("annotations") or {}).get(naming.ANNOTATION_MODEL_VERSION)
        weight = httproute.weights(route).get(httproute.predictor_service(s.canary_name), 0)
        if not 0 < weight < 100:
            return None
    steps = (s.spec.get("canary") or {}).get("steps") or [10, 50, 100]
    step = max([index for index, value in enumerate(steps) if value <= weight] or [0])
    return {"version": version, "stableVersion": champion, "mode": s.mode, "state": PROGRESSING, "step": step,
            "weight": weight, "startedAt": p.now, "stepStartedAt": p.now, "paused": False,
            "failedVersions": [], "message": f"Recovered at {weight}% from the serving objects."}
