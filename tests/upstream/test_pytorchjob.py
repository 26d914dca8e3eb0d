"""PyTorchJobs from our builder, reconciled by the real Training Operator v1.9.2.

Pods and Services come from the controller, pods run on KWOK's fake GPU nodes, and the status
our reader interprets is the one the controller wrote.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from children.samples import GPU, INJECTED_ENV, TRAINING, meta
from harness.upstream import wait_for
from traindeploy.children import FAILED, RUNNING, SUCCEEDED, pytorchjob

from . import pytorchjobs
from .conftest import GPUS_PER_NODE, NODES

pytestmark = pytest.mark.slow

MASTER_PORT = "23456"  # the port the controller's defaulter gives the `pytorch` container


def _create(api_client, namespace: str, name: str, training: dict) -> dict:
    built = pytorchjob.build(meta(name, namespace), training, env=INJECTED_ENV,
                             hyperparameters=training.get("hyperparameters", {}), gpu_resource=GPU)
    pytorchjobs.create(api_client, built)
    return built


def _conditions(job: dict) -> list[tuple[str, str, str, str]]:
    return [(c["type"], c["status"], c["reason"], c["message"]) for c in job["status"]["conditions"]]


def _event_reasons(api_client, namespace: str, name: str) -> set[str]:
    return {event.reason for event in client.CoreV1Api(api_client).list_namespaced_event(namespace).items
            if event.involved_object.kind == "PyTorchJob" and event.involved_object.name == name}


def test_full_job_gets_pods_with_the_injected_env_and_succeeds(api_client, training_operator, namespace):
    """Every field the builder maps is admitted by the real webhook; the controller makes one pod
    and one headless Service per replica, injects the rendezvous env next to ours, and writes
    Created, Running, then Succeeded once the Master exits 0."""
    name = "churn-g3"
    _create(api_client, namespace, name, TRAINING)
    found = pytorchjobs.wait_pods(api_client, namespace, name, count=1 + TRAINING["workers"])
    assert set(found) == {f"{name}-master-0", f"{name}-worker-0", f"{name}-worker-1"}
    world_size = str(1 + TRAINING["workers"])
    for pod_name, pod in found.items():
        rank = "0" if "-master-" in pod_name else str(int(pod_name.rsplit("-", 1)[1]) + 1)
        assert pod.spec.node_name in NODES
        assert pod.spec.service_account_name == TRAINING["serviceAccountName"]
        assert pod.spec.node_selector == TRAINING["nodeSelector"]
        (container,) = [c for c in pod.spec.containers if c.name == "pytorch"]
        assert container.resources.limits[GPU] == str(TRAINING["gpus"])
        assert container.args == ["--epochs=3", "--batch_size=64", "--lr=0.01"]
        env = pytorchjobs.env_of(pod)
        # Ours, user entries first and the operator's MLflow settings winning a shadowed name.
        assert env["DATA_DIR"] == "/data" and env["MLFLOW_RUN_NAME"] == "churn-g3"
        assert env["MLFLOW_TRACKING_TOKEN"]["secret_key_ref"]["name"] == "mlflow-credentials"
        # The controller's.
        assert {key: env.get(key) for key in (
            "PYTHONUNBUFFERED", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_MASTER_ADDR",
            "PET_MASTER_PORT", "PET_NODE_RANK", "PET_NNODES", "PET_NPROC_PER_NODE")} == {
            "PYTHONUNBUFFERED": "1", "MASTER_ADDR": f"{name}-master-0", "MASTER_PORT": MASTER_PORT,
            "WORLD_SIZE": world_size, "RANK": rank, "PET_MASTER_ADDR": f"{name}-master-0",
            "PET_MASTER_PORT": MASTER_PORT, "PET_NODE_RANK": rank, "PET_NNODES": world_size,
            "PET_NPROC_PER_NODE": "auto"}
        assert pod.metadata.labels["training.kubeflow.org/replica-type"] in ("master", "worker")
    assert found[f"{name}-master-0"].metadata.labels["training.kubeflow.org/job-role"] == "master"
    # Workers wait for the Master's DNS name in an init container of the controller's.
    assert [c.name for c in found[f"{name}-worker-0"].spec.init_containers] == ["init-pytorch"]
    services = client.CoreV1Api(api_client).list_namespaced_service(namespace).items
    assert {s.metadata.name: s.spec.cluster_ip for s in services} == {pod: "None" for pod in found}

    running = pytorchjobs.wait_condition(api_client, namespace, name, "Running")
    assert _conditions(running) == [
        ("Created", "True", "PyTorchJobCreated", f"PyTorchJob {name} is created."),
        ("Running", "True", "PyTorchJobRunning", f"PyTorchJob {name} is running.")]
    state = pytorchjob.read(running)
    assert (state.phase, state.reason) == (RUNNING, "PyTorchJobRunning")

    pytorchjobs.end_master(api_client, namespace, name, exit_code=0)
    done = pytorchjobs.wait_condition(api_client, namespace, name, "Succeeded")
    assert _conditions(done) == [
        ("Created", "True", "PyTorchJobCreated", f"PyTorchJob {name} is created."),
        ("Running", "False", "PyTorchJobRunning", f"PyTorchJob {name} is running."),
        ("Succeeded", "True", "PyTorchJobSucceeded", f"PyTorchJob {name} is successfully completed.")]
    state = pytorchjob.read(done)
    assert (state.phase, state.reason, state.message) == (
        SUCCEEDED, "PyTorchJobSucceeded", f"PyTorchJob {name} is successfully completed.")
    assert state.outputs == {"startTime": done["status"]["startTime"],
                             "completionTime": done["status"]["completionTime"]}
    assert {"PyTorchJobSucceeded", "SuccessfulCreatePod", "SuccessfulCreateService"} <= _event_reasons(
        api_client, namespace, name)


def test_a_master_that_fails_under_restart_policy_never_fails_the_job(api_client, training_operator,
                                                                       namespace):
    name = "churn-g1"
    _create(api_client, namespace, name, {"image": "ghcr.io/example/train:1.2", "restartPolicy": "Never"})
    pytorchjobs.wait_condition(api_client, namespace, name, "Running")
    pytorchjobs.end_master(api_client, namespace, name, exit_code=1)
    failed = pytorchjobs.wait_condition(api_client, namespace, name, "Failed")
    message = f"PyTorchJob {name} is failed because 1 Master replica(s) failed."
    assert _conditions(failed)[1:] == [
        ("Running", "False", "PyTorchJobRunning", f"PyTorchJob {name} is running."),
        ("Failed", "True", "PyTorchJobFailed", message)]
    state = pytorchjob.read(failed)
    assert (state.phase, state.reason, state.message) == (FAILED, "PyTorchJobFailed", message)
    assert "completionTime" in state.outputs


def test_a_master_that_fails_under_the_default_on_failure_is_restarted(api_client, training_operator,
                                                                       namespace):
    """The builder's default restartPolicy (OnFailure): the controller deletes the failed Master
    and makes a new one (Restarting, then Running again); the job does not fail."""
    name = "churn-g2"
    _create(api_client, namespace, name, {"image": "ghcr.io/example/train:1.2"})
    first = pytorchjobs.wait_pods(api_client, namespace, name, count=1)[f"{name}-master-0"]
    pytorchjobs.wait_condition(api_client, namespace, name, "Running")
    pytorchjobs.end_master(api_client, namespace, name, exit_code=1)
    wait_for(lambda: pytorchjobs.pods(api_client, namespace, name),
             lambda found: any(pod.metadata.uid != first.metadata.uid and pod.status.phase == "Running"
                               for pod in found.values()), what="a new Running Master")
    assert "PyTorchJobRestarting" in _event_reasons(api_client, namespace, name)
    job = pytorchjobs.wait_condition(api_client, namespace, name, "Running")
    assert "Failed" not in pytorchjobs.true_conditions(job)
    assert pytorchjob.read(job).phase == RUNNING


def test_a_job_asking_for_more_gpus_than_a_node_has_stays_pending(api_client, training_operator, namespace):
    """The scheduler leaves its pods Pending. The controller writes only Created (and a Warning
    Event `Unschedulable` with the scheduler's message), so the job reads as under way."""
    name = "churn-big"
    _create(api_client, namespace, name, {"image": "ghcr.io/example/train:1.2", "gpus": GPUS_PER_NODE + 1})
    pods = wait_for(lambda: pytorchjobs.pods(api_client, namespace, name),
                    lambda found: len(found) == 1 and all(
                        any(c.reason == "Unschedulable" for c in pod.status.conditions or [])
                        for pod in found.values()), what="the Master unschedulable")
    assert [pod.status.phase for pod in pods.values()] == ["Pending"]
    wait_for(lambda: _event_reasons(api_client, namespace, name), lambda reasons: "Unschedulable" in reasons,
             what="the controller's Unschedulable Event")
    job = pytorchjobs.get(api_client, namespace, name)
    assert _conditions(job) == [("Created", "True", "PyTorchJobCreated", f"PyTorchJob {name} is created.")]
    state = pytorchjob.read(job)
    assert (state.phase, state.reason) == (RUNNING, "PyTorchJobCreated")


def test_the_webhook_refuses_a_job_without_a_pytorch_container(api_client, training_operator, namespace):
    built = pytorchjob.build(meta("churn-bad", namespace), {"image": "i:1"}, env=[], hyperparameters={},
                             gpu_resource=GPU)
    built["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"] = "trainer"
    with pytest.raises(ApiException) as refused:
        pytorchjobs.create(api_client, built)
    # controller-runtime answers a refused validation with 403 Forbidden and the field errors.
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    webhook = "validator.pytorchjob.training-operator.kubeflow.org"
    assert message.startswith(f'admission webhook "{webhook}" denied')
    assert "must have at least one container with name pytorch" in message
