"""Helpers of the upstream tier for TrainJobs the real Kubeflow Trainer v2 reconciles."""

from __future__ import annotations

import copy

from kubernetes import client

from children.samples import GPU, INJECTED_ENV, meta
from harness.upstream import Kwok, wait_for
from traindeploy.children import trainjob
from traindeploy.config import OperatorConfig
from traindeploy.context import Environment, Pass
from traindeploy.kube import Kube
from traindeploy.stages import trainer_api

from . import objects

COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


def operator_options(apiserver, namespace: str, training: dict) -> dict:
    """What the operator's training stage gives the builder on this cluster (`step` and
    `fields`, from the referenced runtime and the served TrainJob CRD), read the operator's way."""
    env = Environment(kube=Kube(apiserver), config=OperatorConfig())
    td = {"metadata": {"name": "churn", "namespace": namespace}, "spec": {"training": training}}
    return trainer_api.job_options(Pass(td, env), training)


def build(apiserver, namespace: str, name: str, training: dict) -> dict:
    """The TrainJob our builder makes for `training`, with the operator's injected env."""
    return trainjob.build(meta(name, namespace), training, env=INJECTED_ENV,
                          hyperparameters=training.get("hyperparameters", {}), gpu_resource=GPU,
                          **operator_options(apiserver, namespace, training))


def create(api_client, body: dict) -> dict:
    return objects.create(api_client, trainjob, body)


def get(api_client, namespace: str, name: str) -> dict:
    return objects.get(api_client, trainjob, namespace, name)


def wait_status(api_client, namespace: str, name: str, predicate, what: str, timeout: float = 60) -> dict:
    """The TrainJob as stored once `predicate(status)` holds."""
    return wait_for(lambda: get(api_client, namespace, name),
                    lambda job: predicate(job.get("status") or {}), timeout=timeout,
                    what=f"TrainJob {namespace}/{name} {what}")


def wait_condition(api_client, namespace: str, name: str, condition: str, timeout: float = 60) -> dict:
    """The TrainJob as stored once the real controllers have set `condition` True."""
    return wait_status(api_client, namespace, name, lambda status: any(
        c["type"] == condition and c["status"] == "True" for c in status.get("conditions") or []),
        condition, timeout)


def wait_running(api_client, namespace: str, name: str, timeout: float = 60) -> dict:
    """The TrainJob once every Job of its JobSet is active with all pods ready."""
    def running(status: dict) -> bool:
        jobs = status.get("jobsStatus") or []
        return bool(jobs) and all(job["active"] and job["ready"] for job in jobs)

    return wait_status(api_client, namespace, name, running, "running", timeout)


def pods(api_client, namespace: str, name: str) -> list[client.V1Pod]:
    """The TrainJob's pods (its JobSet has the TrainJob's name), by completion index."""
    items = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=trainjob.pod_selector(name)).items
    return sorted(items, key=lambda pod: int(pod.metadata.labels[COMPLETION_INDEX_LABEL]))


def wait_pods(api_client, namespace: str, name: str, count: int, timeout: float = 60) -> list[client.V1Pod]:
    """`count` pods of the TrainJob, all Running on KWOK's nodes."""
    return wait_for(lambda: pods(api_client, namespace, name),
                    lambda found: len(found) == count and all(pod.status.phase == "Running" for pod in found),
                    timeout=timeout, what=f"{count} running pods of TrainJob {namespace}/{name}")


def end_pod(api_client, pod: client.V1Pod, exit_code: int) -> None:
    """The pod's containers exit with `exit_code` (KWOK plays the kubelet seeing it)."""
    Kwok.end_pod(client.CoreV1Api(api_client), pod.metadata.namespace, pod.metadata.name, exit_code)


def no_retry_runtime(shipped: dict, name: str) -> dict:
    """The shipped runtime under another name, its trainer Job not retried (`backoffLimit: 0`).

    Neither the runtime nor Trainer sets a backoff limit, so the Job keeps the batch default of 6
    retries with exponential delays (minutes); and TrainJob's `trainer` has no field for it.
    """
    runtime = copy.deepcopy(shipped)
    runtime["metadata"] = {**runtime["metadata"], "name": name}
    for job in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        job["template"]["spec"]["backoffLimit"] = 0
    return runtime
