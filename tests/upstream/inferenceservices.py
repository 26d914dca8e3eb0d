"""Helpers of the upstream tier for InferenceServices the real KServe reconciles (Standard mode)."""

from __future__ import annotations

import copy

from kubernetes import client

from harness.upstream import wait_for
from traindeploy.children import inferenceservice

GROUP, VERSION, PLURAL = inferenceservice.GROUP, inferenceservice.VERSION, inferenceservice.PLURAL
# The label KServe puts on an InferenceService's pods (constants.InferenceServicePodLabelKey).
POD_LABEL = "serving.kserve.io/inferenceservice"


def create(api_client, body: dict) -> dict:
    """Created through KServe's defaulting and validating webhooks; returns the admitted object."""
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, copy.deepcopy(body))


def get(api_client, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def names(api_client, namespace: str) -> list[str]:
    found = client.CustomObjectsApi(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return [item["metadata"]["name"] for item in found["items"]]


def condition(obj: dict, kind: str) -> dict:
    found = inferenceservice.condition(obj, kind)
    return found or {}


def wait_condition(api_client, namespace: str, name: str, kind: str, status: str, timeout: float = 60,
                   reason: str | None = None) -> dict:
    """The InferenceService once KServe has set condition `kind` to `status` (and `reason`)."""
    def reached(obj: dict) -> bool:
        found = condition(obj, kind)
        return found.get("status") == status and (reason is None or found.get("reason") == reason)

    return wait_for(lambda: get(api_client, namespace, name), reached, timeout=timeout,
                    what=f"InferenceService {namespace}/{name} {kind}={status} {reason or ''}")


def deployment(api_client, namespace: str, isvc: str) -> dict:
    """The predictor Deployment KServe made, as a dict the operator's readers take."""
    apps = client.AppsV1Api(api_client)
    found = apps.read_namespaced_deployment(inferenceservice.predictor_deployment_name(isvc), namespace)
    return api_client.sanitize_for_serialization(found)


def pods(api_client, namespace: str, isvc: str) -> list[client.V1Pod]:
    return client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"{POD_LABEL}={isvc}").items


def wait_ready_pod(api_client, namespace: str, isvc: str, timeout: float = 60) -> client.V1Pod:
    """The one predictor pod, once KWOK has made it Ready."""
    def ready(found: list[client.V1Pod]) -> bool:
        return len(found) == 1 and any(c.type == "Ready" and c.status == "True"
                                       for c in found[0].status.conditions or [])

    return wait_for(lambda: pods(api_client, namespace, isvc), ready, timeout=timeout,
                    what=f"one Ready predictor pod of {namespace}/{isvc}")[0]


def container(pod: client.V1Pod, name: str, init: bool = False) -> client.V1Container:
    (found,) = [c for c in (pod.spec.init_containers if init else pod.spec.containers) or [] if c.name == name]
    return found


def env_of(found: client.V1Container) -> dict[str, str | None]:
    return {item.name: item.value for item in found.env or []}
