"""The fast driver: plays the trainer, the Training Operator and KServe for many TrainDeploys at
once, with the status builders the e2e players and `traindeploy dev` share
(traindeploy/dev/status/).

- every PyTorchJob without an end condition: the trainer's part first (the gate metric logged into
  the MLflow run the job was given, a LoggedModel made READY from that run, as `log_model` leaves
  it), then the job's status as the Training Operator writes it on success;
- every InferenceService generation: KServe's Knative-mode status with one ready revision taking
  all traffic (the default mode of an InferenceService without the mode annotation).

It talks to MLflow directly (not through the counting proxy) and counts its own Kubernetes
requests, so neither is charged to the controller under test.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from kube_async import INFERENCESERVICES, PYTORCHJOBS, Kube
from traindeploy.dev.status import kserve as kserve_status
from traindeploy.dev.status import training as training_status

ACCURACY = 0.91  # above the minimal manifest's gate (0.8)


def _env(job: dict) -> dict[str, str]:
    containers = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value") for item in containers[0].get("env", [])}


def _finished(job: dict) -> bool:
    return any(c.get("type") in ("Succeeded", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


class Driver:
    def __init__(self, kube: Kube, namespace: str, mlflow_url: str, concurrency: int = 16) -> None:
        self.kube, self.namespace, self.mlflow_url = kube, namespace, mlflow_url.rstrip("/")
        self._limit = asyncio.Semaphore(concurrency)
        self._jobs_done: set[str] = set()
        self._isvc_seen: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._mlflow: aiohttp.ClientSession | None = None
        self.jobs_completed = 0
        self.isvc_answers = 0
        self.errors: list[str] = []

    async def run(self) -> None:
        """Until cancelled."""
        self._mlflow = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
        try:
            await asyncio.gather(self._follow(PYTORCHJOBS, self._on_job), self._follow(INFERENCESERVICES, self._on_isvc))
        finally:
            for task in self._tasks:
                task.cancel()
            await self._mlflow.close()

    async def _follow(self, kind, handle) -> None:
        async for kind_of_event, obj in self.kube.watch(kind, self.namespace):
            if kind_of_event in ("ADDED", "MODIFIED"):
                handle(obj)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_job(self, job: dict) -> None:
        name = job["metadata"]["name"]
        if name in self._jobs_done or _finished(job):
            return
        self._jobs_done.add(name)
        self._spawn(self._complete_job(job))

    def _on_isvc(self, isvc: dict) -> None:
        name, generation = isvc["metadata"]["name"], isvc["metadata"]["generation"]
        if self._isvc_seen.get(name) == generation:
            return
        self._isvc_seen[name] = generation
        self._spawn(self._answer_isvc(isvc))

    async def _mlflow_call(self, method: str, endpoint: str, body: dict) -> dict:
        url = f"{self.mlflow_url}/api/2.0/mlflow/{endpoint}"
        for attempt in range(20):
            async with self._mlflow.request(method, url, json=body) as response:
                payload = await response.json(content_type=None)
                if response.status == 200:
                    return payload
                # The SQLite-backed server answers lock contention with 400/500; the trainer retries.
                if attempt == 19:
                    raise RuntimeError(f"MLflow {endpoint}: {response.status} {payload}")
            await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _complete_job(self, job: dict) -> None:
        name = job["metadata"]["name"]
        try:
            async with self._limit:
                run_id = _env(job)["MLFLOW_RUN_ID"]
                now_ms = int(time.time() * 1000)
                await self._mlflow_call("POST", "runs/log-metric", {"run_id": run_id, "key": "accuracy",
                                                                    "value": ACCURACY, "timestamp": now_ms, "step": 0})
                run = await self._mlflow_get(f"runs/get?run_id={run_id}")
                experiment_id = run["run"]["info"]["experiment_id"]
                created = await self._mlflow_call("POST", "logged-models", {
                    "experiment_id": experiment_id, "name": "model", "source_run_id": run_id})
                model_id = created["model"]["info"]["model_id"]
                await self._mlflow_call("PATCH", f"logged-models/{model_id}",
                                        {"model_id": model_id, "status": "LOGGED_MODEL_READY"})
                t = training_status.now()
                status = training_status.pytorchjob(name, "Succeeded", {"Master": {"succeeded": 1}},
                                                    started=t, finished=t)
                await self.kube.patch_status(PYTORCHJOBS, self.namespace, name, status)
                self.jobs_completed += 1
        except Exception as error:  # noqa: BLE001 - reported by the bench, which then fails the check
            self.errors.append(f"job {name}: {error!r}")

    async def _mlflow_get(self, endpoint: str) -> dict:
        for attempt in range(20):
            async with self._mlflow.get(f"{self.mlflow_url}/api/2.0/mlflow/{endpoint}") as response:
                if response.status == 200:
                    return await response.json(content_type=None)
            await asyncio.sleep(0.1 * (attempt + 1))
        raise RuntimeError(f"MLflow {endpoint} kept failing")

    async def _answer_isvc(self, isvc: dict) -> None:
        name = isvc["metadata"]["name"]
        try:
            async with self._limit:
                revision = f"{name}-predictor-{isvc['metadata']['generation']:05d}"
                revisions = kserve_status.Revisions(latest_created=revision, latest_ready=revision)
                traffic, moved = kserve_status.knative_traffic(revisions, None)
                url = f"http://{name}.{self.namespace}.example.com"
                status = kserve_status.knative(url=url, predictor_url=f"http://{name}-predictor.{self.namespace}.example.com",
                                               revisions=moved, traffic=traffic,
                                               observed_generation=isvc["metadata"]["generation"])
                await self.kube.patch_status(INFERENCESERVICES, self.namespace, name, status)
                self.isvc_answers += 1
        except Exception as error:  # noqa: BLE001
            self.errors.append(f"isvc {name}: {error!r}")
