"""examples/trainer/train.py for real: PyTorch on CPU, the real MLflow server, the operator's own
MLflow code on both sides (it makes the run before training and registers the model after)."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from harness.processes import free_port
from traindeploy.children.pytorchjob import hyperparameter_args
from traindeploy.mlflow_rest import MlflowRest, mlflow_artifacts_to_storage
from trainer.launch import finish, katib_metrics, pod_env, start

pytestmark = pytest.mark.slow

EPOCHS = 8
# As a TrainDeploy's `training.hyperparameters` would carry them; `dropout` is one the trainer
# does not know, which a search space may well contain.
HYPERPARAMETERS = {"lr": "0.01", "epochs": str(EPOCHS), "batch_size": "64", "hidden": "32", "seed": "3",
                   "dropout": "0.2"}
METRIC_NAMES = {"epoch", "loss", "val_loss", "accuracy"}
# Two Gaussian clusters per class, four classes: chance is 0.25, a trained MLP scores about 0.96.
MIN_ACCURACY = 0.9

LOAD_AND_PREDICT = """
import json, sys
import numpy as np
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
print(json.dumps(np.asarray(model.predict(rows)).tolist()))
"""


@pytest.fixture
def operator_run(mlflow_server) -> dict:
    """An experiment and a RUNNING run made the way the operator makes them before training."""
    rest = MlflowRest(mlflow_server.url)
    experiment_name = f"traindeploy-t-{secrets.token_hex(4)}-churn"
    experiment_id = rest.ensure_experiment(experiment_name)[0]
    run = rest.create_run(experiment_id, "churn-g1-train", {"traindeploy.io/uid": secrets.token_hex(8)})
    yield {"experiment_name": experiment_name, "experiment_id": experiment_id, "run_id": run["run_id"],
           "env": {"MLFLOW_TRACKING_URI": mlflow_server.url, "MLFLOW_EXPERIMENT_NAME": experiment_name,
                   "MLFLOW_RUN_ID": run["run_id"]}}
    rest.close()


def check_katib_lines(stdout: str) -> dict[str, float]:
    """Every stdout line is one epoch's sample in Katib's format; returns the last one."""
    samples = katib_metrics(stdout)
    assert [sample.keys() for sample in samples] == [METRIC_NAMES] * EPOCHS, stdout
    assert [sample["epoch"] for sample in samples] == list(range(1, EPOCHS + 1))
    assert samples[-1]["loss"] < samples[0]["loss"], "the training loss did not go down"
    assert samples[-1]["accuracy"] >= MIN_ACCURACY, stdout
    return samples[-1]


def test_trains_on_cpu_into_the_operators_run_and_the_registry_takes_the_model(
        trainer_python, mlflow_server, operator_run, tmp_path):
    token = f"tok-{secrets.token_hex(12)}"
    env = pod_env(**operator_run["env"], MLFLOW_TRACKING_TOKEN=token)
    stdout, stderr = finish(start(trainer_python, ["--device=cpu", *hyperparameter_args(HYPERPARAMETERS)],
                                  env, tmp_path))

    final = check_katib_lines(stdout)
    assert "ignoring unknown arguments: --dropout=0.2" in stderr
    assert token not in stdout + stderr

    rest = MlflowRest(mlflow_server.url)
    run = rest.get_run(operator_run["run_id"])
    assert run["status"] == "FINISHED"
    assert run["tags"]["traindeploy.io/uid"], "the trainer made a run of its own"
    assert run["metrics"]["accuracy"] == pytest.approx(final["accuracy"], abs=1e-4)
    assert run["metrics"]["loss"] == pytest.approx(final["loss"], abs=1e-4)
    assert run["params"] == {"lr": "0.01", "epochs": str(EPOCHS), "batch_size": "64", "hidden": "32",
                             "seed": "3", "samples": "4000", "world_size": "1", "device": "cpu"}
    history = MlflowClient(mlflow_server.url).get_metric_history(run["run_id"], "accuracy")
    assert sorted(metric.step for metric in history) == list(range(1, EPOCHS + 1))

    # What the operator's Registering stage does with the run (reconciler._stage_registering).
    logged = rest.logged_model_for_run(run)
    assert logged is not None, "the run logged no model the operator can find"
    assert (logged["name"], logged["status"]) == ("model", "READY")
    model_name = f"trainer-test-{secrets.token_hex(4)}"
    rest.ensure_registered_model(model_name)
    version = rest.create_model_version(model_name, f"models:/{logged['model_id']}", run["run_id"],
                                        model_id=logged["model_id"], tags={"traindeploy.io/uid": "t"})
    assert (version["version"], version["status"], version["run_id"]) == ("1", "READY", run["run_id"])
    storage = mlflow_artifacts_to_storage(rest.download_uri(model_name, "1"), mlflow_server.artifacts_dir.as_uri())
    assert storage.startswith(mlflow_server.artifacts_dir.as_uri()), storage
    model_dir = Path(storage.removeprefix("file://"))
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert {"pytorch", "python_function"} <= set(mlmodel["flavors"])
    assert mlmodel["model_id"] == logged["model_id"]

    # What a server does with those files: load them (no trainer code needed) and predict.
    predicted = subprocess.run([str(trainer_python), "-c", LOAD_AND_PREDICT, str(model_dir)], env=pod_env(),
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 0, predicted.stderr[-4000:]
    probabilities = json.loads(predicted.stdout)
    assert len(probabilities) == 3 and all(len(row) == 4 for row in probabilities)
    assert [sum(row) for row in probabilities] == pytest.approx([1.0] * 3, abs=1e-5)


def _pytorchjob_env(rank: int, port: int) -> dict[str, str]:
    """What the Training Operator sets on Master (rank 0) and Worker 0 (rank 1)."""
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
            "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port), "PET_NODE_RANK": str(rank),
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1"}


def _trainer_v2_env(rank: int, port: int) -> dict[str, str]:
    """What Trainer v2's torch runtime sets for torchrun; the script runs without torchrun here."""
    return {"PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port), "PET_NODE_RANK": str(rank),
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1"}


@pytest.mark.parametrize("launcher", [_pytorchjob_env, _trainer_v2_env], ids=["pytorchjob", "trainjob"])
def test_two_processes_train_with_gloo_and_only_rank_0_reports(launcher, trainer_python, mlflow_server,
                                                               operator_run, tmp_path):
    port = free_port()
    args = ["--device=cpu", *hyperparameter_args({key: value for key, value in HYPERPARAMETERS.items()
                                                   if key != "dropout"})]
    procs = [start(trainer_python, args, pod_env(**operator_run["env"], **launcher(rank, port)), tmp_path)
             for rank in (0, 1)]
    try:
        (stdout0, stderr0), (stdout1, stderr1) = [finish(proc) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    check_katib_lines(stdout0)
    assert "on 2 process(es)" in stderr0
    assert stdout1 == "", "only the master prints metrics (Katib reads the master pod)"
    assert "MLflow" not in stderr1

    rest = MlflowRest(mlflow_server.url)
    run = rest.get_run(operator_run["run_id"])
    assert run["status"] == "FINISHED"
    assert run["params"]["world_size"] == "2"
    client = MlflowClient(mlflow_server.url)
    # Rank 1 logged nothing: one value per epoch, one model, no second run.
    assert len(client.get_metric_history(run["run_id"], "loss")) == EPOCHS
    assert len(client.search_logged_models([operator_run["experiment_id"]])) == 1
    assert len(client.search_runs([operator_run["experiment_id"]])) == 1
