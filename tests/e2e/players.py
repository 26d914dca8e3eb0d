"""The tests play the upstream controllers (status builders shared with `traindeploy dev`:
traindeploy/dev/status/): they write child status exactly as Katib, the
Training Operator, Trainer v2 and KServe write it (see ../shared/reference/UPSTREAM.md), and the
trainer's part: logging metrics and a model into the MLflow run the operator injected."""

from __future__ import annotations

import datetime as dt
import time

import mlflow
import mlflow.pyfunc
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e import kserve_player
from traindeploy.dev.jobs import install_runtime, torch_distributed_runtime
from traindeploy.dev.status import katib as katib_status
from traindeploy.dev.status import training as training_status


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_for(read, predicate=bool, timeout: float = 60.0, what: str = "condition"):
    """Polls `read()` until `predicate(value)`; returns the value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = read()
        except ApiException as error:
            if error.status != 404:
                raise
            value = None
        if value is not None and predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")


class Players:
    def __init__(self, api_client, namespace: str) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    # -- reading -----------------------------------------------------------------------------

    def get(self, group: str, version: str, plural: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(group, version, self.namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def td(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object("traindeploy.io", "v1alpha1", self.namespace,
                                                        "traindeploys", name)

    def list(self, group: str, version: str, plural: str) -> list[dict]:
        return self.custom.list_namespaced_custom_object(group, version, self.namespace, plural)["items"]

    def wait_child(self, group: str, version: str, plural: str, name: str, timeout: float = 60) -> dict:
        return wait_for(lambda: self.get(group, version, plural, name), timeout=timeout,
                        what=f"{plural}/{name} to exist")

    def wait_td(self, name: str, predicate, timeout: float = 60, what: str = "TrainDeploy status") -> dict:
        return wait_for(lambda: self.td(name), predicate, timeout=timeout, what=what)

    def _status(self, group: str, version: str, plural: str, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(group, version, self.namespace, plural, name,
                                                          {"status": status})

    # -- Training Operator: PyTorchJob --------------------------------------------------------

    def pytorchjob(self, name: str, outcome: str = "Succeeded", message: str | None = None) -> None:
        t = _now()
        counts = {"Running": {"active": 1}, "Succeeded": {"succeeded": 1}, "Failed": {"failed": 1}}
        status = training_status.pytorchjob(name, outcome, {"Master": counts.get(outcome, {})}, started=t,
                                            finished=t if outcome in ("Succeeded", "Failed") else None)
        if message:
            status["conditions"][-1]["message"] = message
        self._status("kubeflow.org", "v1", "pytorchjobs", name, status)

    # -- Trainer v2: TrainJob ------------------------------------------------------------------

    def trainer_runtime(self, name: str = "torch-distributed", step: str = "node") -> None:
        """A ClusterTrainingRuntime as the Trainer's install puts it (the one `traindeploy dev`
        installs). Kept if it is there already."""
        install_runtime(self.custom.api_client, torch_distributed_runtime(name, step))

    def trainjob(self, name: str, outcome: str = "Complete") -> None:
        """Trainer's status for `outcome` (Running, Complete or Failed) of a one-node TrainJob."""
        pods = {"Running": {"active": 1, "ready": 1}, "Complete": {"succeeded": 1}, "Failed": {"failed": 1}}
        self._status("trainer.kubeflow.org", "v1alpha1", "trainjobs", name,
                     training_status.trainjob(outcome, {"node": pods[outcome]}, at=_now(), name=name))

    # -- Katib: Experiment ---------------------------------------------------------------------

    def experiment(self, name: str, outcome: str = "Succeeded", best: dict[str, str] | None = None,
                   metric: str = "accuracy", value: str = "0.95") -> None:
        """Katib's status for `outcome` (Running, Succeeded or Failed), with the executor's builders."""
        t = _now()
        status = katib_status.running(katib_status.created(t), katib_status.trial_counts(running=2), t)
        if outcome == "Succeeded":
            optimal = katib_status.optimal_trial(f"{name}-x7k2p9qd", best or {},
                                                 [katib_status.metric(metric, min="0.5", max=value, latest=value)])
            status = katib_status.succeeded(status, {**katib_status.trial_counts(succeeded=4),
                                                     "currentOptimalTrial": optimal},
                                            katib_status.MAX_TRIALS_REACHED, t)
        elif outcome == "Failed":
            status = katib_status.failed(status, katib_status.trial_counts(failed=3),
                                         katib_status.MAX_FAILED_MESSAGE, t)
        self._status("kubeflow.org", "v1beta1", "experiments", name, status)

    # -- KServe: InferenceService --------------------------------------------------------------

    def inferenceservice(self, name: str, ready: bool = True, failed_load: bool = False) -> None:
        """KServe's Standard-mode status (e2e.kserve_player.standard_status): ready with its
        predictor Deployment, not ready yet, or a model that failed to load."""
        isvc = self.get("serving.kserve.io", "v1beta1", "inferenceservices", name)
        state = kserve_player.FAILED_LOAD if failed_load else kserve_player.READY if ready else kserve_player.NOT_READY
        generation = 1
        if state == kserve_player.READY:
            generation = kserve_player.predictor_deployment(self.api_client, self.namespace, isvc)
        status = kserve_player.standard_status(isvc, state, observed_generation=generation)
        self._status("serving.kserve.io", "v1beta1", "inferenceservices", name, status)


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[float], params=None) -> list[float]:
        return [2 * value for value in model_input]


def assert_trained_and_registered_once(mlflow_url: str, td: dict, model_name: str) -> None:
    """Nothing made twice in MLflow: one run tagged with the TrainDeploy's uid, one model version."""
    registry = mlflow.MlflowClient(mlflow_url)
    runs = registry.search_runs([td["status"]["training"]["mlflowExperimentId"]],
                                filter_string=f"tags.`traindeploy.io/uid` = '{td['metadata']['uid']}'")
    assert len(runs) == 1
    assert [v.version for v in registry.search_model_versions(f"name='{model_name}'")] == ["1"]


def train_into_run(job: dict, metrics: dict[str, float], log_model: bool = True) -> str:
    """Plays the trainer: uses the MLflow variables the operator injected into the job."""
    env = {item["name"]: item.get("value") for item in _containers(job)[0].get("env", [])}
    tracking_uri, run_id = env["MLFLOW_TRACKING_URI"], env["MLFLOW_RUN_ID"]
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        for key, value in metrics.items():
            mlflow.log_metric(key, value)
        if log_model:
            mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=[])
    return run_id


def _containers(job: dict) -> list[dict]:
    spec = job["spec"]
    if "pytorchReplicaSpecs" in spec:
        return spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    trainer = spec["trainer"]
    return [{"env": trainer.get("env", [])}]
