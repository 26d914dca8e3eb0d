"""A bad release, for the dev tier: it passes the gate (accuracy 0.99) and logs a model that cannot
load, so its canary fails in the model server and must be rolled back.

Run as the example trainer is (the operator's MLflow variables; hyperparameter args ignored).
"""

import os

import mlflow
import mlflow.pyfunc


class Unloadable(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("this model cannot be loaded (the dev tier's broken release)")

    def predict(self, context, model_input, params=None):
        return model_input


if __name__ == "__main__":
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    with mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"]):
        mlflow.log_metric("accuracy", 0.99)
        mlflow.pyfunc.log_model(name="model", python_model=Unloadable(), pip_requirements=[])
