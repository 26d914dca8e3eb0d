"""Experiments, runs, metrics and logged models against the real MLflow server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from traindeploy.mlflow_rest import MlflowApiError, MlflowRest, mlflow_artifacts_to_storage

from .conftest import log_model_in_run, unique


def test_experiment_get_or_create_is_idempotent(rest):
    name = unique("traindeploy/ns/exp")
    first, created = rest.ensure_experiment(name)
    assert created
    assert rest.ensure_experiment(name) == (first, False)  # found: the caller then looks for its run
    assert MlflowClient(rest.base_url).get_experiment_by_name(name).experiment_id == first


def test_experiment_creation_race_gives_one_experiment(mlflow_server):
    name = unique("traindeploy/ns/race")
    ids: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        with MlflowRest(mlflow_server.url) as client:
            try:
                ids.append(client.ensure_experiment(name)[0])
            except BaseException as exc:   # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(ids) == 4 and len(set(ids)) == 1


def test_deleted_experiment_is_reported_not_reused(rest, tracking):
    name = unique("traindeploy/ns/deleted")
    tracking.delete_experiment(rest.ensure_experiment(name)[0])
    with pytest.raises(MlflowApiError) as caught:
        rest.ensure_experiment(name)[0]
    assert caught.value.error_code == "INVALID_STATE"


def _reconcile(url: str, experiment: str, uid: str, cycle: str) -> str:
    """What a fresh operator process does: find the cycle's run, or create it."""
    with MlflowRest(url) as client:
        experiment_id = client.ensure_experiment(experiment)[0]
        tags = {"traindeploy.io/uid": uid, "traindeploy.io/cycle": cycle}
        run = client.find_run(experiment_id, tags) or client.create_run(experiment_id, f"cycle-{cycle}", tags)
        return run["run_id"]


def test_two_restarts_find_the_same_run(mlflow_server, tracking):
    experiment, uid = unique("traindeploy/ns/idem"), unique("uid")
    first = _reconcile(mlflow_server.url, experiment, uid, "4")
    second = _reconcile(mlflow_server.url, experiment, uid, "4")
    assert first == second
    experiment_id = tracking.get_experiment_by_name(experiment).experiment_id
    assert [run.info.run_id for run in tracking.search_runs([experiment_id])] == [first]
    # Another cycle is another run.
    assert _reconcile(mlflow_server.url, experiment, uid, "5") != first


def test_find_run_needs_every_tag_and_prefers_the_oldest(rest):
    experiment_id = rest.ensure_experiment(unique("traindeploy/ns/oldest"))[0]
    tags = {"traindeploy.io/uid": "u-1", "traindeploy.io/cycle": "7"}
    older = rest.create_run(experiment_id, "a", tags)
    time.sleep(0.01)   # start_time has millisecond resolution
    rest.create_run(experiment_id, "b", tags)
    rest.create_run(experiment_id, "other", {"traindeploy.io/uid": "u-1", "traindeploy.io/cycle": "8"})
    assert rest.find_run(experiment_id, tags)["run_id"] == older["run_id"]
    assert rest.find_run(experiment_id, {"traindeploy.io/uid": "u-1", "traindeploy.io/cycle": "9"}) is None


def test_find_run_skips_deleted_runs(rest, tracking):
    experiment_id = rest.ensure_experiment(unique("traindeploy/ns/deletedrun"))[0]
    tags = {"traindeploy.io/uid": unique("uid")}
    run = rest.create_run(experiment_id, "gone", tags)
    tracking.delete_run(run["run_id"])
    assert rest.find_run(experiment_id, tags) is None


def test_find_run_matches_values_that_cannot_be_quoted(rest):
    experiment_id = rest.ensure_experiment(unique("traindeploy/ns/quotes"))[0]
    awkward = {"team/owner": "it's \"ours\"", "path": "C:\\models\\"}
    run = rest.create_run(experiment_id, "awkward", awkward)
    rest.create_run(experiment_id, "decoy", {"team/owner": "it's", "path": "C:\\models\\"})
    assert rest.find_run(experiment_id, awkward)["run_id"] == run["run_id"]


def test_created_run_is_normalised(rest):
    experiment_id = rest.ensure_experiment(unique("traindeploy/ns/created"))[0]
    run = rest.create_run(experiment_id, "cycle-1", {"traindeploy.io/uid": "u"})
    assert run["status"] == "RUNNING"
    assert run["experiment_id"] == experiment_id
    assert run["run_name"] == "cycle-1"
    assert run["tags"]["traindeploy.io/uid"] == "u"
    assert run["start_time"] > 0
    assert run["metrics"] == {} and run["model_outputs"] == []


def test_get_run_reads_latest_metrics_params_and_outputs(rest, trained):
    run = rest.get_run(trained.run_id)
    assert run["run_id"] == trained.run_id
    assert run["status"] == "FINISHED"
    assert run["metrics"] == {"accuracy": 0.93, "loss": 0.2}
    assert run["params"] == {"lr": "0.01"}
    assert run["model_outputs"] == [trained.model_id]
    assert run["artifact_uri"].startswith("mlflow-artifacts:/")


def test_logged_model_for_run_finds_the_model_files(rest, trained, mlflow_server):
    model = rest.logged_model_for_run(rest.get_run(trained.run_id))
    assert model is not None
    assert model["model_id"] == trained.model_id
    assert model["name"] == "model"
    assert model["status"] == "READY"
    assert model["source_run_id"] == trained.run_id
    # In MLflow 3 the files sit under the experiment's models/<id>/artifacts, not the run's.
    assert model["artifact_location"].endswith(f"/models/{trained.model_id}/artifacts")
    local = mlflow_artifacts_to_storage(model["artifact_location"], str(mlflow_server.artifacts_dir))
    assert local.startswith(str(mlflow_server.artifacts_dir))
    assert (Path(local) / "MLmodel").is_file()
    assert rest.logged_model_for_run(rest.get_run(trained.run_id), name="model")["model_id"] == trained.model_id
    assert rest.logged_model_for_run(rest.get_run(trained.run_id), name="other") is None


def test_logged_model_for_run_prefers_ready_over_newer_pending(rest, tracking):
    experiment_id = rest.ensure_experiment(unique("traindeploy/ns/ready"))[0]
    run = rest.create_run(experiment_id, "cycle-1", {})
    ready = tracking.create_logged_model(experiment_id, name="model", source_run_id=run["run_id"])
    tracking.finalize_logged_model(ready.model_id, "READY")
    time.sleep(0.01)
    pending = tracking.create_logged_model(experiment_id, name="model", source_run_id=run["run_id"])
    found = rest.logged_model_for_run(rest.get_run(run["run_id"]))
    assert found["model_id"] == ready.model_id
    tracking.finalize_logged_model(pending.model_id, "READY")
    # Both READY now: the newest wins.
    assert rest.logged_model_for_run(rest.get_run(run["run_id"]))["model_id"] == pending.model_id


def test_logged_model_for_run_without_a_model_is_none(rest):
    experiment_id = rest.ensure_experiment(unique("traindeploy/ns/nomodel"))[0]
    run = rest.create_run(experiment_id, "cycle-1", {})
    assert rest.logged_model_for_run(run) is None


def test_logged_model_for_a_second_model_name(rest, tracking, mlflow_server):
    experiment_id = rest.ensure_experiment(unique("traindeploy/ns/names"))[0]
    run = rest.create_run(experiment_id, "cycle-1", {})
    tokenizer = tracking.create_logged_model(experiment_id, name="tokenizer", source_run_id=run["run_id"])
    tokenizer_id = tokenizer.model_id
    tracking.finalize_logged_model(tokenizer_id, "READY")
    model_id = log_model_in_run(mlflow_server.url, run["run_id"], name="classifier")
    fetched = rest.get_run(run["run_id"])
    assert rest.logged_model_for_run(fetched, name="classifier")["model_id"] == model_id
    assert rest.logged_model_for_run(fetched, name="tokenizer")["model_id"] == tokenizer_id


def test_a_logged_model_is_found_from_the_run_and_experiment_ids_alone(rest, trained):
    """The registration stage knows both ids from status: no read of the run first."""
    run = rest.get_run(trained.run_id)
    assert rest.logged_model_for_run({"run_id": run["run_id"], "experiment_id": run["experiment_id"]})[
        "model_id"] == trained.model_id
