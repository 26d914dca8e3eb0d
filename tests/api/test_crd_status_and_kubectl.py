"""The TrainDeploy status subresource, and what users see through kubectl (explain, get)."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from api import manifests
from api.manifests import GROUP, PLURAL, VERSION
from harness.assertions import dropped_fields

STATUS = {
    "observedGeneration": 1,
    "phase": "Ready",
    "cycle": {"generation": 1, "specHash": "9f2c4e1a", "startedAt": "2026-11-23T09:00:00Z"},
    "conditions": [
        {"type": "TrainingSucceeded", "status": "True", "reason": "JobSucceeded",
         "message": "PyTorchJob churn-train-1 succeeded.", "lastTransitionTime": "2026-11-23T09:40:00Z",
         "observedGeneration": 1},
        {"type": "GatePassed", "status": "True", "reason": "ThresholdMet",
         "message": "val_accuracy 0.91 >= 0.85.", "lastTransitionTime": "2026-11-23T09:41:00Z",
         "observedGeneration": 1},
        {"type": "Ready", "status": "True", "reason": "Serving",
         "message": "Version 3 serves 100% of traffic.", "lastTransitionTime": "2026-11-23T09:50:00Z",
         "observedGeneration": 1},
    ],
    "pipeline": {"runId": "a1b2c3", "state": "Succeeded", "url": "http://kfp.example.com/#/runs/details/a1b2c3",
                 "experimentId": "e-17", "startedAt": "2026-11-23T09:00:05Z"},
    "tuning": {"experimentName": "churn-tune-1", "state": "Succeeded", "startedAt": "2026-11-23T09:10:00Z",
               "bestTrialName": "churn-tune-1-x7k2p", "bestParameters": {"lr": "0.02", "epochs": "8"},
               "bestObjectiveValue": "0.93"},
    "training": {"kind": "PyTorchJob", "name": "churn-train-1", "state": "Succeeded",
                 "startedAt": "2026-11-23T09:30:00Z", "mlflowRunId": "4f6e0c", "mlflowExperimentId": "12"},
    "model": {"name": "churn-classifier", "version": "3", "source": "runs:/4f6e0c/model",
              "storageUri": "s3://mlflow/12/4f6e0c/artifacts/model",
              "metric": {"name": "val_accuracy", "value": 0.91, "threshold": 0.85, "passed": True}},
    "serving": {"inferenceServiceName": "churn", "url": "http://churn.models.example.com",
                "modelVersion": "3", "ready": True, "traffic": "v3 100%"},
    "rollout": {"version": "4", "stableVersion": "3", "state": "Progressing", "step": 0, "weight": 10,
                "failedVersions": ["2"]},
    "rolloutHistory": [{"version": "3", "result": "Promoted", "at": "2026-01-01T00:00:00Z"}],
    "children": [
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "churn-train-1"},
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "churn"},
    ],
}


def _api(api_client) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def _write_status(api_client, namespace: str, name: str, status: dict) -> dict:
    return _api(api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})


def test_a_full_status_round_trips_through_the_subresource(api_client, namespace):
    _api(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifests.minimal())
    _write_status(api_client, namespace, "churn", STATUS)
    stored = _api(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn")
    assert dropped_fields(STATUS, stored["status"]) == []
    assert stored["metadata"]["generation"] == 1  # status writes do not bump the generation


def test_status_is_ignored_on_the_main_resource_and_spec_on_the_subresource(api_client, namespace):
    body = {**manifests.minimal(), "status": {"phase": "Ready"}}
    created = _api(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert "status" not in created
    _write_status(api_client, namespace, "churn", {"phase": "Training"})
    _api(api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "churn", {"spec": {"model": {"name": "other"}}})
    stored = _api(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn")
    assert stored["spec"]["model"]["name"] == "churn-classifier"
    assert stored["status"]["phase"] == "Training"


@pytest.mark.parametrize(("status", "field"), [
    ({"phase": "Exploded"}, "status.phase"),
    ({"conditions": [{"type": "Ready", "status": "Maybe"}]}, "status.conditions[0].status"),
    ({"conditions": [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]},
     "status.conditions[1]"),
    ({"conditions": [{"status": "True"}]}, "status.conditions[0].type"),
    ({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]},
     "status.conditions[0].lastTransitionTime"),
])
def test_an_invalid_status_is_rejected(status, field, api_client, namespace):
    _api(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifests.minimal())
    with pytest.raises(ApiException) as rejected:
        _write_status(api_client, namespace, "churn", status)
    assert rejected.value.status == 422
    assert field in rejected.value.body


def _explain(control_plane, field: str) -> str:
    """`kubectl explain`, retried while the apiserver publishes the CRD's OpenAPI document."""
    deadline = time.monotonic() + 60
    while True:
        result = control_plane.kubectl_run("explain", field, check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return result.stdout
        time.sleep(1)


def test_kubectl_explain_teaches_the_training_fields(control_plane):
    text = _explain(control_plane, "traindeploy.spec.training")
    assert "GROUP:      traindeploy.io" in text or "traindeploy.io" in text
    assert "distributed training job" in text
    for field in ("backend", "image", "workers", "gpus", "runtimeRef", "restartPolicy", "tolerations"):
        assert f"  {field}\t" in text, field
    # Field descriptions are shown, enums included.
    assert "TrainJob (Kubeflow Trainer" in text
    assert "Replicas besides the first" in text


def test_kubectl_explain_describes_the_kind_and_nested_fields(control_plane):
    top = _explain(control_plane, "traindeploy")
    assert "takes a model from code to production" in top
    assert "spec" in top and "status" in top
    parameters = _explain(control_plane, "td.spec.tuning.parameters")
    assert "The search space" in parameters
    assert "distribution" in parameters
    conditions = _explain(control_plane, "traindeploy.status.conditions")
    assert "lastTransitionTime" in conditions


def _table(text: str) -> list[dict[str, str]]:
    """Rows of kubectl's table output, cut at the header's column starts (cells may be empty)."""
    header, *rows = text.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, starts[1:] + [None]))
    names = [header[a:b].strip() for a, b in bounds]
    return [{name: row[a:b].strip() for name, (a, b) in zip(names, bounds)} for row in rows]


def test_kubectl_get_shows_the_printer_columns(control_plane, api_client, namespace):
    _api(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifests.minimal())
    _write_status(api_client, namespace, "churn", STATUS)
    text = control_plane.kubectl_run("get", "td", "-n", namespace).stdout
    assert text.split()[:7] == ["NAME", "PHASE", "MODEL", "VERSION", "TRAFFIC", "READY", "AGE"]
    [row] = _table(text)
    assert {k: v for k, v in row.items() if k != "AGE"} == {
        "NAME": "churn", "PHASE": "Ready", "MODEL": "churn-classifier", "VERSION": "3",
        "TRAFFIC": "v3 100%", "READY": "True"}
    # The categories make `kubectl get ml` list TrainDeploys next to other ML kinds.
    listed = control_plane.kubectl_run("get", "ml", "-n", namespace, "-o", "name").stdout.split()
    assert "traindeploy.traindeploy.io/churn" in listed


def test_kubectl_get_before_any_status_shows_empty_columns(control_plane, api_client, namespace):
    _api(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifests.minimal())
    [row] = _table(control_plane.kubectl_run("get", "traindeploys", "-n", namespace).stdout)
    assert row["NAME"] == "churn" and row["MODEL"] == "churn-classifier"
    assert row["PHASE"] == row["VERSION"] == row["TRAFFIC"] == row["READY"] == ""
