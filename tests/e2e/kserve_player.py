"""Plays KServe's controller for rollouts: answers each InferenceService spec change with the
status KServe would write (UPSTREAM.md 4.4-4.5), in a background thread, and records the canary
percentages it saw, in order."""

from __future__ import annotations

import datetime as dt
import threading
import time

import logging

from kubernetes import client, watch

from traindeploy.dev.status import kserve as kserve_status

log = logging.getLogger(__name__)


def _watch(api, group: str, version: str, namespace: str, plural: str, stop: threading.Event, handle) -> None:
    """Calls `handle(object)` for every change, as a controller's informer would; survives errors."""
    while not stop.is_set():
        stream = watch.Watch()
        try:
            for event in stream.stream(api.list_namespaced_custom_object, group, version, namespace, plural,
                                       timeout_seconds=1):
                if stop.is_set():
                    break
                if event["type"] in ("ADDED", "MODIFIED"):
                    handle(event["object"])
        except Exception:  # noqa: BLE001 - a player must outlive a failed request
            log.exception("KServe player: watch or status write failed; continuing")
            time.sleep(0.1)
        finally:
            stream.stop()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"

# Standard mode's predictor states, as KServe v0.20.0 writes them and tests/upstream/test_kserve.py
# checks against the real controller: READY once the Deployment is available, NOT_READY while its
# pod is not (still starting, or cannot be placed), FAILED_LOAD when the storage initializer
# crash-loops.
READY, NOT_READY, FAILED_LOAD = "Ready", "NotReady", "FailedLoad"
# IngressReady until the predictor is ready (createRawIngress,
# reconcilers/ingress/kube_ingress_reconciler.go @ v0.20.0); Ready takes the first failing
# dependent's reason, and IngressReady sorts first.
INGRESS_NOT_CREATED = "Predictor ingress not created"
# The Deployment conditions PredictorReady copies (PropagateRawStatus,
# pkg/apis/serving/v1beta1/inference_service_status.go @ v0.20.0): the deployment controller's words.
AVAILABLE = ("NewReplicaSetAvailable", 'ReplicaSet "{}" has successfully progressed.')
UNAVAILABLE = ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
# Deployments made here get no ReplicaSet (no deployment controller runs in the fast tiers).
STAND_IN_REPLICASET_HASH = "5d8f7c9b6"


def standard_status(isvc: dict, state: str = READY, *, observed_generation: int = 1, address: str | None = None,
                    failure: str = "model failed to load", exit_code: int = 1, at: str | None = None) -> dict:
    """The whole Standard-mode status KServe v0.20.0 writes for `isvc` in `state` (READY, NOT_READY
    or FAILED_LOAD). URL and address come from the ingress reconciler: the ingress host by the
    default domain template `{name}-{namespace}.example.com`, and the predictor Service
    (kube_ingress_reconciler.go); the predictor's own URL from raw_kube_reconciler.go; the model
    state from the predictor pod (PropagateModelStatus, inference_service_status.go). `address`
    replaces the in-cluster address (a test server the operator's probe can reach)."""
    name, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    at = at or _now()

    def condition(kind: str, value: str, reason: str = "", message: str = "", info: bool = False) -> dict:
        found = {"type": kind, "status": value, "lastTransitionTime": at}
        found.update({key: text for key, text in (("reason", reason), ("message", message)) if text})
        if info:
            found["severity"] = "Info"
        return found

    ready = state == READY
    if ready:
        reason, message = AVAILABLE[0], AVAILABLE[1].format(f"{name}-predictor-{STAND_IN_REPLICASET_HASH}")
        conditions = [condition("IngressReady", "True"), condition("PredictorReady", "True", reason, message),
                      condition("Ready", "True")]
    else:
        conditions = [condition("IngressReady", "False", INGRESS_NOT_CREATED),
                      condition("PredictorReady", "False", *UNAVAILABLE),
                      condition("Ready", "False", INGRESS_NOT_CREATED)]
    model = isvc["spec"]["predictor"].get("model") or {}
    status = {"deploymentMode": "Standard", "observedGeneration": observed_generation,
              "clusterServingRuntimeName": model.get("runtime") or "kserve-mlserver",
              "conditions": [*conditions, condition("Stopped", "False", info=True)],
              "components": {"predictor": {}}}
    if ready:
        status.update({"url": f"http://{name}-{namespace}.example.com",
                       "address": {"url": address or f"http://{name}-predictor.{namespace}.svc.cluster.local"},
                       "components": {"predictor": {"url": f"http://{name}-predictor-{namespace}.example.com"}},
                       "modelStatus": {"transitionStatus": "UpToDate",
                                       "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                                       "copies": {"failedCopies": 0, "totalCopies": 1}}})
    elif state == NOT_READY:
        status["modelStatus"] = {"transitionStatus": "InProgress",
                                 "states": {"activeModelState": "", "targetModelState": "Pending"},
                                 "copies": {"failedCopies": 0}}
    else:
        status["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad",
                                 "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                                 "copies": {"failedCopies": 0},
                                 "lastFailureInfo": {"reason": "ModelLoadFailed", "message": failure,
                                                     "exitCode": exit_code}}
    return status


def predictor_deployment(api_client, namespace: str, isvc: dict, rolled_out: bool = True) -> int:
    """Standard mode's predictor Deployment, as KServe's raw reconciler makes it (`<isvc>-predictor`,
    the storage URI on the pod template: pkg/controller/v1beta1/inferenceservice/components/predictor.go
    and reconcilers/raw/raw_kube_reconciler.go @ v0.20.0), with the status the Deployment
    controller writes once every replica runs the template (it does not run in these tests).
    Returns the Deployment's generation, which KServe reports as the status's observedGeneration."""
    apps = client.AppsV1Api(api_client)
    name = f"{isvc['metadata']['name']}-predictor"
    labels = {"app": f"isvc.{name}"}
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {
                         STORAGE_URI_ANNOTATION: isvc["spec"]["predictor"]["model"]["storageUri"]}},
                                  "spec": {"containers": [{"name": "kserve-container", "image": "kserve/mlserver"}]}}}}
    try:
        deployment = apps.create_namespaced_deployment(namespace, body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        deployment = apps.patch_namespaced_deployment(name, namespace, {"spec": body["spec"]})
    generation = deployment.metadata.generation
    updated = 1 if rolled_out else 0
    apps.patch_namespaced_deployment_status(name, namespace, {"status": {
        "observedGeneration": generation, "replicas": 1, "updatedReplicas": updated, "readyReplicas": 1,
        "availableReplicas": 1}})
    return generation


class KnativePlayer:
    """Knative mode: a revision per storage URI; traffic split by canaryTrafficPercent
    (kserve/kserve pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go and
    pkg/apis/serving/v1beta1/inference_service_status.go @ v0.20.0)."""

    def __init__(self, api_client, namespace: str, name: str, ready: bool = True) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace, self.name = namespace, name
        self.ready = ready
        self.revisions: dict[str, str] = {}  # storage URI -> revision name
        self.rolled_out: str | None = None
        self.previous_rolled_out: str | None = None
        self.percents: list[tuple[float, int | None]] = []  # (time, canaryTrafficPercent) on each change
        self._seen_generation = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "KnativePlayer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def percent_sequence(self) -> list[int | None]:
        values = [p for _, p in self.percents]
        return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]

    def _loop(self) -> None:
        _watch(self.api, "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices", self._stop,
               self._on_change)

    def _on_change(self, isvc: dict) -> None:
        if isvc["metadata"]["name"] == self.name and isvc["metadata"]["generation"] != self._seen_generation:
            self._seen_generation = isvc["metadata"]["generation"]
            self._answer(isvc)

    def _answer(self, isvc: dict) -> None:
        predictor = isvc["spec"]["predictor"]
        storage = predictor["model"]["storageUri"]
        percent = predictor.get("canaryTrafficPercent")
        self.percents.append((time.monotonic(), percent))
        if storage not in self.revisions:
            self.revisions[storage] = f"{self.name}-predictor-{len(self.revisions) + 1:05d}"
        latest = self.revisions[storage]
        url = f"http://{self.name}.{self.namespace}.example.com"
        if percent is None or self.rolled_out is None or percent >= 100 or latest == self.rolled_out:
            traffic = [{"revisionName": latest, "latestRevision": True, "percent": 100}]
            if latest != self.rolled_out:
                self.previous_rolled_out, self.rolled_out = self.rolled_out, latest
        else:
            # Knative gives a URL only to a tagged target; KServe tags the latest one only with
            # tag routing enabled (reconcilers/knative/ksvc_reconciler.go @ v0.20.0).
            traffic = [{"revisionName": latest, "latestRevision": True, "percent": percent},
                       {"tag": "prev", "revisionName": self.rolled_out, "latestRevision": False,
                        "percent": 100 - percent,
                        "url": f"http://prev-{self.name}-predictor.{self.namespace}.example.com"}]
            if (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/enable-tag-routing") == "true":
                traffic[0].update({"tag": "latest",
                                   "url": f"http://latest-{self.name}-predictor.{self.namespace}.example.com"})
        # The status itself is written by the builder `traindeploy dev`'s executor uses.
        revisions = kserve_status.Revisions(latest_created=latest, latest_ready=latest if self.ready else None,
                                            rolled_out=self.rolled_out, previous_rolled_out=self.previous_rolled_out)
        predictor_url = f"http://{self.name}-predictor.{self.namespace}.example.com"
        status = kserve_status.knative(url=url, predictor_url=predictor_url, revisions=revisions, traffic=traffic if self.ready else [],
                                       observed_generation=isvc["metadata"]["generation"],
                                       address=f"http://{self.name}.{self.namespace}.svc.cluster.local")
        self.api.patch_namespaced_custom_object_status("serving.kserve.io", "v1beta1", self.namespace,
                                                       "inferenceservices", self.name, {"status": status})


class StandardPlayer:
    """Standard mode: every InferenceService of the TrainDeploy becomes ready on each change
    (`standard_status`); a canary's in-cluster address can point at a local test server so the
    probe reaches it. Records the HTTPRoute's weights on each change."""

    def __init__(self, api_client, namespace: str, addresses: dict[str, str] | None = None,
                 never_ready: set[str] | None = None) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.addresses = addresses or {}
        self.never_ready = never_ready or set()
        self.weights: list[dict[str, int]] = []
        self.weight_times: list[float] = []  # when each entry of `weights` was seen
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "StandardPlayer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        routes = threading.Thread(target=_watch, daemon=True, args=(
            self.api, "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", self._stop, self._on_route))
        routes.start()
        _watch(self.api, "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices", self._stop,
               self._on_isvc)
        routes.join(timeout=5)

    def _on_isvc(self, isvc: dict) -> None:
        name, generation = isvc["metadata"]["name"], isvc["metadata"]["generation"]
        if self._seen.get(name) != generation and name not in self.never_ready:
            self._seen[name] = generation
            self._ready(isvc)

    def _on_route(self, route: dict) -> None:
        weights = {b["name"]: b.get("weight", 1) for rule in route["spec"].get("rules", [])
                   for b in rule.get("backendRefs", [])}
        if not self.weights or self.weights[-1] != weights:
            self.weights.append(weights)
            self.weight_times.append(time.monotonic())

    def _ready(self, isvc: dict) -> None:
        name = isvc["metadata"]["name"]
        generation = predictor_deployment(self.api.api_client, self.namespace, isvc)
        status = standard_status(isvc, observed_generation=generation, address=self.addresses.get(name))
        self.api.patch_namespaced_custom_object_status("serving.kserve.io", "v1beta1", self.namespace,
                                                       "inferenceservices", name, {"status": status})
