"""The fast tiers' stand-in for the Training Operator (tests/e2e/players.py) against the real one.

For each state both can put a job in (Running, Succeeded, Failed), the status the stand-in writes
must have the shape the real controller wrote for the same job: the same conditions in the same
order with the same type, status, reason, message and fields, the same top-level fields, the same
Master counters, and the same verdict from our reader. Fields the operator does not read may
differ: the real controller also writes each replica's label `selector`, and a `Worker` entry
when the job has Workers (the stand-in plays single-replica jobs, as examples/traindeploys/minimal.yaml).
"""

from __future__ import annotations

import pytest

from children.samples import GPU, meta
from traindeploy.children import pytorchjob

from . import pytorchjobs
from .stand_ins import condition_shapes, stand_in_status, throwaway_namespaces

pytestmark = pytest.mark.slow

JOB = "churn-g1-train"
OUTCOMES = ("Running", "Succeeded", "Failed")


@pytest.fixture(scope="module")
def real_statuses(api_client, training_operator) -> dict[str, dict]:
    """What the real controller wrote for a single-replica job: Running, then Succeeded (Master
    exits 0) in one namespace, Failed (exits 1 under restartPolicy Never) in another."""
    statuses: dict[str, dict] = {}
    with throwaway_namespaces(api_client) as new_namespace:
        for final, exit_code, restart_policy in (("Succeeded", 0, "OnFailure"), ("Failed", 1, "Never")):
            namespace = new_namespace()
            pytorchjobs.create(api_client, pytorchjob.build(
                meta(JOB, namespace), {"image": "ghcr.io/example/train:1.2", "restartPolicy": restart_policy},
                env=[], hyperparameters={}, gpu_resource=GPU))
            pytorchjobs.wait_pods(api_client, namespace, JOB, count=1)
            running = pytorchjobs.wait_condition(api_client, namespace, JOB, "Running")
            statuses.setdefault("Running", running["status"])
            pytorchjobs.end_master(api_client, namespace, JOB, exit_code)
            statuses[final] = pytorchjobs.wait_condition(api_client, namespace, JOB, final)["status"]
        yield statuses


def _stand_in_status(outcome: str) -> dict:
    return stand_in_status(pytorchjob, JOB, lambda players: players.pytorchjob(JOB, outcome=outcome))


def _shape(status: dict) -> dict:
    master = {key: value for key, value in status["replicaStatuses"]["Master"].items() if key != "selector"}
    return {
        "fields": sorted(status),
        "conditions": condition_shapes(status),
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
