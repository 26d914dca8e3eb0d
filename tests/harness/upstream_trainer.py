"""Kubeflow Trainer v2 and JobSet on the upstream tier's control plane: Trainer reconciles a
TrainJob into a JobSet, JobSet into batch Jobs, the job controller into pods that KWOK runs.

    with JobSet(cp) as jobset:            # JobSet's CRD and webhooks; Trainer needs the CRD first
        with Trainer(cp) as trainer:      # Trainer's CRDs and webhooks, then its torch-distributed runtime
            ...                           # TrainJobs get a JobSet, Jobs, pods and status

Both managers come from one wrapper module (tests/upstream/trainer), at the versions its go.mod
pins: Trainer v2.3.0 and the JobSet release Trainer requires. As in harness.upstream, every
upstream data file (CRDs, webhook manifests and their kustomize patches, runtimes) is read from
the Go module cache at test time; none is copied into the project.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import yaml

from harness import processes, tools
from harness.controlplane import ControlPlane
from harness.upstream import UpstreamServer, webhook_by_url

TRAINER_MODULE_PATH = "github.com/kubeflow/trainer/v2"
JOBSET_MODULE_PATH = "sigs.k8s.io/jobset"
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def kustomized(directory: Path) -> list[dict]:
    """The objects of a kustomization's `resources` with its `patches` applied. The webhook
    kustomizations of both modules use only JSON 6902 patches (add and replace), aimed by kind
    and, in JobSet's, by name; nothing else of kustomize is needed for them."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = [obj for resource in kustomization.get("resources") or []
               for obj in yaml.safe_load_all((directory / resource).read_text()) if obj]
    for patch in kustomization.get("patches") or []:
        target = patch.get("target") or {}
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        for obj in objects:
            name = obj["metadata"]["name"]
            if obj["kind"] == target.get("kind") and target.get("name", name) == name:
                json_patch(obj, operations)
    return objects


def json_patch(obj: dict, operations: list[dict]) -> None:
    """Applies RFC 6902 `add` and `replace` operations to `obj` in place."""
    for operation in operations:
        if operation["op"] not in ("add", "replace"):
            raise ValueError(f"unsupported JSON patch operation {operation['op']!r}")
        *parents, last = [part.replace("~1", "/").replace("~0", "~")
                          for part in operation["path"].split("/")[1:]]
        node = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        value = copy.deepcopy(operation["value"])
        if not isinstance(node, list):
            node[last] = value
        elif operation["op"] == "add":
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[int(last)] = value


class _Manager(UpstreamServer):
    """One manager of the Trainer build: it installs the module's CRDs, registers its webhooks
    from the module's webhook kustomization, and waits until the apiserver enforces them."""

    binary: str         # of the Trainer build
    module_path: str
    crd_dir: str        # in the module
    webhook_dir: str    # in the module

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None) -> None:
        super().__init__(cp, workdir, bin_dir, tools.TRAINER, self.module_path)
        # Two managers of one build: each logs and registers under its own name.
        self.logfile = self.workdir / f"{self.binary}.log"
        self.webhook_configuration = f"traindeploy-test-{self.binary}"
        self._registered: list[str] = []

    @property
    def crd_files(self) -> list[Path]:
        return sorted(path for path in (self.module_dir / self.crd_dir).glob("*.yaml")
                      if path.name != "kustomization.yaml")

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.install_crds(*self.crd_files)
        port, certificate = self._start_manager(self.binary, ["--zap-devel=false"], timeout)
        self._register_webhooks(port, certificate)
        self._after_webhooks(timeout)

    def _register_webhooks(self, port: int, ca: bytes) -> None:
        for upstream in kustomized(self.module_dir / self.webhook_dir):
            if upstream["kind"] not in WEBHOOK_KINDS:
                continue
            configuration = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": upstream["kind"],
                             "metadata": {"name": self.webhook_configuration},
                             "webhooks": [webhook_by_url(webhook, port, ca) for webhook in upstream["webhooks"]]}
            self.cp.kubectl_run("apply", "--server-side", "-f", "-", input=json.dumps(configuration))
            self._registered.append(upstream["kind"])
        if sorted(self._registered) != sorted(WEBHOOK_KINDS):
            raise RuntimeError(f"{self.module_dir / self.webhook_dir} lacks one of {WEBHOOK_KINDS}")

    def _after_webhooks(self, timeout: float) -> None:
        """Waits until the apiserver calls both webhook configurations (it picks them up
        asynchronously), and installs what the manager's users need."""
        raise NotImplementedError

    def _dry_run(self, body: dict) -> subprocess.CompletedProcess:
        return self.cp.kubectl_run("create", "--dry-run=server", "-o", "json", "-f", "-",
                                   input=json.dumps(body), check=False)

    def _wait_refused(self, body: dict, says: str, what: str, timeout: float) -> None:
        """Until a server dry run of `body` is refused with a message that `says` it. (The
        webhooks answer with a field error list, which the apiserver passes on as the object
        being invalid, without the webhook's name.)"""
        def refused() -> bool:
            result = self._dry_run(body)
            return result.returncode != 0 and says in result.stderr

        processes.wait_until(refused, timeout, what, self._procs[0], self.logfile)

    def _wait_defaulted(self, body: dict, defaulted, what: str, timeout: float) -> None:
        """Until a server dry run of `body` comes back with `defaulted(obj)` true."""
        def mutated() -> bool:
            result = self._dry_run(body)
            return result.returncode == 0 and defaulted(json.loads(result.stdout))

        processes.wait_until(mutated, timeout, what, self._procs[0], self.logfile)

    def _before_stop(self) -> None:
        for kind in self._registered:
            self.cp.kubectl_run("delete", kind.lower(), self.webhook_configuration, "--ignore-not-found",
                                check=False, timeout=30)
        self._registered.clear()


def _probe_jobset(**spec: object) -> dict:
    job = {"template": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}
    first = {"name": "first", **job, **spec}
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "webhook-probe", "namespace": "default"},
            "spec": {"replicatedJobs": [first]}}


class JobSet(_Manager):
    """JobSet's controllers and webhooks (JobSet; Pod, for exclusive placement) against `cp`."""

    binary = "jobset-manager"
    module_path = JOBSET_MODULE_PATH
    # The CRD without the kustomize patches of config/components/crd: they add a conversion
    # webhook and cert-manager's CA injection, and JobSet serves a single version.
    crd_dir = "config/components/crd/bases"
    webhook_dir = "config/components/webhook"

    def _after_webhooks(self, timeout: float) -> None:
        # The validator refuses a first replicated job that depends on another; the defaulter
        # gives every JobSet a success policy.
        self._wait_refused(_probe_jobset(dependsOn=[{"name": "other", "status": "Ready"}]),
                           "DependsOn can't be set for the first ReplicatedJob",
                           "the JobSet validator to be enforced", timeout)
        self._wait_defaulted(_probe_jobset(), lambda obj: "successPolicy" in obj["spec"],
                             "the JobSet defaulter to be enforced", timeout)


class Trainer(_Manager):
    """Kubeflow Trainer v2's controllers and webhooks against `cp`, with the module's
    `runtimes` (files under manifests/base/runtimes) installed once its webhooks are enforced.
    Start it after `JobSet`: its jobset plugin watches JobSets only if their CRD is served."""

    binary = "trainer-manager"
    module_path = TRAINER_MODULE_PATH
    crd_dir = "manifests/base/crds"
    webhook_dir = "manifests/base/webhook"

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None,
                 runtimes: tuple[str, ...] = ("torch_distributed.yaml",)) -> None:
        super().__init__(cp, workdir, bin_dir)
        self.runtimes = runtimes

    def runtime(self, file: str) -> dict:
        """A ClusterTrainingRuntime as the module ships it (manifests/base/runtimes/`file`)."""
        return yaml.safe_load((self.module_dir / "manifests" / "base" / "runtimes" / file).read_text())

    def install_runtime(self, body: dict) -> None:
        """Creates or updates a (Cluster)TrainingRuntime; the Trainer's webhook validates it."""
        self.cp.kubectl_run("apply", "--server-side", "-f", "-", input=json.dumps(body))

    def _after_webhooks(self, timeout: float) -> None:
        # The validator refuses a TrainJob whose runtime does not exist.
        self._wait_refused(_probe_trainjob("traindeploy-no-such-runtime"),
                           "specified clusterTrainingRuntime must be created before the TrainJob",
                           "the TrainJob validator to be enforced", timeout)
        for file in self.runtimes:
            self.install_runtime(self.runtime(file))
        if self.runtimes:
            # The defaulter stamps each runtime patch with the time it was written.
            name = self.runtime(self.runtimes[0])["metadata"]["name"]
            self._wait_defaulted(_probe_trainjob(name, runtimePatches=[{"manager": "traindeploy.io/probe"}]),
                                 lambda obj: "time" in obj["spec"]["runtimePatches"][0],
                                 "the TrainJob defaulter to be enforced", timeout)


def _probe_trainjob(runtime: str, **spec: object) -> dict:
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "webhook-probe", "namespace": "default"},
            "spec": {"runtimeRef": {"name": runtime, "apiGroup": "trainer.kubeflow.org",
                                    "kind": "ClusterTrainingRuntime"}, **spec}}
