"""Another writer of status between two passes (a person with kubectl, a second tool): the daemon
reads the object again instead of waiting for its own write to come back, and keeps following
spec changes."""

from __future__ import annotations

from kubernetes import client

from e2e import manifests
from e2e.test_lifecycle import _phase, create


def test_a_foreign_status_write_does_not_freeze_the_daemon(api_client, namespace, players, operator, model_name):
    create(api_client, namespace, manifests.minimal("churn", model_name))
    players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    players.wait_td("churn", _phase("Training"))
    custom = client.CustomObjectsApi(api_client)
    custom.patch_namespaced_custom_object_status(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn",
        {"status": {"rolloutHistory": [{"version": "0", "result": "Promoted", "reason": "written by hand",
                                        "at": "2026-12-01T00:00:00Z"}]}})
    custom.patch_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn",
                                          {"spec": {"training": {"hyperparameters": {"lr": "0.02"}}}})
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g2-train", timeout=60)
    assert "--lr=0.02" in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    td = players.wait_td("churn", lambda td: td["status"].get("cycle", {}).get("label") == "g2")
    assert td["status"]["observedGeneration"] == td["metadata"]["generation"]
