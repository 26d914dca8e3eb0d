"""Fixtures for the child tests that run against the real apiserver."""

from __future__ import annotations

import pytest
from kubernetes import client


@pytest.fixture
def owner(api_client, namespace) -> dict:
    """A controller owner reference to a ConfigMap standing in for the TrainDeploy."""
    created = client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": created.metadata.uid,
            "controller": True, "blockOwnerDeletion": True}
