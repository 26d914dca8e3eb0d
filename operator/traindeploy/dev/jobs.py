"""PyTorchJob and TrainJob, run for real on this machine: one local process per replica (or node)
with the distributed environment the upstream controllers inject, and the status they write.

What the Training Operator v1.9 does and this does too (UPSTREAM.md 2.2-2.3): Master and Worker
replicas, `MASTER_ADDR`/`MASTER_PORT`/`WORLD_SIZE`/`RANK` and the `PET_*` variables, success when
the Master succeeds, failure when a replica fails. Trainer v2.3 with `torch-distributed`
(UPSTREAM.md 3): `numNodes` processes with `PET_NNODES`, `PET_NODE_RANK`, `PET_MASTER_ADDR`,
`PET_MASTER_PORT`, `PET_NPROC_PER_NODE`; Complete when every node succeeds.

What differs, on purpose: MASTER_ADDR is 127.0.0.1 (every replica is a process here) and the port
is a free one; a failed replica fails the job at once (no pod restarts under `OnFailure`); when a
job ends, the replicas still running are stopped, as `cleanPodPolicy: Running` (the operator's
default) has the controller delete them. A GPU limit
gets the machine's GPUs when it has them (`CUDA_VISIBLE_DEVICES`), none otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client

from traindeploy.dev import processes
from traindeploy.dev.images import EnvSourceMissing, ImageNotMapped, Resolver
from traindeploy.dev.status import training as status
from traindeploy.dev.watching import Watcher, patch_status

log = logging.getLogger(__name__)

PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs")
TRAINJOB = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_MASTER_PORT = 23456


@dataclass
class Replica:
    kind: str      # Master, Worker, or the TrainJob's replicated job (node)
    index: int
    process: subprocess.Popen
    log_path: Path


@dataclass
class RunningJob:
    kind: tuple[str, str, str]
    name: str
    uid: str
    replicas: list[Replica] = field(default_factory=list)
    started: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)


def torch_distributed_runtime(name: str = "torch-distributed", step: str = "node") -> dict:
    """The ClusterTrainingRuntime Trainer's install puts in a cluster (manifests/base/runtimes/
    torch_distributed.yaml at v2.3.0): the torch ML policy (with which the real Trainer injects the
    PET_* env) and one replicated job, labelled as the trainer step. Only the image tag differs
    (tests/upstream/test_trainjob.py compares the two)."""
    labels = {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
            "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "torch"}},
            "spec": {"mlPolicy": {"numNodes": 1, "torch": {}},
                     "template": {"spec": {"replicatedJobs": [
                         {"name": step, "template": {"metadata": {"labels": labels}, "spec": {"template": {"spec": {
                             "containers": [{"name": "node", "image": "pytorch/pytorch"}]}}}}}]}}}}


def install_runtime(api_client, body: dict) -> bool:
    """Creates a cluster-wide runtime unless one of that name exists; False when it did."""
    from kubernetes.client.rest import ApiException

    try:
        client.CustomObjectsApi(api_client).create_cluster_custom_object(
            "trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", body, _request_timeout=10)
        return True
    except ApiException as error:
        if error.status != 409:
            raise
        return False


def machine_gpus() -> int:
    """GPUs `nvidia-smi` lists; 0 without a driver."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listed = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def _terminal(obj: dict) -> bool:
    return any(c.get("type") in ("Succeeded", "Failed", "Complete") and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _gpus(container: dict) -> int:
    limits = (container.get("resources") or {}).get("limits") or {}
    return int(limits.get(GPU_RESOURCE) or 0)


class TrainingJobs:
    """Watches PyTorchJobs and TrainJobs in one namespace and runs each once."""

    def __init__(self, api_client, namespace: str, resolver: Resolver, workdir: Path,
                 gpus: int | None = None, on_event=None) -> None:
        self.api_client, self.namespace, self.resolver = api_client, namespace, resolver
        self.workdir = workdir
        self.gpus = machine_gpus() if gpus is None else gpus
        self.on_event = on_event or (lambda line: None)
        self._jobs: dict[str, RunningJob] = {}
        self._lock = threading.Lock()
        self._watchers = [Watcher(api_client, namespace, PYTORCHJOB, self._on_pytorchjob, "dev-pytorchjobs"),
                          Watcher(api_client, namespace, TRAINJOB, self._on_trainjob, "dev-trainjobs")]

    def start(self) -> "TrainingJobs":
        for watcher in self._watchers:
            watcher.start()
        return self

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stopping.set()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self._cancel(job)
        for watcher in self._watchers:
            watcher.stop()

    # -- events ---------------------------------------------------------------------------------

    def _on_pytorchjob(self, event: str, obj: dict) -> None:
        self._on_job(PYTORCHJOB, event, obj, self._pytorchjob_replicas)

    def _on_trainjob(self, event: str, obj: dict) -> None:
        self._on_job(TRAINJOB, event, obj, self._trainjob_replicas)

    def _on_job(self, kind, event: str, obj: dict, replicas_of) -> None:
        uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
        with self._lock:
            running = self._jobs.get(uid)
            if event == "DELETED":
                self._jobs.pop(uid, None)
            elif running is None and not _terminal(obj):
                running = self._jobs[uid] = RunningJob(kind, name, uid, started=status.now())
            else:
                return
        if event == "DELETED":
            if running is not None:
                self._cancel(running)
            return
        try:
            self._launch(running, obj, replicas_of)
        except (ImageNotMapped, EnvSourceMissing, ValueError, OSError) as error:
            # What a kubelet would report as a pod that cannot start (ErrImagePull,
            # CreateContainerConfigError): the job fails and says why.
            log.warning("%s %s cannot run here: %s", kind[2], name, error)
            self.on_event(f"{kind[2][:-1]} {name}: cannot run here: {error}")
            self._write_end(running, failed=("Master" if kind == PYTORCHJOB else "node", 1), message=str(error))

    # -- running --------------------------------------------------------------------------------

    def _pytorchjob_replicas(self, job: dict) -> list[tuple[str, int, dict, dict]]:
        specs = job["spec"]["pytorchReplicaSpecs"]
        order = [kind for kind in ("Master", "Worker") if kind in specs]
        counts = {kind: int(specs[kind].get("replicas", 1)) for kind in order}
        total = sum(counts.values())
        nproc = str(job["spec"].get("nprocPerNode") or "")
        per_node = int(nproc) if nproc.isdigit() else 1
        port = processes.free_port()
        replicas, rank = [], 0
        for kind in order:
            containers = specs[kind]["template"]["spec"]["containers"]
            container = next((c for c in containers if c.get("name") == "pytorch"), containers[0])
            for index in range(counts[kind]):
                env = {"PYTHONUNBUFFERED": "1"}
                if "Master" in counts:
                    env.update({"MASTER_ADDR": "127.0.0.1", "PET_MASTER_ADDR": "127.0.0.1",
                                "MASTER_PORT": str(port), "PET_MASTER_PORT": str(port),
                                "WORLD_SIZE": str(total * per_node), "RANK": str(rank),
                                "PET_NODE_RANK": str(rank), "PET_NNODES": str(total)})
                    if nproc:
                        env["PET_NPROC_PER_NODE"] = nproc
                replicas.append((kind, index, container, env))
                rank += 1
        return replicas

    def _trainjob_replicas(self, job: dict) -> list[tuple[str, int, dict, dict]]:
        trainer = job["spec"].get("trainer") or {}
        nodes = int(trainer.get("numNodes") or 1)
        port = processes.free_port()
        container = {"name": "node", "image": trainer.get("image"), "command": trainer.get("command"),
                     "args": trainer.get("args"), "env": trainer.get("env"),
                     "resources": {"limits": (trainer.get("resourcesPerNode") or {}).get("limits") or {}}}
        return [("node", index, container,
                 {"PYTHONUNBUFFERED": "1", "PET_NNODES": str(nodes), "PET_NODE_RANK": str(index),
                  "PET_NPROC_PER_NODE": "1", "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)})
                for index in range(nodes)]

    def _launch(self, running: RunningJob, job: dict, replicas_of) -> None:
        directory = self.workdir / running.kind[2] / running.name
        directory.mkdir(parents=True, exist_ok=True)
        planned = replicas_of(job)
        commands = []
        for kind, index, container, env in planned:
            env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(self.gpus))
                   if _gpus(container) and self.gpus else ""}
            commands.append((kind, index, self.resolver.command(container, self.namespace, env)))
        for kind, index, command in commands:
            log_path = directory / f"{kind.lower()}-{index}.log"
            proc = processes.start(command.argv, log_path, env={**os.environ, **command.env}, cwd=command.cwd)
            running.replicas.append(Replica(kind, index, proc, log_path))
        self.on_event(f"{running.kind[2][:-1]} {running.name}: started {len(commands)} process(es): "
                      f"{commands[0][2].shown()} (logs in {directory})")
        self._write_running(running)
        threading.Thread(target=self._wait, args=(running,), name=f"dev-job-{running.name}", daemon=True).start()

    def _wait(self, running: RunningJob) -> None:
        """Ends the job as its controller would: on the Master's (or every node's) exit."""
        while not running.cancelled.is_set():
            codes = {(r.kind, r.index): r.process.poll() for r in running.replicas}
            failed = [key for key, code in codes.items() if code not in (None, 0)]
            leader_done = [code == 0 for (kind, _), code in codes.items() if kind == "Master"]
            done = all(leader_done) if leader_done else all(code == 0 for code in codes.values())
            if failed or done:
                break
            running.cancelled.wait(0.5)
        if running.cancelled.is_set():
            return
        for replica in running.replicas:
            processes.stop(replica.process, grace=5)
        if failed:
            kinds = [kind for kind, _ in failed]
            first = kinds[0]
            self.on_event(f"{running.kind[2][:-1]} {running.name}: {first} exited with "
                          f"{codes[failed[0]]} (log {running.replicas[0].log_path.parent})")
            self._write_end(running, failed=(first, kinds.count(first)))
        else:
            self.on_event(f"{running.kind[2][:-1]} {running.name}: completed")
            self._write_end(running)

    def _cancel(self, running: RunningJob) -> None:
        running.cancelled.set()
        for replica in running.replicas:
            processes.stop(replica.process, grace=5)

    # -- status ---------------------------------------------------------------------------------

    @staticmethod
    def _counts(running: RunningJob, outcome: str | None) -> dict[str, dict[str, int]]:
        """Replica counts by kind. While running: active, succeeded, failed by exit code. On
        success the controller moves what is still active into succeeded; on failure the replicas
        this executor stopped (killed by a signal) are no longer counted."""
        counts: dict[str, dict[str, int]] = {}
        for replica in running.replicas:
            entry = counts.setdefault(replica.kind, {})
            code = replica.process.poll()
            if outcome == "succeeded":
                key = "succeeded"
            elif code is None:
                key = "active"
            elif code == 0:
                key = "succeeded"
            elif code > 0:
                key = "failed"
            else:
                continue
            entry[key] = entry.get(key, 0) + 1
        return counts

    def _write_running(self, running: RunningJob) -> None:
        counts = self._counts(running, None)
        if running.kind == PYTORCHJOB:
            body = status.pytorchjob(running.name, "Running", counts, started=running.started)
        else:
            body = status.trainjob("Running", {kind: {**c, "ready": c.get("active", 0)} for kind, c in counts.items()},
                                   at=running.started, name=running.name)
        self._patch(running, body)

    def _write_end(self, running: RunningJob, failed: tuple[str, int] | None = None,
                   message: str | None = None) -> None:
        counts = self._counts(running, "failed" if failed else "succeeded")
        if failed and not any(counts.values()):
            counts = {failed[0]: {"failed": failed[1]}}  # it never started: the pod that could not run
        at = status.now()
        if running.kind == PYTORCHJOB:
            body = status.pytorchjob(running.name, "Failed" if failed else "Succeeded", counts,
                                     started=running.started, finished=at, failed_replicas=failed)
        else:
            body = status.trainjob("Failed" if failed else "Complete", counts, at=at, name=running.name)
        if message:
            body["conditions"][-1]["message"] = message
        self._patch(running, body)

    def _patch(self, running: RunningJob, body: dict) -> None:
        try:
            patch_status(self.api_client, self.namespace, running.kind, running.name, body)
        except Exception:  # noqa: BLE001 - the job may be gone; the next event tells
            log.exception("could not write the status of %s %s", running.kind[2], running.name)

