"""InferenceService: the predictor the builder writes and what the reader makes of KServe's status."""

from __future__ import annotations

import copy

import pytest

from harness.assertions import dropped_fields
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, inferenceservice

from .samples import GPU, SERVING, STORAGE_URI, assert_stored_unpruned, create_and_read_back, meta, write_status


def build(serving: dict = SERVING, deployment_mode: str | None = None, name: str = "churn") -> dict:
    return inferenceservice.build(meta(name), serving, storage_uri=STORAGE_URI, gpu_resource=GPU,
                                  deployment_mode=deployment_mode)


def test_full_input_builds_the_predictor():
    assert build(deployment_mode="Standard") == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {**meta("churn"), "annotations": {"traindeploy.io/cycle": "3",
                                                      "serving.kserve.io/deploymentMode": "Standard"}},
        "spec": {"predictor": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "serviceAccountName": "model-reader",
            "model": {
                "modelFormat": {"name": "mlflow", "version": "2"},
                "protocolVersion": "v2",
                "runtime": "kserve-mlserver",
                "storageUri": STORAGE_URI,
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi", GPU: 1}},
            },
        }},
    }


def test_minimal_input_gets_the_design_defaults():
    built = build({})
    assert built["metadata"] == meta("churn")
    assert built["spec"] == {"predictor": {"minReplicas": 1, "model": {
        "modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "storageUri": STORAGE_URI}}}


@pytest.mark.parametrize(("reason", "serving", "check"), [
    ("minReplicas 0 (scale to zero) is kept", {"minReplicas": 0}, lambda p: p["minReplicas"] == 0),
    ("no GPU limit when gpus is 0", {"gpus": 0}, lambda p: "resources" not in p["model"]),
    ("a GPU without other resources", {"gpus": 2}, lambda p: p["model"]["resources"] == {"limits": {GPU: 2}}),
    ("never a canary percent here", SERVING, lambda p: "canaryTrafficPercent" not in p),
])
def test_builder_cases(reason, serving, check):
    assert check(build(serving)["spec"]["predictor"]), reason


def test_deployment_mode_annotation_only_when_asked_and_known():
    assert inferenceservice.DEPLOYMENT_MODE_ANNOTATION not in build({})["metadata"]["annotations"]
    assert build({}, "Knative")["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert build({}, "Serverless")["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    with pytest.raises(ValueError):
        build({}, "ModelMesh")
    with pytest.raises(ValueError):
        inferenceservice.build(meta("churn"), SERVING, storage_uri="", gpu_resource=GPU)


def test_inputs_are_not_mutated():
    serving, metadata = copy.deepcopy(SERVING), meta("churn")
    built = inferenceservice.build(metadata, serving, storage_uri=STORAGE_URI, gpu_resource=GPU,
                                   deployment_mode="Knative")
    built["spec"]["predictor"]["model"]["resources"]["requests"]["cpu"] = "9"
    built["metadata"]["labels"]["x"] = "y"
    assert (serving, metadata) == (SERVING, meta("churn"))


# --- reader: knative conditions sorted by type, as KServe v0.20.0 writes them ---------------------

T0 = "2026-11-23T10:00:00Z"
URL, INTERNAL = "http://churn.ml.example.com", "http://churn.ml.svc.cluster.local"


def cond(kind: str, status: str, reason: str = "", message: str = "", info: bool = False) -> dict:
    built = {"type": kind, "status": status, "lastTransitionTime": T0}
    if info:
        built["severity"] = "Info"
    if reason:
        built["reason"] = reason
    if message:
        built["message"] = message
    return built


WAITING = ("RevisionMissing", 'Configuration "churn-predictor" is waiting for a Revision to become ready.')
KNATIVE_READY = {
    "observedGeneration": 1,
    "deploymentMode": "Knative",
    "url": URL,
    "address": {"url": INTERNAL},
    "clusterServingRuntimeName": "kserve-mlserver",
    "conditions": [
        cond("IngressReady", "True"),
        cond("LatestDeploymentReady", "True", info=True),
        cond("PredictorConfigurationReady", "True", info=True),
        cond("PredictorReady", "True"),
        cond("PredictorRouteReady", "True", info=True),
        cond("Ready", "True"),
        cond("RoutesReady", "True", info=True),
        cond("Stopped", "False", info=True),
    ],
    "components": {"predictor": {
        "url": "http://churn-predictor.ml.example.com",
        "address": {"url": "http://churn-predictor.ml.svc.cluster.local"},
        "latestCreatedRevision": "churn-predictor-00001",
        "latestReadyRevision": "churn-predictor-00001",
        "latestRolledoutRevision": "churn-predictor-00001",
        "traffic": [{"revisionName": "churn-predictor-00001", "latestRevision": True, "percent": 100}],
    }},
    "modelStatus": {"transitionStatus": "UpToDate",
                    "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                    "copies": {"failedCopies": 0, "totalCopies": 1}},
}
KNATIVE_WAITING = {
    "observedGeneration": 1,
    "deploymentMode": "Knative",
    "conditions": [
        cond("IngressReady", "Unknown"),
        cond("LatestDeploymentReady", "Unknown", "PredictorConfigurationReady not ready", info=True),
        cond("PredictorConfigurationReady", "Unknown", *WAITING, info=True),
        cond("PredictorReady", "Unknown", *WAITING),
        cond("PredictorRouteReady", "Unknown", *WAITING, info=True),
        cond("Ready", "Unknown", *WAITING),
        cond("RoutesReady", "Unknown", "PredictorRouteReady not ready", info=True),
        cond("Stopped", "False", info=True),
    ],
    "modelStatus": {"transitionStatus": "InProgress",
                    "states": {"activeModelState": "", "targetModelState": "Loading"},
                    "copies": {"failedCopies": 0}},
}
STANDARD_READY = {
    "observedGeneration": 1,
    "deploymentMode": "Standard",
    "address": {"url": INTERNAL},
    "clusterServingRuntimeName": "kserve-mlserver",
    "conditions": [
        cond("IngressReady", "True"),
        cond("PredictorReady", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
        cond("Ready", "True"),
        cond("Stopped", "False", info=True),
    ],
    "components": {"predictor": {"url": "http://churn-predictor.ml.svc.cluster.local"}},
    "modelStatus": {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded",
                                                               "targetModelState": "Loaded"},
                    "copies": {"failedCopies": 0, "totalCopies": 1}},
}
LOAD_FAILED = {
    "deploymentMode": "Standard",
    "conditions": [
        cond("IngressReady", "False", "Predictor ingress not created"),
        cond("PredictorReady", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."),
        cond("Ready", "False", "Predictor ingress not created"),
        cond("Stopped", "False", info=True),
    ],
    "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                    "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                    "copies": {"failedCopies": 1, "totalCopies": 0},
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "Container exited with code 1",
                                        "location": "storage-initializer", "exitCode": 1, "time": T0}},
}
NO_RUNTIME = {
    "conditions": [cond("IngressReady", "Unknown"),
                   cond("PredictorReady", "False", "InvalidPredictorSpec", "no runtime found"),
                   cond("Ready", "False", "InvalidPredictorSpec", "no runtime found")],
    "modelStatus": {"transitionStatus": "InvalidSpec", "states": {"activeModelState": "",
                                                                  "targetModelState": "FailedToLoad"},
                    "lastFailureInfo": {"reason": "NoSupportingRuntime",
                                        "message": "Specified runtime does not support specified framework/version"}},
}
# A failed new model while the old ReplicaSet still answers: Ready stays True, the spec failed.
READY_BUT_NEW_MODEL_FAILED = {**STANDARD_READY, "modelStatus": LOAD_FAILED["modelStatus"]}
STOPPED = {
    "deploymentMode": "Standard",
    "conditions": [cond("IngressReady", "False", "Stopped", "The inference service is stopped"),
                   cond("PredictorReady", "False", "Stopped", "The inference service is stopped"),
                   cond("Ready", "False", "Stopped", "The inference service is stopped"),
                   cond("Stopped", "True", info=True)],
    "modelStatus": {"transitionStatus": "", "states": {"activeModelState": ""}},
}
INITIAL = {"conditions": [cond("IngressReady", "Unknown"), cond("PredictorReady", "Unknown"), cond("Ready", "Unknown")],
           "modelStatus": {"transitionStatus": "InProgress", "states": {"activeModelState": "",
                                                                        "targetModelState": "Pending"}}}
# Should Ready carry no reason while PredictorReady has one, the reader uses the predictor's words.
PREDICTOR_REASON_ONLY = {"conditions": [
    cond("IngressReady", "Unknown"),
    cond("PredictorReady", "Unknown", "ProgressDeadlineExceeded", "ReplicaSet has timed out progressing."),
    cond("Ready", "Unknown")]}

READER_CASES = [
    ("no status yet", None, PENDING, "", {"url": None, "ready": False, "deploymentMode": None}),
    ("initialised", INITIAL, RUNNING, "", {"url": None, "ready": False, "deploymentMode": None}),
    ("knative waiting for a revision", KNATIVE_WAITING, RUNNING, "RevisionMissing",
     {"url": None, "ready": False, "deploymentMode": "Knative"}),
    ("predictor reason only", PREDICTOR_REASON_ONLY, RUNNING, "ProgressDeadlineExceeded",
     {"url": None, "ready": False, "deploymentMode": None}),
    ("knative ready", KNATIVE_READY, SUCCEEDED, "", {"url": URL, "ready": True, "deploymentMode": "Knative"}),
    ("standard ready, internal address only", STANDARD_READY, SUCCEEDED, "",
     {"url": INTERNAL, "ready": True, "deploymentMode": "Standard"}),
    ("model failed to load", LOAD_FAILED, FAILED, "ModelLoadFailed",
     {"url": None, "ready": False, "deploymentMode": "Standard"}),
    ("no supporting runtime", NO_RUNTIME, FAILED, "NoSupportingRuntime", {"url": None, "ready": False,
                                                                          "deploymentMode": None}),
    ("ready but the new model failed", READY_BUT_NEW_MODEL_FAILED, FAILED, "ModelLoadFailed",
     {"url": INTERNAL, "ready": True, "deploymentMode": "Standard"}),
    ("stopped", STOPPED, RUNNING, "Stopped", {"url": None, "ready": False, "deploymentMode": "Standard"}),
]


@pytest.mark.parametrize(("reason", "given", "phase", "upstream_reason", "outputs"), READER_CASES,
                         ids=[case[0] for case in READER_CASES])
def test_reader(reason, given, phase, upstream_reason, outputs):
    obj = build()
    if given is not None:
        obj["status"] = given
    state = inferenceservice.read(obj)
    assert (state.phase, state.reason, state.outputs) == (phase, upstream_reason, outputs), reason


def test_generation_is_not_compared_with_kserves_observed_generation():
    """KServe's observedGeneration is the ksvc's or Deployment's, so a mismatch says nothing."""
    obj = {**build(), "metadata": {**meta("churn"), "generation": 5}, "status": KNATIVE_READY}
    assert inferenceservice.read(obj, generation=5).phase == SUCCEEDED
    assert inferenceservice.read(obj, generation=5) == inferenceservice.read(obj)


# --- the real apiserver with the v0.20.0 CRD ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["Knative", "Standard", "Serverless", "RawDeployment", None])
def test_built_inferenceservice_is_stored_unpruned(api_client, namespace, owner, mode):
    sent = inferenceservice.build(meta("churn", namespace, owner), SERVING, storage_uri=STORAGE_URI,
                                  gpu_resource=GPU, deployment_mode=mode)
    assert_stored_unpruned(sent, create_and_read_back(api_client, inferenceservice, sent))


@pytest.mark.parametrize("given", [case[1] for case in READER_CASES if case[1]],
                         ids=[case[0] for case in READER_CASES if case[1]])
def test_upstream_status_is_accepted_and_read(api_client, namespace, given):
    sent = inferenceservice.build(meta("churn", namespace), SERVING, storage_uri=STORAGE_URI, gpu_resource=GPU)
    stored = write_status(api_client, inferenceservice,
                          create_and_read_back(api_client, inferenceservice, sent), given)
    assert dropped_fields(given, stored["status"]) == []
    assert inferenceservice.read(stored) == inferenceservice.read({"status": given})
