"""The raw-client baseline: a plain async controller (aiohttp straight against the apiserver and
MLflow's REST API, one event loop, no framework) doing the least the minimal lifecycle needs, run
as its own process so its time, CPU and memory are measured as the operator's are.

Per TrainDeploy, from watch events only (no GETs):
  new TrainDeploy      -> MLflow experiments/create (the API's default experiment is the
                          TrainDeploy's own, traindeploy/<namespace>/<name>); runs/create;
                          POST the PyTorchJob; status write (Training)
  job Succeeded        -> runs/get (gate metric); logged-models/search; registered-models/create;
                          model-versions/create; alias challenger; get-download-uri;
                          POST the InferenceService; status write (Deploying)
  InferenceService Ready -> alias champion; status write (Ready)
= 9 MLflow requests and 5 Kubernetes requests (2 creates, 3 status writes) per lifecycle. No Events, no conditions beyond Ready, no validation, no error
handling beyond retrying MLflow's lock contention: a floor, not a competitor. Children are built
by the operator's own pure builders so both send the same objects.

    python bench/baseline.py --kubeconfig K --namespace NS --mlflow URL --artifacts file:///...

Prints `synced <n>` once its first lists are in (the bench's restart measure) and `ready` before.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path

import aiohttp

from kube_async import INFERENCESERVICES, PYTORCHJOBS, TRAINDEPLOYS, ApiError, Kube
from traindeploy import lifecycle, naming
from traindeploy.children import inferenceservice, pytorchjob
from traindeploy.mlflow_rest import mlflow_artifacts_to_storage

CYCLE = "g1"
TAG = "traindeploy.io/"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(phase: str, status: str) -> dict:
    return {"phase": phase, "conditions": [{"type": "Ready", "status": status, "reason": phase,
                                            "message": "", "lastTransitionTime": _now()}]}


def _condition_true(obj: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


class Baseline:
    def __init__(self, kube: Kube, namespace: str, mlflow_url: str, artifacts: str, concurrency: int) -> None:
        self.kube, self.namespace = kube, namespace
        self.mlflow_url, self.artifacts = mlflow_url.rstrip("/"), artifacts
        self.limit = asyncio.Semaphore(concurrency)
        self.tds: dict[str, dict] = {}
        self.runs: dict[str, str] = {}
        self.models: dict[str, tuple[str, str]] = {}  # TrainDeploy -> (registered model, version)
        self.busy: set[tuple[str, str]] = set()  # (step, TrainDeploy name) in flight or done
        self.experiments: dict[str, str] = {}  # TrainDeploy -> its MLflow experiment's id
        self.synced: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    async def mlflow(self, method: str, endpoint: str, body: dict | None = None, params: dict | None = None,
                     exists_ok: bool = False) -> dict:
        for attempt in range(30):
            async with self.session.request(method, f"{self.mlflow_url}/api/2.0/mlflow/{endpoint}", json=body,
                                            params=params) as response:
                payload = await response.json(content_type=None)
                if response.status == 200:
                    return payload
                if exists_ok and (payload or {}).get("error_code") == "RESOURCE_ALREADY_EXISTS":
                    return payload
                if response.status == 404 and (payload or {}).get("error_code") == "RESOURCE_DOES_NOT_EXIST":
                    return {}
            await asyncio.sleep(0.1 * (attempt + 1))  # SQLite lock contention (400/500): try again
        raise RuntimeError(f"MLflow {endpoint} kept failing: {payload}")

    async def run(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
        print("ready", flush=True)
        # TrainDeploys first: a child is acted on only once its owner has been seen.
        self.tds_listed = asyncio.Event()
        tds = asyncio.ensure_future(self.follow(TRAINDEPLOYS, self.on_td))
        await self.tds_listed.wait()
        await asyncio.gather(tds, self.follow(PYTORCHJOBS, self.on_job), self.follow(INFERENCESERVICES, self.on_isvc))

    async def follow(self, kind, handle) -> None:
        async for event, obj in self.kube.watch(kind, self.namespace):
            if event == "SYNCED":
                self.synced.add(kind[2])
                if kind == TRAINDEPLOYS:
                    self.tds_listed.set()
                if len(self.synced) == 3:
                    print(f"synced {len(self.tds)}", flush=True)
            elif event in ("ADDED", "MODIFIED"):
                handle(obj)

    def spawn(self, step: str, name: str, coroutine) -> None:
        if (step, name) in self.busy:
            coroutine.close()
            return
        self.busy.add((step, name))
        task = asyncio.ensure_future(self.guarded(step, name, coroutine))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def guarded(self, step: str, name: str, coroutine) -> None:
        try:
            async with self.limit:
                await coroutine
        except Exception as error:  # noqa: BLE001 - a floor, not an operator: report and let it be retried
            print(f"{step} {name} failed: {error!r}", file=sys.stderr, flush=True)
            self.busy.discard((step, name))

    # -- events ---------------------------------------------------------------------------------

    def on_td(self, td: dict) -> None:
        name = td["metadata"]["name"]
        self.tds[name] = td
        status = td.get("status") or {}
        if status.get("training", {}).get("mlflowRunId"):
            self.runs[name] = status["training"]["mlflowRunId"]
        if not status.get("phase"):
            self.spawn("start", name, self.start(td))

    def on_job(self, job: dict) -> None:
        owner = job["metadata"]["ownerReferences"][0]["name"]
        if owner not in self.tds:
            return
        phase = (self.tds[owner].get("status") or {}).get("phase")
        if _condition_true(job, "Succeeded") and phase in (None, "Training"):
            self.spawn("register", owner, self.register(owner))

    def on_isvc(self, isvc: dict) -> None:
        owner = isvc["metadata"]["ownerReferences"][0]["name"]
        if owner not in self.tds:
            return
        phase = (self.tds[owner].get("status") or {}).get("phase")
        ready = (((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}).get("latestReadyRevision")
        if _condition_true(isvc, "Ready") and ready and phase != "Ready":
            self.spawn("serve", owner, self.serve(owner))

    # -- steps ----------------------------------------------------------------------------------

    async def start(self, td: dict) -> None:
        name, uid = td["metadata"]["name"], td["metadata"]["uid"]
        experiment_name = f"traindeploy/{self.namespace}/{name}"
        created = await self.mlflow("POST", "experiments/create", {"name": experiment_name}, exists_ok=True)
        if "experiment_id" not in created:  # made by an earlier start of this process
            created = (await self.mlflow("GET", "experiments/get-by-name",
                                         params={"experiment_name": experiment_name}))["experiment"]
        self.experiments[name] = created["experiment_id"]
        run = await self.mlflow("POST", "runs/create", {
            "experiment_id": self.experiments[name], "run_name": f"{name}-{CYCLE}", "start_time": int(time.time() * 1000),
            "tags": [{"key": f"{TAG}uid", "value": uid}, {"key": f"{TAG}cycle", "value": CYCLE}]})
        run_id = run["run"]["info"]["run_id"]
        self.runs[name] = run_id
        training = td["spec"]["training"]
        job_name = naming.training_job_name(name, CYCLE)
        job = pytorchjob.build(naming.child_metadata(td, job_name, CYCLE, "training"), training,
                               env=lifecycle.mlflow_env(self.mlflow_url, experiment_name, run_id, None, []),
                               hyperparameters=dict(training.get("hyperparameters") or {}),
                               gpu_resource="nvidia.com/gpu")
        try:
            await self.kube.create(PYTORCHJOBS, self.namespace, job)
        except ApiError as error:
            if error.status != 409:
                raise
        await self.kube.patch_status(TRAINDEPLOYS, self.namespace, name, {
            **_ready("Training", "False"), "training": {"mlflowRunId": run_id, "name": job_name}})

    async def register(self, name: str) -> None:
        td, run_id = self.tds[name], self.runs[name]
        model_name = td["spec"]["model"]["name"]
        run = await self.mlflow("GET", "runs/get", params={"run_id": run_id})
        metrics = {m["key"]: m["value"] for m in run["run"]["data"].get("metrics", [])}
        gate = td["spec"]["gate"]
        if metrics.get(gate["metric"], float("-inf")) < float(gate["threshold"]):
            await self.kube.patch_status(TRAINDEPLOYS, self.namespace, name, _ready("Failed", "False"))
            return
        found = await self.mlflow("POST", "logged-models/search", {
            "experiment_ids": [self.experiments[name]], "filter": f"source_run_id = '{run_id}'", "max_results": 10})
        model_id = found["models"][0]["info"]["model_id"]
        await self.mlflow("POST", "registered-models/create", {"name": model_name}, exists_ok=True)
        version = (await self.mlflow("POST", "model-versions/create", {
            "name": model_name, "source": f"models:/{model_id}", "run_id": run_id, "model_id": model_id,
            "tags": [{"key": f"{TAG}uid", "value": td["metadata"]["uid"]}]}))["model_version"]["version"]
        await self.mlflow("POST", "registered-models/alias", {"name": model_name, "alias": "challenger",
                                                              "version": version})
        uri = (await self.mlflow("GET", "model-versions/get-download-uri",
                                 params={"name": model_name, "version": version}))["artifact_uri"]
        storage = mlflow_artifacts_to_storage(uri, self.artifacts)
        isvc_name = naming.inference_service_name(name)
        isvc = inferenceservice.build(naming.child_metadata(td, isvc_name, stage="serving"), td["spec"]["serving"],
                                      storage_uri=storage, gpu_resource="nvidia.com/gpu")
        try:
            await self.kube.create(INFERENCESERVICES, self.namespace, isvc)
        except ApiError as error:
            if error.status != 409:
                raise
        self.models[name] = (model_name, version)
        await self.kube.patch_status(TRAINDEPLOYS, self.namespace, name, {
            **_ready("Deploying", "False"), "model": {"name": model_name, "version": version, "storageUri": storage}})

    async def serve(self, name: str) -> None:
        model = (self.tds[name].get("status") or {}).get("model") or {}
        model_name, version = self.models.get(name) or (model["name"], model["version"])
        await self.mlflow("POST", "registered-models/alias", {"name": model_name, "alias": "champion",
                                                              "version": version})
        await self.kube.patch_status(TRAINDEPLOYS, self.namespace, name, _ready("Ready", "True"))


async def main(args: argparse.Namespace) -> None:
    async with Kube(Path(args.kubeconfig)) as kube:
        await Baseline(kube, args.namespace, args.mlflow, args.artifacts, args.concurrency).run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--mlflow", required=True, help="tracking URI (the counting proxy)")
    parser.add_argument("--artifacts", required=True, help="the MLflow server's --artifacts-destination")
    parser.add_argument("--concurrency", type=int, default=8, help="steps in flight at once")
    asyncio.run(main(parser.parse_args()))
