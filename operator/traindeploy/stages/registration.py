"""The registration stage: a new version of the registered model from the run's logged model,
the `challenger` alias on it, and the storage URI KServe reads it from."""

from __future__ import annotations

from traindeploy import conditions as cond
from traindeploy.context import Pass
from traindeploy.mlflow_rest import mlflow_artifacts_to_storage
from traindeploy.results import Done, Fail, Result, Wait
from traindeploy.stages.base import Stage

ALIAS_CHALLENGER = "challenger"
ALIAS_CHAMPION = "champion"  # moved by the serving stage on promotion
POLL = 5.0  # a version is READY within seconds of creation


def run(p: Pass) -> Result:
    model_name = p.spec["model"]["name"]
    run_id = p.status["training"]["mlflowRunId"]
    model = p.status.setdefault("model", {"name": model_name})
    # A registered model that does not exist has no versions: the search finds none, and the
    # model is created just before its first version.
    version = p.mlflow(lambda client: client.find_model_version(model_name, p.identity_tags()))
    if version is None:
        experiment_id = p.status["training"].get("mlflowExperimentId")
        logged = p.mlflow(lambda client: client.logged_model_for_run(
            {"run_id": run_id, "experiment_id": experiment_id} if experiment_id else client.get_run(run_id)))
        if logged is None:
            return Fail("NoLoggedModel", f"MLflow run {run_id} logged no model to register.")
        # Only a READY logged model has all its artifacts: PENDING is still uploading (or its
        # uploader died), FAILED never finished (UPSTREAM.md, errata: MLflow).
        if logged.get("status") == "FAILED":
            return Fail("LoggedModelFailed", f"The model {logged['model_id']} that MLflow run {run_id} logged "
                                             "failed to upload; it is not registered.")
        if logged.get("status") != "READY":
            return Wait(f"The model {logged['model_id']} that MLflow run {run_id} logged is "
                        f"{logged.get('status')}, not READY; it is registered once READY.", POLL)
        version = p.mlflow(lambda client: _create_version(p, client, model_name, run_id, logged))
    model.update({"version": version["version"], "source": version.get("source")})
    if version.get("status") == "FAILED_REGISTRATION":
        return Fail("RegistrationFailed", f"MLflow could not register {model_name} version {version['version']}.")
    if version.get("status") != "READY":
        return Wait(f"{model_name} version {version['version']} is {version.get('status')}.", POLL)
    if ALIAS_CHALLENGER not in version.get("aliases", ()):  # a found version carries its aliases
        p.mlflow(lambda client: client.set_alias(model_name, ALIAS_CHALLENGER, version["version"]))
    storage = storage_uri(p, model_name, version["version"])
    if isinstance(storage, Fail):
        return storage
    model["storageUri"] = storage
    return Done(f"Registered {model_name} version {version['version']}.")


def storage_uri(p: Pass, model_name: str, version: str) -> str | Fail:
    """Where KServe reads a version from: MLflow's download URI, mapped onto the store a proxying
    server writes to."""
    storage = p.mlflow(lambda client: client.download_uri(model_name, version))
    destination = p.env.config.mlflow_artifacts_destination
    if destination:
        storage = mlflow_artifacts_to_storage(storage, destination)
    if storage.startswith("mlflow-artifacts:"):
        return Fail("StorageNotResolvable",
                    f"MLflow stores version {version} at {storage}, which KServe cannot read: set the "
                    "operator's TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION to the server's --artifacts-destination.")
    return storage


def _create_version(p: Pass, client, model_name: str, run_id: str, logged: dict) -> dict:
    client.ensure_registered_model(model_name)
    version = client.create_model_version(
        model_name, f"models:/{logged['model_id']}", run_id, model_id=logged["model_id"], tags=p.lineage_tags(),
        description=f"Trained by TrainDeploy {p.namespace}/{p.name}, cycle {p.cycle}.")
    return version  # the stage's ModelRegistered Event names it


STAGE = Stage("registering", cond.REGISTERED, "Registering", run)
