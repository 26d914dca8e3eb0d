"""The fast tiers' stand-in for the Training Operator (tests/e2e/players.py) against the real one.

For each state both can put a job in (Running, Succeeded, Failed), the status the stand-in writes
must have the shape the real controller wrote for the same job: the same conditions in the same
order with the same type, status, reason, message and fields, the same top-level fields, the same
Master counters, and the same verdict from our reader. Fields the operator does not read may
differ: the real controller also writes each replica's label `selector`, and a `Worker` entry
when the job has Workers (the stand-in plays single-replica jobs, as examples/traindeploys/minimal.yaml).
"""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client

from children.samples import GPU, meta
from e2e.players import Players
from traindeploy.children import pytorchjob

from . import pytorchjobs

pytestmark = pytest.mark.slow

JOB = "churn-g1-train"
OUTCOMES = ("Running", "Succeeded", "Failed")


@pytest.fixture(scope="module")
def real_statuses(api_client, training_operator) -> dict[str, dict]:
    """What the real controller wrote for a single-replica job: Running, then Succeeded (Master
    exits 0) in one namespace, Failed (exits 1 under restartPolicy Never) in another."""
    core = client.CoreV1Api(api_client)
    statuses: dict[str, dict] = {}
    namespaces = []
    try:
        for final, exit_code, restart_policy in (("Succeeded", 0, "OnFailure"), ("Failed", 1, "Never")):
            namespace = f"t-{secrets.token_hex(4)}"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            namespaces.append(namespace)
            pytorchjobs.create(api_client, pytorchjob.build(
                meta(JOB, namespace), {"image": "ghcr.io/example/train:1.2", "restartPolicy": restart_policy},
                env=[], hyperparameters={}, gpu_resource=GPU))
            pytorchjobs.wait_pods(api_client, namespace, JOB, count=1)
            running = pytorchjobs.wait_condition(api_client, namespace, JOB, "Running")
            statuses.setdefault("Running", running["status"])
            pytorchjobs.end_master(api_client, namespace, JOB, exit_code)
            statuses[final] = pytorchjobs.wait_condition(api_client, namespace, JOB, final)["status"]
        yield statuses
    finally:
        for namespace in namespaces:
            core.delete_namespace(namespace)


class _Recorder:
    """Takes the place of the stand-in's CustomObjectsApi: keeps the status it would write."""

    def __init__(self) -> None:
        self.written: list[dict] = []

    def patch_namespaced_custom_object_status(self, group, version, namespace, plural, name, body):
        assert (group, version, plural, name) == (
            pytorchjob.GROUP, pytorchjob.VERSION, pytorchjob.PLURAL, JOB)
        self.written.append(body["status"])


def _stand_in_status(outcome: str) -> dict:
    players = Players(None, "unused")
    players.custom = _Recorder()
    players.pytorchjob(JOB, outcome=outcome)
    (status,) = players.custom.written
    return status


def _shape(status: dict) -> dict:
    master = {key: value for key, value in status["replicaStatuses"]["Master"].items() if key != "selector"}
    return {
        "fields": sorted(status),
        "conditions": [(c["type"], c["status"], c["reason"], c["message"], sorted(c))
                       for c in status["conditions"]],
        "master": master,
    }


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_stand_in_status_has_the_real_controllers_shape(real_statuses, outcome):
    assert _shape(_stand_in_status(outcome)) == _shape(real_statuses[outcome])


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_reader_gives_the_same_verdict_on_both(real_statuses, outcome):
    real = pytorchjob.read({"status": real_statuses[outcome]})
    stand_in = pytorchjob.read({"status": _stand_in_status(outcome)})
    assert (stand_in.phase, stand_in.reason, stand_in.message) == (real.phase, real.reason, real.message)
    assert sorted(stand_in.outputs) == sorted(real.outputs)
