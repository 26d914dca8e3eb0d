"""Fake clients and a fake clock for the stages' unit tests: the interfaces of
`traindeploy.context` (KubeApi, the MLflow and KFP client factories), kept in memory.

They behave as the real clients do where the stages depend on it: `ensure` creates or patches
the owned fields and says which, a missing object reads as None, errors are the clients' own
typed errors (`traindeploy.kube`, `traindeploy.mlflow_rest`). Nothing here decides anything a
stage should."""

from __future__ import annotations

import copy
import datetime as dt
import itertools

from traindeploy import kube
from traindeploy.diff import drift, without_nones
from traindeploy.config import OperatorConfig
from dataclasses import dataclass, field

from traindeploy.context import Environment, Event, Pass
from traindeploy.mlflow_rest import MlflowUnauthorized, MlflowUnavailable
from traindeploy.results import Problem, Result

T0 = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def merge_patch(target, patch):
    """RFC 7386, as the apiserver applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKube:
    """Objects by (plural, name); `fail` makes the next calls raise a typed error."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.cluster_objects: dict[tuple[str, str], dict] = {}  # cluster-scoped: CRDs, runtimes
        self.secrets: dict[str, dict[str, str]] = {}
        self.config_maps: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.fail: kube.KubeError | None = None
        self._versions = itertools.count(1)

    def _check(self, verb: str, plural: str, name: str) -> None:
        self.calls.append((verb, plural, name))
        if self.fail is not None:
            raise self.fail

    def get(self, kind, namespace, name):
        self._check("get", kind.plural, name)
        found = self.objects.get((kind.plural, name))
        return copy.deepcopy(found) if found is not None else None

    def get_cluster(self, kind, name):
        self._check("get", kind.plural, name)
        found = self.cluster_objects.get((kind.plural, name))
        return copy.deepcopy(found) if found is not None else None

    def crd(self, name):
        return self.get_cluster(kube.CRD, name)

    def list(self, kind, namespace, label_selector):
        self._check("list", kind.plural, label_selector)
        key, _, value = label_selector.partition("=")
        return [copy.deepcopy(obj) for (plural, _), obj in self.objects.items()
                if plural == kind.plural and (obj["metadata"].get("labels") or {}).get(key) == value]

    def pods(self, namespace, label_selector):
        self._check("pods", "pods", label_selector)
        key, _, value = label_selector.partition("=")
        return [copy.deepcopy(obj) for (plural, _), obj in self.objects.items()
                if plural == "pods" and (obj["metadata"].get("labels") or {}).get(key) == value]

    def ensure(self, kind, desired, owned=("spec",)):
        name = desired["metadata"]["name"]
        self._check("ensure", kind.plural, name)
        existing = self.objects.get((kind.plural, name))
        if existing is None:
            created = without_nones(copy.deepcopy(desired))
            created["metadata"]["resourceVersion"] = str(next(self._versions))
            self.objects[(kind.plural, name)] = created
            return copy.deepcopy(created), "created"
        changed = False
        for key in owned:
            if key in desired and drift(desired[key], existing.get(key)):
                existing[key] = merge_patch(existing.get(key), desired[key])
                changed = True
        return copy.deepcopy(existing), "patched" if changed else "unchanged"

    def delete(self, kind, namespace, name):
        self._check("delete", kind.plural, name)
        self.objects.pop((kind.plural, name), None)

    def replace_status(self, kind, namespace, name, status, resource_version):
        self._check("replace_status", kind.plural, name)
        raise NotImplementedError("the stages never write the TrainDeploy's status")

    def secret_data(self, namespace, name):
        self._check("get", "secrets", name)
        return dict(self.secrets[name]) if name in self.secrets else None

    def config_map_data(self, namespace, name):
        self._check("get", "configmaps", name)
        return dict(self.config_maps[name]) if name in self.config_maps else None

    # -- what a test does as the upstream controller -------------------------------------------------

    def set_status(self, plural: str, name: str, status: dict) -> None:
        self.objects[(plural, name)]["status"] = copy.deepcopy(status)

    def object(self, plural: str, name: str) -> dict | None:
        return self.objects.get((plural, name))

    def serve_trainer(self, fields=("runtimePatches", "activeDeadlineSeconds"),
                      runtime: str = "torch-distributed", step: str = "node", namespaced: bool = False) -> None:
        """A Kubeflow Trainer install: the TrainJob CRD whose served v1alpha1 spec has `fields` (and
        `runtimeRef` and `trainer`, which every release has), and a runtime whose replicated job
        `step` carries the trainer ancestor label (manifests/base/runtimes/*.yaml), after an
        unlabelled one as in deepspeed-distributed."""
        properties = {name: {"type": "object"} for name in ("runtimeRef", "trainer", *fields)}
        self.cluster_objects[("customresourcedefinitions", "trainjobs.trainer.kubeflow.org")] = {
            "metadata": {"name": "trainjobs.trainer.kubeflow.org"},
            "spec": {"group": "trainer.kubeflow.org", "versions": [{
                "name": "v1alpha1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": properties}}}}}]}}
        jobs = [{"name": name, "template": {"metadata": {"labels": labels}, "spec": {}}} for name, labels in (
            ("node" if step != "node" else "initializer", {}),
            (step, {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}))]
        body = {"metadata": {"name": runtime}, "spec": {"template": {"spec": {"replicatedJobs": jobs}}}}
        if namespaced:
            self.objects[("trainingruntimes", runtime)] = body
        else:
            self.cluster_objects[("clustertrainingruntimes", runtime)] = body

    def predictor_deployment(self, isvc: str, storage: str, replicas: int = 1, updated: int | None = None,
                             old: int = 0) -> None:
        """KServe's Standard-mode predictor Deployment (`<isvc>-predictor`, the storage URI on its
        pod template: components/predictor.go) as the Deployment controller reports it: `updated`
        of `replicas` run the template, `old` still run the one before."""
        name = f"{isvc}-predictor"
        previous = self.objects.get(("deployments", name))
        generation = (previous["metadata"]["generation"] + 1) if previous else 1
        updated = replicas if updated is None else updated
        self.objects[("deployments", name)] = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ml", "generation": generation},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {
                "internal.serving.kserve.io/storage-initializer-sourceuri": storage}}}},
            "status": {"observedGeneration": generation, "replicas": updated + old, "updatedReplicas": updated,
                       "readyReplicas": updated + old, "availableReplicas": updated + old}}


class FakeMlflow:
    """The MLflow calls the stages make, in memory. `outage` or `unauthorized` makes every call fail."""

    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, dict] = {}
        self.logged_models: dict[str, dict] = {}  # run id -> logged model
        self.versions: dict[str, list[dict]] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.version_status = "READY"
        self.outage = False
        self.unauthorized = False
        self.credentials = None
        self.calls: list[str] = []

    def client(self, uri, credentials, timeout, session):
        self.credentials = credentials
        return self

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.outage:
            raise MlflowUnavailable(f"{name}: ConnectionError")
        if self.unauthorized:
            raise MlflowUnauthorized(f"{name}: HTTP 401 UNAUTHENTICATED", error_code="UNAUTHENTICATED", status=401)

    def ensure_experiment(self, name):
        self._call("ensure_experiment")
        new = name not in self.experiments
        return self.experiments.setdefault(name, str(len(self.experiments) + 1)), new

    def find_run(self, experiment_id, tags):
        self._call("find_run")
        return next((r for r in self.runs.values() if r["experiment_id"] == experiment_id
                     and all(r["tags"].get(k) == v for k, v in tags.items())), None)

    def create_run(self, experiment_id, run_name, tags):
        self._call("create_run")
        run_id = f"run{len(self.runs) + 1}"
        self.runs[run_id] = {"run_id": run_id, "experiment_id": experiment_id, "run_name": run_name,
                             "tags": dict(tags), "metrics": {}, "status": "RUNNING"}
        return self.runs[run_id]

    def get_run(self, run_id):
        self._call("get_run")
        return self.runs[run_id]

    def end_run(self, run_id, status="KILLED"):
        self._call("end_run")
        if self.runs[run_id]["status"] == "RUNNING":
            self.runs[run_id]["status"] = status

    def logged_model_for_run(self, run):
        self._call("logged_model_for_run")
        return self.logged_models.get(run["run_id"])

    def ensure_registered_model(self, name):
        self._call("ensure_registered_model")
        self.versions.setdefault(name, [])

    def find_model_version(self, name, tags):
        self._call("find_model_version")
        found = next((v for v in self.versions.get(name, []) if all(v["tags"].get(k) == val for k, val in tags.items())),
                     None)
        if found is None:
            return None
        # As the real client: found by a get, which carries the version's aliases.
        return {**found, "aliases": [alias for (model, alias), version in self.aliases.items()
                                     if model == name and version == found["version"]]}

    def create_model_version(self, name, source, run_id, *, model_id, tags, description=""):
        self._call("create_model_version")
        version = {"version": str(len(self.versions[name]) + 1), "source": source, "run_id": run_id,
                   "tags": dict(tags), "status": self.version_status}
        self.versions[name].append(version)
        return version

    def alias_version(self, name, alias):
        self._call("alias_version")
        return self.aliases.get((name, alias))

    def set_alias(self, name, alias, version):
        self._call("set_alias")
        self.aliases[(name, alias)] = version

    def download_uri(self, name, version):
        self._call("download_uri")
        return f"s3://models/{name}/{version}"

    # -- what a test does as the trainer ------------------------------------------------------------

    def train(self, run_id: str, metrics: dict[str, float], model: bool = True, model_status: str = "READY") -> None:
        self.runs[run_id]["metrics"].update(metrics)
        self.runs[run_id]["status"] = "FINISHED"
        if model:
            self.logged_models[run_id] = {"model_id": f"m-{run_id}", "status": model_status}


class ProbedUrls:
    """An HTTP session that answers 200 to every probe and remembers where it was sent."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def request(self, method, url, **kwargs):
        self.urls.append(url)
        return type("Response", (), {"status_code": 200})()


def environment(kube_api: FakeKube | None = None, mlflow: FakeMlflow | None = None, clock: Clock | None = None,
                **config) -> Environment:
    settings = {"mlflow_tracking_uri": "http://127.0.0.1:5000", "poll_interval": 30.0, **config}
    mlflow = mlflow or FakeMlflow()
    return Environment(kube=kube_api or FakeKube(), config=OperatorConfig(**settings), clock=clock or Clock(),
                       mlflow_client=mlflow.client)


def traindeploy(spec: dict | None = None, status: dict | None = None, name: str = "churn",
                annotations: dict | None = None, generation: int = 1) -> dict:
    body = {"apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy",
            "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": generation,
                         "resourceVersion": "10", "annotations": annotations or {}},
            "spec": spec if spec is not None else minimal_spec()}
    if status is not None:
        body["status"] = status
    return body


def minimal_spec(**overrides) -> dict:
    spec = {"model": {"name": "churn-model"},
            "training": {"image": "trainer:1", "command": ["python", "train.py"], "gpus": 1},
            "gate": {"metric": "accuracy", "threshold": 0.8},
            "serving": {}}
    spec.update(overrides)
    return spec


@dataclass
class StageOutcome:
    result: Result
    status: dict
    events: list[Event]
    canary_outcomes: list[tuple[str, str]] = field(default_factory=list)


def run_stage(stage, td: dict, env: Environment) -> StageOutcome:
    """One stage once, as the driver runs it."""
    p = Pass(td, env)
    try:
        result = stage.run(p)
    except Problem as problem:
        result = problem.result
    return StageOutcome(result, p.status, p.events, p.canary_outcomes)
