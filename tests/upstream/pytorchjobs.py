"""Helpers of the upstream tier for PyTorchJobs the real Training Operator reconciles."""

from __future__ import annotations

from kubernetes import client

from harness.upstream import Kwok, wait_for
from traindeploy.children import pytorchjob

from . import objects


def create(api_client, body: dict) -> dict:
    return objects.create(api_client, pytorchjob, body)


def get(api_client, namespace: str, name: str) -> dict:
    return objects.get(api_client, pytorchjob, namespace, name)


def true_conditions(job: dict) -> list[str]:
    return [c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]


def wait_condition(api_client, namespace: str, name: str, condition: str, timeout: float = 60) -> dict:
    """The job as stored once the real controller has set `condition` True."""
    return wait_for(lambda: get(api_client, namespace, name), lambda job: condition in true_conditions(job),
                    timeout=timeout, what=f"PyTorchJob {namespace}/{name} {condition}")


def pods(api_client, namespace: str, name: str) -> dict[str, client.V1Pod]:
    """The job's pods by name, found as the operator finds them (the label the Training Operator
    puts on them)."""
    items = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=pytorchjob.pod_selector(name)).items
    return {pod.metadata.name: pod for pod in items}


def wait_pods(api_client, namespace: str, name: str, count: int, phase: str | None = "Running",
              timeout: float = 60) -> dict[str, client.V1Pod]:
    """`count` pods of the job, all in `phase` (any phase when None)."""
    return wait_for(lambda: pods(api_client, namespace, name),
                    lambda found: len(found) == count and (phase is None or all(
                        pod.status.phase == phase for pod in found.values())),
                    timeout=timeout, what=f"{count} pods of {namespace}/{name} {phase or ''}")


def end_master(api_client, namespace: str, name: str, exit_code: int) -> None:
    """The Master's container exits with `exit_code` (KWOK plays the kubelet seeing it)."""
    Kwok.end_pod(client.CoreV1Api(api_client), namespace, f"{name}-master-0", exit_code)


def env_of(pod: client.V1Pod, container: str = pytorchjob.CONTAINER_NAME) -> dict[str, object]:
    """name -> value, or the valueFrom dict for secret references."""
    (found,) = [c for c in pod.spec.containers if c.name == container]
    return {item.name: item.value if item.value_from is None else item.value_from.to_dict()
            for item in found.env or []}
