"""Restart safety: the operator is stopped or killed between every pair of stages and in the
middle of them; afterwards there is exactly one child of each kind, one KFP run, one MLflow run
and one model version for the generation."""

from __future__ import annotations

import time


from e2e import manifests
from e2e.players import assert_trained_and_registered_once, train_into_run
from e2e.test_full_path import only_run, pipeline_config_map
from e2e.test_lifecycle import _condition, _phase, create
from harness.kfp_fake import KfpFake


def settle() -> None:
    """Gives a restarted operator time to act on what it finds (and to wrongly create twice)."""
    time.sleep(3)


def test_restarts_create_nothing_twice(api_client, namespace, players, operator, mlflow_server, model_name,
                                       kfp: KfpFake):
    pipeline_config_map(api_client, namespace)
    create(api_client, namespace, manifests.full("churn", model_name, kfp.url))

    # Pipeline stage: crash right after submission, then restart mid-stage.
    players.wait_td("churn", lambda td: (td.get("status", {}).get("pipeline") or {}).get("runId"))
    operator.kill()
    operator.start()
    settle()
    run = only_run(kfp)
    # Between pipeline and tuning: the run finishes while the operator is down.
    operator.stop()
    kfp.set_run_state(run["run_id"], "SUCCEEDED")
    operator.start()
    players.wait_child("kubeflow.org", "v1beta1", "experiments", "churn-g1-tune")
    # Tuning: crash mid-stage, restart, and finish the search while it is down.
    operator.kill()
    operator.start()
    settle()
    operator.stop()
    players.experiment("churn-g1-tune", "Succeeded", best={"lr": "0.05", "batch_size": "32"})
    operator.start()
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    # Training: crash mid-stage; the job finishes while the operator is down.
    operator.kill()
    operator.start()
    settle()
    operator.stop()
    train_into_run(job, {"accuracy": 0.93})
    players.pytorchjob("churn-g1-train", "Succeeded")
    operator.start()
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    # Deploying: crash, restart, then KServe reports ready.
    operator.kill()
    operator.start()
    settle()
    players.inferenceservice("churn", ready=True)
    td = players.wait_td("churn", _phase("Ready"))
    operator.restart()  # a restart after Ready changes nothing
    settle()

    assert operator.starts == 9
    assert len(kfp.runs) == 1
    assert len(players.list("kubeflow.org", "v1beta1", "experiments")) == 1
    assert len(players.list("kubeflow.org", "v1", "pytorchjobs")) == 1
    assert len(players.list("serving.kserve.io", "v1beta1", "inferenceservices")) == 1
    assert_trained_and_registered_once(mlflow_server.url, td, model_name)
    after = players.td("churn")
    assert after["status"] == td["status"], "a restart after Ready rewrote the status"
    assert _condition(after, "Ready")["status"] == "True"
