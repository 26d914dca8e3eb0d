"""The real MLflow server logs runs and registers model versions."""

from __future__ import annotations

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[int], params=None) -> list[int]:
        return [2 * value for value in model_input]


def test_client_logs_a_run_and_registers_a_model_version(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    tracking = MlflowClient(mlflow_server.url)
    experiment_id = tracking.create_experiment("foundation-proof")
    run = tracking.create_run(experiment_id, tags={"traindeploy.io/uid": "proof-uid"})
    tracking.log_metric(run.info.run_id, "accuracy", 0.93, step=1)
    with mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=[])
    tracking.set_terminated(run.info.run_id)

    found = tracking.search_runs([experiment_id], filter_string="tags.`traindeploy.io/uid` = 'proof-uid'")
    assert [r.info.run_id for r in found] == [run.info.run_id]
    assert found[0].data.metrics == {"accuracy": 0.93}

    version = mlflow.register_model(info.model_uri, "foundation-proof-model")
    tracking.set_registered_model_alias("foundation-proof-model", "challenger", version.version)
    by_alias = tracking.get_model_version_by_alias("foundation-proof-model", "challenger")
    assert by_alias.version == "1"
    assert by_alias.run_id == run.info.run_id
    assert by_alias.status == "READY"
    # The artifacts are really on the server's artifact store.
    assert any(mlflow_server.artifacts_dir.rglob("MLmodel"))
    loaded = mlflow.pyfunc.load_model("models:/foundation-proof-model@challenger")
    assert loaded.predict([1, 2]) == [2, 4]
