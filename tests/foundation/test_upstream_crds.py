"""The upstream child CRDs are installed on the real apiserver and enforce their schemas."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from harness.assertions import dropped_fields

CONTAINER = {"name": "pytorch", "image": "ghcr.io/example/train:1", "command": ["python3", "train.py"]}

PYTORCHJOB = {
    "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
    "metadata": {"name": "train"},
    "spec": {"pytorchReplicaSpecs": {
        "Master": {"replicas": 1, "restartPolicy": "OnFailure",
                   "template": {"spec": {"containers": [
                       {**CONTAINER, "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}},
        "Worker": {"replicas": 2, "restartPolicy": "OnFailure",
                   "template": {"spec": {"containers": [CONTAINER]}}},
    }},
}

INFERENCESERVICE = {
    "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
    "metadata": {"name": "churn"},
    "spec": {"predictor": {"minReplicas": 1, "model": {
        "modelFormat": {"name": "mlflow"}, "protocolVersion": "v2",
        "storageUri": "s3://bucket/1/models/m-abc/artifacts"}}},
}

EXPERIMENT = {
    "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
    "metadata": {"name": "search"},
    "spec": {
        "algorithm": {"algorithmName": "random"},
        "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
        "maxTrialCount": 4, "parallelTrialCount": 2,
        "parameters": [{"name": "lr", "parameterType": "double",
                        "feasibleSpace": {"min": "0.001", "max": "0.1"}}],
        "trialTemplate": {"primaryContainerName": "pytorch",
                          "trialParameters": [{"name": "lr", "reference": "lr"}],
                          "trialSpec": {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                        "spec": PYTORCHJOB["spec"]}},
    },
}

TRAINJOB = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
    "metadata": {"name": "train"},
    "spec": {"runtimeRef": {"name": "torch-distributed"},
             "trainer": {"image": "ghcr.io/example/train:1", "numNodes": 2,
                         "resourcesPerNode": {"limits": {"nvidia.com/gpu": "1"}}}},
}

KINDS = {
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs", PYTORCHJOB),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices", INFERENCESERVICE),
    "Experiment": ("kubeflow.org", "v1beta1", "experiments", EXPERIMENT),
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", TRAINJOB),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_valid_object_of_each_child_kind_is_stored_unpruned(kind, api_client, namespace):
    group, version, plural, body = KINDS[kind]
    api = client.CustomObjectsApi(api_client)
    api.create_namespaced_custom_object(group, version, namespace, plural, body)
    stored = api.get_namespaced_custom_object(group, version, namespace, plural, body["metadata"]["name"])
    assert stored["kind"] == kind
    assert dropped_fields(body["spec"], stored["spec"]) == []


@pytest.mark.parametrize(("kind", "mutate", "field"), [
    ("PyTorchJob", lambda spec: spec.pop("pytorchReplicaSpecs"), "spec.pytorchReplicaSpecs"),
    ("PyTorchJob", lambda spec: spec["pytorchReplicaSpecs"]["Master"].update(replicas="one"),
     "spec.pytorchReplicaSpecs.Master.replicas"),
    ("InferenceService", lambda spec: spec.pop("predictor"), "spec.predictor"),
    ("InferenceService", lambda spec: spec["predictor"].update(minReplicas="many"),
     "spec.predictor.minReplicas"),
])
def test_an_invalid_child_is_rejected_by_the_schema(kind, mutate, field, api_client, namespace):
    import copy

    group, version, plural, body = KINDS[kind]
    invalid = copy.deepcopy(body)
    mutate(invalid["spec"])
    with pytest.raises(ApiException) as rejected:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            group, version, namespace, plural, invalid)
    assert rejected.value.status == 422
    assert field in rejected.value.body


def test_a_pruned_field_is_detected(api_client, namespace):
    """The comparison above really catches what the apiserver drops."""
    group, version, plural, body = KINDS["PyTorchJob"]
    sent = {**body, "spec": {**body["spec"], "notInTheSchema": True}}
    stored = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        group, version, namespace, plural, sent)
    assert dropped_fields(sent["spec"], stored["spec"]) == [".notInTheSchema"]


def test_child_status_is_a_subresource(api_client, namespace):
    """Tests play the upstream controllers by writing status through /status, as they do."""
    group, version, plural, body = KINDS["PyTorchJob"]
    api = client.CustomObjectsApi(api_client)
    api.create_namespaced_custom_object(group, version, namespace, plural, body)
    condition = {"type": "Created", "status": "True", "reason": "PyTorchJobCreated",
                 "message": "PyTorchJob train is created.",
                 "lastUpdateTime": "2026-11-23T10:00:00Z", "lastTransitionTime": "2026-11-23T10:00:00Z"}
    api.patch_namespaced_custom_object_status(group, version, namespace, plural, "train",
                                              {"status": {"conditions": [condition]}})
    stored = api.get_namespaced_custom_object(group, version, namespace, plural, "train")
    assert stored["status"]["conditions"] == [condition]
    # A status write through the main resource is ignored, as on any real cluster.
    api.patch_namespaced_custom_object(group, version, namespace, plural, "train",
                                       {"status": {"conditions": []}})
    stored = api.get_namespaced_custom_object(group, version, namespace, plural, "train")
    assert stored["status"]["conditions"] == [condition]
