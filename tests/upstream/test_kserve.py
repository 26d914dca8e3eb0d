"""InferenceServices from our builder, reconciled by the real KServe v0.20.0 in Standard mode.

KServe's webhooks admit and default them, its controller makes the predictor Deployment, Service
and Ingress, its pod mutator injects the storage initializer, the Deployment and ReplicaSet
controllers make the pod, and KWOK plays its kubelet: the status our reader interprets is the one
KServe wrote from all that. The fast tiers' stand-in (e2e.kserve_player.standard_status) must write
the same status for the same state. Last, the operator's own serving stage runs Standard-mode
canaries against it, to promotion and to a rollback.
"""

from __future__ import annotations

import secrets
import time

import pytest
from kubernetes import client

from children.samples import GPU, SERVING, meta
from e2e import kserve_player
from harness.upstream import (INIT_FAILURE_MESSAGE, STORAGE_INITIALIZER, UNFETCHABLE_EXIT_CODE,
                              UNFETCHABLE_STORAGE_URI, wait_for)
from traindeploy import serving
from traindeploy.children import FAILED, RUNNING, SUCCEEDED, httproute, inferenceservice
from traindeploy.kube import Kube
from traindeploy.results import Wait
from traindeploy.serving.state import INFERENCESERVICE
from unit.fakes import Clock, ProbedUrls, environment, minimal_spec, run_stage, traindeploy

from . import inferenceservices as isvcs
from .conftest import GPUS_PER_NODE

pytestmark = pytest.mark.slow

STORAGE = "s3://models/churn/1/models/m-0a1b/artifacts"
CANARY_STORAGE = "s3://models/churn/2/models/m-2c3d/artifacts"
# Where KServe's storage initializer puts the model for the server (constants.DefaultModelLocalMountPath).
MODEL_DIR = "/mnt/models"
SERVER = "kserve-container"
STANDARD = "Standard"
READY, NOT_READY, FAILED_LOAD = kserve_player.READY, kserve_player.NOT_READY, kserve_player.FAILED_LOAD
# One InferenceService per state the stand-in plays: served; its pod cannot be placed (more GPUs
# than a node has); its storage cannot be fetched (the storage initializer crash-loops: KWOK's
# Stage, harness.upstream).
NAMES = {READY: "churn", NOT_READY: "churn-big", FAILED_LOAD: "churn-broken"}


def _build(namespace: str, name: str, storage: str, *, mode: str | None, served_model_name: str | None = None,
           serving: dict | None = None) -> dict:
    return inferenceservice.build(meta(name, namespace), serving or SERVING, storage_uri=storage, gpu_resource=GPU,
                                  deployment_mode=mode, served_model_name=served_model_name)


def _reached(state: str):
    def reached(obj: dict) -> bool:
        status = obj.get("status") or {}
        transition = (status.get("modelStatus") or {}).get("transitionStatus")
        if state == READY:
            # KServe can write Ready=True one reconcile before the model state catches up
            # (modelStatus still InProgress/Pending); the settled status is the one compared.
            return isvcs.condition(obj, "Ready").get("status") == "True" and transition == "UpToDate"
        if state == NOT_READY:
            return transition == "InProgress" and \
                isvcs.condition(obj, "PredictorReady").get("reason") == kserve_player.UNAVAILABLE[0]
        return transition == "BlockedByFailedLoad"
    return reached


@pytest.fixture(scope="module")
def served(api_client, kserve) -> dict[str, dict]:
    """The three InferenceServices in one namespace, each as stored once KServe reports its state.
    The operator's first InferenceService for a chosen Standard mode carries the legacy value
    (mode_annotation with no evidence yet)."""
    core = client.CoreV1Api(api_client)
    namespace = f"t-{secrets.token_hex(4)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    mode = inferenceservice.mode_annotation(STANDARD, None)
    admitted = {
        READY: isvcs.create(api_client, _build(namespace, NAMES[READY], STORAGE, mode=mode)),
        NOT_READY: isvcs.create(api_client, _build(namespace, NAMES[NOT_READY], STORAGE, mode=mode,
                                                   serving={**SERVING, "gpus": GPUS_PER_NODE + 1})),
        FAILED_LOAD: isvcs.create(api_client, _build(namespace, NAMES[FAILED_LOAD], UNFETCHABLE_STORAGE_URI,
                                                     mode=mode)),
    }
    try:
        found = {state: wait_for(lambda name=NAMES[state]: isvcs.get(api_client, namespace, name), _reached(state),
                                 timeout=90, what=f"InferenceService {NAMES[state]} {state}")
                 for state in NAMES}
        yield {"namespace": namespace, "admitted": admitted, **found}
    finally:
        core.delete_namespace(namespace)


def test_builder_output_is_admitted_defaulted_and_served(api_client, served):
    """KServe's defaulter rewrites the legacy mode value; the predictor pod fetches storageUri
    with the storage initializer, and MLServer serves the model under the InferenceService's name."""
    namespace, name = served["namespace"], NAMES[READY]
    for admitted in served["admitted"].values():
        assert admitted["metadata"]["annotations"][inferenceservice.DEPLOYMENT_MODE_ANNOTATION] == STANDARD
    pod = isvcs.wait_ready_pod(api_client, namespace, name)
    assert isvcs.container(pod, STORAGE_INITIALIZER, init=True).args == [STORAGE, MODEL_DIR]
    server = isvcs.container(pod, SERVER)
    env = isvcs.env_of(server)
    assert (env["MLSERVER_MODEL_NAME"], env["MLSERVER_MODEL_URI"]) == (name, MODEL_DIR)
    assert server.resources.limits[GPU] == str(SERVING["gpus"])
    assert pod.spec.service_account_name == SERVING["serviceAccountName"]
    assert pod.metadata.annotations[inferenceservice.STORAGE_URI_ANNOTATION] == STORAGE


def test_ready_status_and_what_our_reader_makes_of_it(api_client, served):
    namespace, name, ready = served["namespace"], NAMES[READY], served[READY]
    status = ready["status"]
    assert status["deploymentMode"] == STANDARD
    assert status["clusterServingRuntimeName"] == inferenceservice.MLSERVER_RUNTIME
    assert status["url"] == f"http://{name}-{namespace}.example.com"
    assert status["address"]["url"] == f"http://{name}-predictor.{namespace}.svc.cluster.local"
    assert status["components"]["predictor"] == {"url": f"http://{name}-predictor-{namespace}.example.com"}
    assert status["modelStatus"]["transitionStatus"] == "UpToDate"

    deployment = isvcs.deployment(api_client, namespace, name)
    assert deployment["metadata"]["ownerReferences"][0]["name"] == name
    service = client.CoreV1Api(api_client).read_namespaced_service(httproute.predictor_service(name), namespace)
    assert [port.port for port in service.spec.ports] == [httproute.PREDICTOR_PORT]

    state = inferenceservice.read(ready)
    assert state.phase == SUCCEEDED
    assert state.outputs == {"url": status["url"], "ready": True, "deploymentMode": STANDARD}
    assert inferenceservice.resolved_mode(ready) == STANDARD
    # With KServe's status as evidence, later writes keep the value the defaulter wrote.
    assert inferenceservice.mode_annotation(STANDARD, ready) == STANDARD
    assert inferenceservice.cluster_address(ready) == status["address"]["url"]
    assert inferenceservice.predictor_address(ready) == status["components"]["predictor"]["url"]
    assert inferenceservice.deployment_serves(deployment, STORAGE)[0]
    assert not inferenceservice.deployment_serves(deployment, CANARY_STORAGE)[0]


def test_unplaceable_predictor_waits_with_the_predictors_reason(api_client, served):
    """The Deployment lacks minimum availability: PredictorReady says so, while Ready carries
    IngressReady's reason (the first failing dependent, no message); our reader reports the
    predictor's. KServe never turns this into a failure: ProgressDeadlineExceeded is hidden behind
    Available=False (PropagateRawStatus), so only the operator's own timeout ends the wait."""
    namespace, name, found = served["namespace"], NAMES[NOT_READY], served[NOT_READY]
    predictor, ready = isvcs.condition(found, "PredictorReady"), isvcs.condition(found, "Ready")
    assert (predictor["status"], predictor["reason"], predictor["message"]) == ("False", *kserve_player.UNAVAILABLE)
    assert (ready["status"], ready["reason"], ready.get("message")) == \
        ("False", kserve_player.INGRESS_NOT_CREATED, None)
    assert "url" not in found["status"] and found["status"]["components"] == {"predictor": {}}
    state = inferenceservice.read(found)
    assert (state.phase, state.reason, state.message) == (RUNNING, *kserve_player.UNAVAILABLE)
    (pod,) = isvcs.pods(api_client, namespace, name)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None


def test_failed_storage_initializer_fails_the_model_load(served):
    """The storage initializer crash-loops: KServe reports the failed load with the exit code and
    the container's termination message, and our reader calls the InferenceService Failed."""
    found = served[FAILED_LOAD]
    model = found["status"]["modelStatus"]
    assert model["states"] == {"activeModelState": "", "targetModelState": "FailedToLoad"}
    assert model["lastFailureInfo"] == {"reason": "ModelLoadFailed", "message": INIT_FAILURE_MESSAGE,
                                        "exitCode": UNFETCHABLE_EXIT_CODE}
    assert isvcs.condition(found, "PredictorReady")["reason"] == kserve_player.UNAVAILABLE[0]
    state = inferenceservice.read(found)
    assert (state.phase, state.reason, state.message) == (FAILED, "ModelLoadFailed", INIT_FAILURE_MESSAGE)


def test_absent_mode_takes_the_configured_standard_default(api_client, kserve, namespace):
    """No mode chosen: the defaulter writes KServe's configured default, and our reader resolves
    Standard before any status exists."""
    admitted = isvcs.create(api_client, _build(namespace, "churn", STORAGE, mode=None))
    assert admitted["metadata"]["annotations"][inferenceservice.DEPLOYMENT_MODE_ANNOTATION] == STANDARD
    assert inferenceservice.resolved_mode(admitted) == STANDARD


def test_new_version_rolls_out_while_ready_stays_true(api_client, apiserver, kserve, namespace):
    """A new model on the stable InferenceService, patched as the operator patches it (Kube.ensure,
    owned spec): KServe rolls the Deployment; Ready stays True throughout, so only the Deployment
    (deployment_serves) tells when the new version answers (UPSTREAM.md errata)."""
    name, kube = "churn", Kube(apiserver)
    mode = inferenceservice.mode_annotation(STANDARD, None)
    kube.ensure(INFERENCESERVICE, _build(namespace, name, STORAGE, mode=mode))
    first = wait_for(lambda: isvcs.get(api_client, namespace, name), _reached(READY), what=f"{name} Ready")
    _, action = kube.ensure(INFERENCESERVICE, _build(namespace, name, CANARY_STORAGE,
                                                     mode=inferenceservice.mode_annotation(STANDARD, first)))
    assert action == "patched"
    seen: list[str] = []

    def rolled_out(found: tuple[dict, dict]) -> bool:
        obj, deployment = found
        seen.append(isvcs.condition(obj, "Ready").get("status"))
        return inferenceservice.deployment_serves(deployment, CANARY_STORAGE)[0]

    obj, deployment = wait_for(lambda: (isvcs.get(api_client, namespace, name),
                                        isvcs.deployment(api_client, namespace, name)), rolled_out,
                               what="the Deployment to run the new model", interval=0.05)
    assert set(seen) == {"True"}
    assert inferenceservice.read(obj).phase == SUCCEEDED
    assert not inferenceservice.deployment_serves(deployment, STORAGE)[0]
    assert [isvcs.container(pod, STORAGE_INITIALIZER, init=True).args[0]
            for pod in isvcs.pods(api_client, namespace, name) if pod.metadata.deletion_timestamp is None] \
        == [CANARY_STORAGE]


# --- the stand-in against the real thing -----------------------------------------------------------


def _stand_in(state: str, real: dict) -> dict:
    return kserve_player.standard_status(real, state, observed_generation=real["status"]["observedGeneration"],
                                         failure=INIT_FAILURE_MESSAGE, exit_code=UNFETCHABLE_EXIT_CODE)


def _shape(status: dict) -> dict:
    """Every field the operator reads, and the field names around them. The PredictorReady message
    names the ReplicaSet, whose hash only the deployment controller knows."""
    conditions = [(c["type"], c["status"], c.get("reason"), c.get("severity"),
                   c.get("message") if c["type"] != "PredictorReady" else bool(c.get("message")))
                  for c in status["conditions"]]
    model = status["modelStatus"]
    return {"fields": sorted(status), "conditions": conditions,
            "url": status.get("url"), "address": status.get("address"), "components": status["components"],
            "deploymentMode": status["deploymentMode"],
            "clusterServingRuntimeName": status.get("clusterServingRuntimeName"),
            "modelStatus": model}


@pytest.mark.parametrize("state", list(NAMES))
def test_stand_in_writes_what_kserve_wrote(served, state):
    real = served[state]
    assert _shape(_stand_in(state, real)) == _shape(real["status"])


@pytest.mark.parametrize("state", list(NAMES))
def test_reader_gives_the_same_verdict_on_both(served, state):
    real = served[state]
    stand_in = inferenceservice.read({**real, "status": _stand_in(state, real)})
    found = inferenceservice.read(real)
    assert (stand_in.phase, stand_in.reason, stand_in.message, stand_in.outputs) == \
        (found.phase, found.reason, found.message, found.outputs)


# --- the operator's Standard-mode canary -----------------------------------------------------------


def test_standard_canary_is_a_second_inference_service_behind_our_route(api_client, kserve, namespace):
    """Two InferenceServices, the canary answering under the stable one's model name, and an
    HTTPRoute whose backends are their predictor Services (operator: serving/traffic.py). KServe
    serves both; each Deployment runs its own storage URI; the route's backends exist with the
    port it names; the canary's in-cluster address is its own predictor Service."""
    stable, canary = "churn", "churn-canary"
    mode = inferenceservice.mode_annotation(STANDARD, None)
    isvcs.create(api_client, _build(namespace, stable, STORAGE, mode=mode))
    isvcs.create(api_client, _build(namespace, canary, CANARY_STORAGE, mode=mode, served_model_name=stable))
    route = httproute.build(meta("churn", namespace), gateway={"name": "gateway", "namespace": namespace},
                            hostnames=["churn.example.com"], stable_service=httproute.predictor_service(stable),
                            canary_service=httproute.predictor_service(canary), canary_weight=10)
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        httproute.GROUP, httproute.VERSION, namespace, httproute.PLURAL, route)

    canary_pod = isvcs.wait_ready_pod(api_client, namespace, canary)
    assert isvcs.env_of(isvcs.container(canary_pod, SERVER))["MLSERVER_MODEL_NAME"] == stable
    assert isvcs.container(canary_pod, STORAGE_INITIALIZER, init=True).args == [CANARY_STORAGE, MODEL_DIR]
    for name, storage in ((stable, STORAGE), (canary, CANARY_STORAGE)):
        ready = isvcs.wait_condition(api_client, namespace, name, "Ready", "True")
        assert inferenceservice.read(ready).phase == SUCCEEDED
        assert inferenceservice.deployment_serves(isvcs.deployment(api_client, namespace, name), storage)[0]
    assert inferenceservice.cluster_address(isvcs.get(api_client, namespace, canary)) == \
        f"http://{canary}-predictor.{namespace}.svc.cluster.local"
    services = {s.metadata.name: [p.port for p in s.spec.ports]
                for s in client.CoreV1Api(api_client).list_namespaced_service(namespace).items}
    assert {backend: services.get(backend) for backend in httproute.weights(route)} == {
        httproute.predictor_service(stable): [httproute.PREDICTOR_PORT],
        httproute.predictor_service(canary): [httproute.PREDICTOR_PORT]}


def _operator_canary(api_client, apiserver, namespace: str,
                     storage: str) -> tuple[list[str], list[dict], dict, ProbedUrls]:
    """The operator's serving stage itself (serving.STAGE, a real Kube client, the clock and MLflow
    faked), pass after pass against the real KServe, from version 1 serving all traffic to the
    rollout of version 2 at `storage` ending. Returns each pass's result type, the route's weights
    as they changed, the last status and the probe's session."""
    spec = minimal_spec(serving={"deploymentMode": STANDARD, "gateway": {"name": "gateway", "namespace": namespace},
                                 "canary": {"steps": [20, 100], "stepIntervalSeconds": 60,
                                            "analysis": {"probe": {"path": "/v2/models/churn/infer", "body": "{}"}}}})
    custom = client.CustomObjectsApi(api_client)
    # A TrainDeploy in the cluster: the children's owner, or the garbage collector takes them.
    td = custom.create_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace, "traindeploys",
                                                {**traindeploy(spec), "metadata": {"name": "churn"}})
    status = {"cycle": {"generation": 2, "label": "g2", "specHash": "x", "startedAt": "2026-12-01T12:00:00Z"},
              "serving": {"modelVersion": "1", "storageUri": STORAGE, "inferenceServiceName": "churn",
                          "traffic": "v1 100%"},
              "model": {"name": "churn-model", "version": "2", "storageUri": storage}, "conditions": []}
    clock = Clock()
    env = environment(Kube(apiserver), clock=clock)
    env.http = probes = ProbedUrls()  # no model server runs behind KWOK's pods
    routes: list[dict] = []
    results: list[str] = []
    for _ in range(40):
        outcome = run_stage(serving.STAGE, {**td, "status": status}, env)
        status = outcome.status
        results.append(type(outcome.result).__name__)
        route = custom.get_namespaced_custom_object(httproute.GROUP, httproute.VERSION, namespace, httproute.PLURAL,
                                                    "churn")
        if not routes or routes[-1] != httproute.weights(route):
            routes.append(httproute.weights(route))
        if not isinstance(outcome.result, Wait):
            break
        clock.advance(61)
        time.sleep(0.5)
    return results, routes, status, probes


def test_operators_standard_canary_promotes_on_the_real_kserve(api_client, apiserver, kserve, namespace):
    """The canary InferenceService and the route at the first step, the canary ready by its
    Deployment and probed at its own Service, then promotion, which waits for the stable
    Deployment to run the new model before the canary and its weight go."""
    results, routes, status, probes = _operator_canary(api_client, apiserver, namespace, CANARY_STORAGE)
    assert results[-1] == "Done", results
    assert routes == [{"churn-predictor": 80, "churn-canary-predictor": 20}, {"churn-predictor": 100}]
    assert status["serving"]["modelVersion"] == "2" and status["rollout"]["state"] == "Promoted"
    assert inferenceservice.deployment_serves(isvcs.deployment(api_client, namespace, "churn"), CANARY_STORAGE)[0]
    assert wait_for(lambda: isvcs.names(api_client, namespace), lambda names: names == ["churn"],
                    what="the canary InferenceService to go")
    assert probes.urls and all(url.startswith(f"http://churn-canary-predictor.{namespace}.svc.cluster.local/")
                               for url in probes.urls)


def test_operators_standard_canary_whose_model_cannot_load_rolls_back(api_client, apiserver, kserve, namespace):
    """Version 2's storage cannot be fetched: KServe reports the failed load on the canary, and the
    operator rolls back at once, before any probe or timeout: the canary goes, the route returns
    to version 1."""
    results, routes, status, probes = _operator_canary(api_client, apiserver, namespace, UNFETCHABLE_STORAGE_URI)
    assert results[-1] == "Fail", results
    assert status["rollout"]["state"] == "RolledBack" and status["rollout"]["failedVersions"] == ["2"]
    # The storage initializer's termination message, through KServe's lastFailureInfo.
    assert status["rollout"]["message"] == f"Canary version 2 failed at 20%: {INIT_FAILURE_MESSAGE}"
    assert routes == [{"churn-predictor": 80, "churn-canary-predictor": 20}, {"churn-predictor": 100}]
    assert status["serving"]["modelVersion"] == "1" and probes.urls == []
    assert inferenceservice.deployment_serves(isvcs.deployment(api_client, namespace, "churn"), STORAGE)[0]
    assert wait_for(lambda: isvcs.names(api_client, namespace), lambda names: names == ["churn"],
                    what="the canary InferenceService to go")
