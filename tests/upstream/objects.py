"""The upstream tier's reads and writes of a child kind's objects (a traindeploy.children module
names the kind: GROUP, VERSION, PLURAL)."""

from __future__ import annotations

import copy
from types import ModuleType

from kubernetes import client


def create(api_client, child: ModuleType, body: dict) -> dict:
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        child.GROUP, child.VERSION, body["metadata"]["namespace"], child.PLURAL, copy.deepcopy(body))


def get(api_client, child: ModuleType, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        child.GROUP, child.VERSION, namespace, child.PLURAL, name)
