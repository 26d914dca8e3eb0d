"""TrainJobs from our builder, reconciled by the real Kubeflow Trainer v2.3.0 over JobSet v0.12.0.

The TrainJob passes Trainer's webhooks; Trainer makes a JobSet, JobSet a batch Job, the job
controller its pods, which run on KWOK's fake GPU nodes; the status our reader interprets is the
one Trainer copied from the JobSet. The last tests hold the fast tiers' stand-in
(tests/e2e/players.py, traindeploy/dev/status/training.py) to what the real controllers wrote.
"""

from __future__ import annotations

import copy
import secrets

import pytest
import yaml
from kubernetes import client

from children.samples import GPU, TRAINING_TRAINJOB
from harness.upstream import wait_for
from traindeploy import kubectl_plugin
from traindeploy.children import FAILED, RUNNING, SUCCEEDED, katib, trainjob
from traindeploy.dev.jobs import torch_distributed_runtime

from . import trainjobs
from .conftest import NODES
from .stand_ins import condition_shapes, stand_in_status, throwaway_namespaces

pytestmark = pytest.mark.slow

SHIPPED_RUNTIME = "torch_distributed.yaml"
NO_RETRY = "torch-distributed-no-retry"
MASTER_PORT = "29500"  # the trainer container's port in Trainer's torch plugin
BOTH_FIELDS = frozenset({"runtimePatches", "activeDeadlineSeconds"})
COMPLETE_MESSAGE = "jobset completed successfully"


def _failed_message(name: str) -> str:
    return f"jobset failed due to one or more job failures (first failed job: {name}-node-0)"


@pytest.fixture(scope="module")
def no_retry_runtime(trainer) -> str:
    """The shipped torch-distributed runtime whose node Job is not retried, so that one failed pod
    fails the TrainJob at once (see trainjobs.no_retry_runtime)."""
    trainer.install_runtime(trainjobs.no_retry_runtime(trainer.runtime(SHIPPED_RUNTIME), NO_RETRY))
    return NO_RETRY


def _true(job: dict) -> list[tuple[str, str, str]]:
    return [(c["type"], c["reason"], c["message"]) for c in job["status"].get("conditions") or []
            if c["status"] == "True"]


def test_our_trainjob_runs_on_gpu_pods_with_the_trainers_env_and_completes(api_client, apiserver, trainer, namespace):
    """Every field the builder maps is admitted by the real webhooks; Trainer makes a JobSet with
    one Job of numNodes pods, puts our GPUs, env and pod scheduling on them next to its PET_* env,
    and writes Complete from the JobSet once every pod exits 0."""
    name = "churn-g3"
    built = trainjobs.build(apiserver, namespace, name, TRAINING_TRAINJOB)
    assert set(built["spec"]) >= BOTH_FIELDS  # the served CRD has both: nothing was left out
    stored = trainjobs.create(api_client, built)
    # Trainer's defaulter stamps our runtime patch and, answering with the object as its Go types
    # write it, turns our integer GPU count into a quantity string; the CRD adds its defaults.
    # Nothing else changes (the operator compares no TrainJob field it wrote, so none of this
    # makes it write again).
    (patch,) = stored["spec"]["runtimePatches"]
    assert patch.pop("time")
    expected = copy.deepcopy(built["spec"])
    expected["trainer"]["resourcesPerNode"]["limits"][GPU] = str(TRAINING_TRAINJOB["gpus"])
    assert stored["spec"] == {**expected, "suspend": False, "managedBy": "trainer.kubeflow.org/trainjob-controller"}

    nodes = 1 + TRAINING_TRAINJOB["workers"]
    found = trainjobs.wait_pods(api_client, namespace, name, count=nodes)
    jobset = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", name)
    (owner,) = jobset["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TrainJob", name, True)
    (job,) = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert (job.metadata.name, job.spec.parallelism, job.spec.completions) == (f"{name}-node-0", nodes, nodes)
    for rank, pod in enumerate(found):
        assert pod.spec.node_name in NODES
        assert pod.spec.service_account_name == TRAINING_TRAINJOB["serviceAccountName"]
        assert pod.spec.node_selector == TRAINING_TRAINJOB["nodeSelector"]
        assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations if t.key == GPU] == [
            (GPU, "Exists", "NoSchedule")]
        (container,) = pod.spec.containers
        assert container.name == trainjob.NODE
        assert container.resources.limits == {GPU: str(TRAINING_TRAINJOB["gpus"]), "memory": "8Gi"}
        assert container.command == TRAINING_TRAINJOB["command"]
        assert container.args == ["--epochs=3", "--batch_size=64", "--lr=0.01"]
        env = {item.name: item.value if item.value_from is None else item.value_from.to_dict()
               for item in container.env}
        # Ours, user entries first and the operator's MLflow settings winning a shadowed name.
        assert env["DATA_DIR"] == "/data" and env["MLFLOW_RUN_NAME"] == "churn-g3"
        assert env["MLFLOW_TRACKING_TOKEN"]["secret_key_ref"]["name"] == "mlflow-credentials"
        # Trainer's torch plugin: torchrun's settings, the rank from the Job's completion index.
        assert {key: env[key] for key in ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_MASTER_ADDR",
                                          "PET_MASTER_PORT")} == {
            "PET_NNODES": str(nodes), "PET_NPROC_PER_NODE": "auto",
            "PET_MASTER_ADDR": f"{name}-node-0-0.{name}", "PET_MASTER_PORT": MASTER_PORT}
        assert env["PET_NODE_RANK"]["field_ref"]["field_path"] == (
            "metadata.annotations['batch.kubernetes.io/job-completion-index']")
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == str(rank)

    # What the kubectl plugin (logs) and Katib's trial template assume of the trainer's pods holds:
    # the rank-0 pod is found by the JobSet's labels, and its container is `node`.
    source = kubectl_plugin.log_source({"metadata": {"name": "churn", "namespace": namespace},
                                        "status": {"training": {"kind": trainjob.KIND, "name": name}}})
    listed = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=source.selector).items
    picked = kubectl_plugin.pick_log_pod(source, [api_client.sanitize_for_serialization(pod) for pod in listed])
    assert picked["metadata"]["name"] == found[0].metadata.name
    assert kubectl_plugin.log_container(source, picked) == trainjob.NODE
    primary = katib.BACKENDS[trainjob.KIND]["primaryPodLabels"]
    assert [pod.metadata.name for pod in found if primary.items() <= pod.metadata.labels.items()] == [
        found[0].metadata.name]

    running = trainjobs.wait_running(api_client, namespace, name)
    assert trainjob.read(running).phase == RUNNING
    for pod in found:
        trainjobs.end_pod(api_client, pod, exit_code=0)
    done = trainjobs.wait_condition(api_client, namespace, name, "Complete")
    assert _true(done) == [("Complete", "AllJobsCompleted", COMPLETE_MESSAGE)]
    state = trainjob.read(done)
    assert (state.phase, state.reason, state.message) == (SUCCEEDED, "AllJobsCompleted", COMPLETE_MESSAGE)


def test_a_failing_node_pod_fails_the_trainjob(api_client, apiserver, trainer, no_retry_runtime, namespace):
    name = "churn-g1"
    training = {"backend": "TrainJob", "image": "ghcr.io/example/train:1.2", "command": ["python3", "train.py"],
                "workers": 1, "gpus": 1, "runtimeRef": {"name": no_retry_runtime}}
    trainjobs.create(api_client, trainjobs.build(apiserver, namespace, name, training))
    first, _ = trainjobs.wait_pods(api_client, namespace, name, count=2)
    trainjobs.end_pod(api_client, first, exit_code=1)
    failed = trainjobs.wait_condition(api_client, namespace, name, "Failed")
    assert _true(failed) == [("Failed", "FailedJobs", _failed_message(name))]
    state = trainjob.read(failed)
    assert (state.phase, state.reason, state.message) == (FAILED, "FailedJobs", _failed_message(name))
    # The Job ran out of retries, and JobSet's default failure policy does not restart it.
    (job,) = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert [(c.type, c.reason) for c in job.status.conditions if c.type == "Failed"] == [
        ("Failed", "BackoffLimitExceeded")]


def test_an_active_deadline_fails_the_trainjob_and_deletes_its_jobset(api_client, apiserver, trainer, namespace):
    """spec.activeDeadlineSeconds (the operator writes spec.training's): Trainer fails the running
    TrainJob itself and deletes its JobSet, so that the pods give their GPUs back."""
    name = "churn-g2"
    training = {"backend": "TrainJob", "image": "ghcr.io/example/train:1.2", "gpus": 1, "activeDeadlineSeconds": 3}
    built = trainjobs.build(apiserver, namespace, name, training)
    assert built["spec"]["activeDeadlineSeconds"] == 3
    trainjobs.create(api_client, built)
    trainjobs.wait_pods(api_client, namespace, name, count=1)
    failed = trainjobs.wait_condition(api_client, namespace, name, "Failed", timeout=30)
    message = "TrainJob exceeded its active deadline"
    assert _true(failed) == [("Failed", "DeadlineExceeded", message)]
    state = trainjob.read(failed)
    assert (state.phase, state.reason, state.message) == (FAILED, "DeadlineExceeded", message)
    # The garbage collector then takes the Job and its pods (20 to 30 s here, not waited for).
    custom = client.CustomObjectsApi(api_client)
    wait_for(lambda: custom.list_namespaced_custom_object("jobset.x-k8s.io", "v1alpha2", namespace, "jobsets"),
             lambda listed: not listed["items"], timeout=10, what=f"Trainer to delete the JobSet of {name}")


def test_the_operator_finds_the_v2_3_fields_in_the_real_crd(api_client, apiserver, trainer, namespace):
    """runtimePatches and activeDeadlineSeconds (needed for pod scheduling and the deadline, else
    TrainerCapabilityMissing) are read from Trainer's own CRD: the file in the module and the CRD
    the apiserver serves from it."""
    (crd_file,) = [path for path in trainer.crd_files if path.name == "trainer.kubeflow.org_trainjobs.yaml"]
    assert trainjob.served_fields(yaml.safe_load(crd_file.read_text())) == BOTH_FIELDS
    served = client.ApiextensionsV1Api(api_client).read_custom_resource_definition(trainjob.CRD_NAME)
    assert trainjob.served_fields(api_client.sanitize_for_serialization(served)) == BOTH_FIELDS
    # The training stage's check on this cluster: nothing missing, the runtime's trainer step.
    assert set(trainjob.needed_fields(TRAINING_TRAINJOB)) == BOTH_FIELDS
    assert trainjobs.operator_options(apiserver, namespace, TRAINING_TRAINJOB) == {
        "step": trainjob.NODE, "fields": BOTH_FIELDS}


def test_the_dev_runtime_is_the_shipped_one_but_for_the_image(api_client, trainer):
    """`traindeploy dev` and the fast tiers install their own torch-distributed runtime; the real
    Trainer's webhook admits it, and it differs from the module's only in the image."""
    shipped, ours = trainer.runtime(SHIPPED_RUNTIME), torch_distributed_runtime()

    def without_image(runtime: dict) -> dict:
        runtime = yaml.safe_load(yaml.safe_dump(runtime))
        for job in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
            for container in job["template"]["spec"]["template"]["spec"]["containers"]:
                container.pop("image")
        return runtime

    assert without_image(ours) == without_image(shipped)
    assert trainjob.trainer_step(ours) == trainjob.trainer_step(shipped) == trainjob.NODE
    probe = torch_distributed_runtime(f"dev-runtime-{secrets.token_hex(3)}")
    client.CustomObjectsApi(api_client).create_cluster_custom_object(
        trainjob.GROUP, trainjob.VERSION, "clustertrainingruntimes", probe, dry_run="All")


# -- the stand-in against the real controllers ------------------------------------------------------

JOB = "churn-g1-train"
OUTCOMES = ("Running", "Complete", "Failed")


@pytest.fixture(scope="module")
def real_statuses(api_client, apiserver, trainer, no_retry_runtime) -> dict[str, dict]:
    """What the real controllers wrote for a one-node TrainJob: Running, then Complete (the pod
    exits 0) in one namespace, Failed (it exits 1) in another."""
    statuses: dict[str, dict] = {}
    with throwaway_namespaces(api_client) as new_namespace:
        for final, exit_code, runtime in (("Complete", 0, "torch-distributed"), ("Failed", 1, no_retry_runtime)):
            namespace = new_namespace()
            training = {"backend": "TrainJob", "image": "ghcr.io/example/train:1.2", "gpus": 1,
                        "runtimeRef": {"name": runtime}}
            trainjobs.create(api_client, trainjobs.build(apiserver, namespace, JOB, training))
            (pod,) = trainjobs.wait_pods(api_client, namespace, JOB, count=1)
            statuses.setdefault("Running", trainjobs.wait_running(api_client, namespace, JOB)["status"])
            trainjobs.end_pod(api_client, pod, exit_code)
            statuses[final] = trainjobs.wait_condition(api_client, namespace, JOB, final)["status"]
        yield statuses


def _stand_in_status(outcome: str) -> dict:
    return stand_in_status(trainjob, JOB, lambda players: players.trainjob(JOB, outcome=outcome))


def _shape(status: dict) -> dict:
    """Every field the operator reads (trainjob.read): the conditions and the Job counts; of the
    conditions also which fields they have. Not the times."""
    return {
        "fields": sorted(status),
        "conditions": condition_shapes(status),
        "jobsStatus": status["jobsStatus"],
    }


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_stand_in_status_has_the_real_controllers_shape(real_statuses, outcome):
    assert _shape(_stand_in_status(outcome)) == _shape(real_statuses[outcome])


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_reader_gives_the_same_verdict_on_both(real_statuses, outcome):
    real = trainjob.read({"status": real_statuses[outcome]})
    stand_in = trainjob.read({"status": _stand_in_status(outcome)})
    assert (stand_in.phase, stand_in.reason, stand_in.message) == (real.phase, real.reason, real.message)
