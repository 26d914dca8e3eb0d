"""The controller manager really runs: owned children and namespaces are collected."""

from __future__ import annotations

import secrets
import time

from kubernetes import client
from kubernetes.client.rest import ApiException

from api.manifests import minimal
from foundation.test_upstream_crds import PYTORCHJOB


def _wait_gone(read, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            read()
        except ApiException as error:
            if error.status == 404:
                return time.monotonic() - started
            raise
        time.sleep(0.2)
    raise AssertionError(f"still present after {timeout}s")


def test_deleting_an_owner_deletes_its_owned_child(api_client, namespace):
    api = client.CustomObjectsApi(api_client)
    owner = api.create_namespaced_custom_object(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys",
        {"apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy",
         "metadata": {"name": "owner"}, "spec": minimal()["spec"]})
    child = {**PYTORCHJOB, "metadata": {"name": "owned", "ownerReferences": [{
        "apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy", "name": "owner",
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]}}
    api.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", child)
    unowned = {**PYTORCHJOB, "metadata": {"name": "unowned"}}
    api.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", unowned)

    api.delete_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace, "traindeploys", "owner")

    _wait_gone(lambda: api.get_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs", "owned"))
    # The collector removes only what the owner owned.
    api.get_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", "unowned")


def test_foreground_deletion_waits_for_children(api_client, namespace):
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="child", owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid,
            block_owner_deletion=True)])))
    core.delete_namespaced_config_map("owner", namespace,
                                      body=client.V1DeleteOptions(propagation_policy="Foreground"))
    _wait_gone(lambda: core.read_namespaced_config_map("owner", namespace))
    _wait_gone(lambda: core.read_namespaced_config_map("child", namespace), timeout=5)


def test_a_deleted_namespace_is_emptied_and_removed(api_client):
    core = client.CoreV1Api(api_client)
    name = f"t-ns-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "kubeflow.org", "v1", name, "pytorchjobs", PYTORCHJOB)
    core.delete_namespace(name)
    _wait_gone(lambda: core.read_namespace(name), timeout=90)
