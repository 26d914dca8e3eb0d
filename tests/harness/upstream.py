"""The real upstream controllers, on a control plane of their own: KWOK plays the kubelets of fake
Nodes, and the Training Operator reconciles PyTorchJobs (KServe: harness.upstream_kserve).

    with ControlPlane(scheduler=True, controllers=UPSTREAM_KCM_CONTROLLERS) as cp:
        with Kwok(cp) as kwok:
            kwok.add_node("gpu-0", cpu="32", memory="256Gi", gpus=8)
            with TrainingOperator(cp) as operator:   # installs its CRDs and its webhook
                ...                                  # PyTorchJobs get pods, Services and status
            kwok.end_pod(core_api, namespace, pod, exit_code=0)   # the pod Succeeds

Their own control plane, because the PyTorchJob CRD of the Training Operator we run (v1.9.2) is
not the one the session control plane installs from the shared upstream CRDs (v1.9.4). Every
upstream data file (CRDs, KWOK's Stages, the webhook manifest) is read from the Go module cache,
at the version the wrapper module under tests/upstream/ pins; none is copied into the project.
Kubeflow Trainer v2 and JobSet, on the same cluster, are in harness.upstream_trainer.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from harness import processes, tools
from harness.controlplane import ControlPlane

log = logging.getLogger(__name__)

KWOK_MODULE_PATH = "sigs.k8s.io/kwok"
TRAINING_OPERATOR_MODULE_PATH = "github.com/kubeflow/training-operator"

# The node lifecycle controller lifts the not-ready taint the apiserver puts on every new Node
# (admission plugin TaintNodesByCondition) once KWOK reports it Ready, as on a real cluster.
# KServe's Standard mode makes Deployments: their ReplicaSets and pods, and the Available and
# Progressing conditions KServe reads, come from the deployment and replicaset controllers; the
# endpointslice controller gives the predictor Service its endpoints. JobSet (under Trainer v2)
# makes batch Jobs, and the job controller makes their pods. (Katib's suggestion Deployments,
# images that cannot run here, ask for more CPU than any node has and stay unavailable:
# harness.upstream_katib.)
UPSTREAM_KCM_CONTROLLERS = ("garbage-collector-controller,namespace-controller,"
                            "node-lifecycle-controller,deployment-controller,replicaset-controller,"
                            "endpointslice-controller,job-controller")

# Nodes KWOK manages carry this annotation; other Nodes (none here) would be left alone.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"

# KWOK's own Stages as the module ships them (kustomize/stage/...): Nodes become Ready and keep a
# Lease; pods go Running and Ready at once, deleted pods go away. Passing any Stage replaces
# KWOK's built-in set, so the ones we want are listed here. Not its pod-complete Stage, which ends
# every pod a batch Job owns at once: JobSet's pods (under Trainer v2) end when a test says so.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

# A test ends a Running pod by writing its exit code here; our two Stages below play the kubelet
# seeing the container exit: 0 Succeeds the pod, anything else Fails it.
EXIT_CODE_ANNOTATION = "traindeploy.io/test-exit-code"


def _false_conditions(reason: str, *kinds: str) -> str:
    """Pod conditions, in a Stage's status template, that the kubelet sets False for `reason`."""
    return "".join(f"""\
- lastTransitionTime: {{{{ $now | Quote }}}}
  reason: {reason}
  status: "False"
  type: {kind}
""" for kind in kinds)


def _container_statuses(field: str, state: str) -> str:
    """`field` (containerStatuses, initContainerStatuses) for every container, not ready, in
    `state` (the template lines under `state:`, which may use the range's `.`)."""
    containers = "containers" if field == "containerStatuses" else "initContainers"
    return f"""\
{field}:
{{{{ range .spec.{containers} }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
  started: false
{state}
{{{{ end }}}}
"""


def _stage(name: str, expressions: list[dict], status: str, weight: int = 0) -> dict:
    spec: dict = {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                  "selector": {"matchExpressions": [
                      {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}, *expressions]},
                  "next": {"statusTemplate": status}}
    if weight:
        spec["weight"] = weight
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def _annotation(key: str) -> str:
    return f'.metadata.annotations["{key}"]'


def _exit_stage(name: str, operator: str, phase: str, reason: str) -> dict:
    terminated = f"""\
  restartCount: 0
  state:
    terminated:
      exitCode: {{{{ $code }}}}
      finishedAt: {{{{ $now | Quote }}}}
      reason: {"Completed" if phase == "Succeeded" else "Error"}"""
    status = f"""\
{{{{ $now := Now }}}}
{{{{ $code := index .metadata.annotations "{EXIT_CODE_ANNOTATION}" }}}}
conditions:
{_false_conditions(reason, "Ready", "ContainersReady")}\
{_container_statuses("containerStatuses", terminated)}\
phase: {phase}
"""
    annotation = _annotation(EXIT_CODE_ANNOTATION)
    return _stage(name, [{"key": ".status.phase", "operator": "In", "values": ["Running"]},
                         {"key": annotation, "operator": "Exists"},
                         {"key": annotation, "operator": operator, "values": ["0"]}], status)


EXIT_STAGES = (
    _exit_stage("traindeploy-pod-exit-success", "In", "Succeeded", "PodCompleted"),
    _exit_stage("traindeploy-pod-exit-failure", "NotIn", "Failed", "PodFailed"),
)

# A model whose storage cannot be fetched: a pod KServe made for this storage URI (the annotation
# its controller puts on predictor pods) never starts, because its storage initializer
# crash-loops, exiting with UNFETCHABLE_EXIT_CODE, as the kubelet reports it.
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
UNFETCHABLE_STORAGE_URI = "s3://traindeploy-test/unfetchable/model"
STORAGE_INITIALIZER = "storage-initializer"
UNFETCHABLE_EXIT_CODE = 3
INIT_FAILURE_MESSAGE = "the test made this storage unfetchable"


def _init_failure_stage() -> dict:
    crash_loop = f"""\
{{{{ if eq .name "{STORAGE_INITIALIZER}" }}}}
  restartCount: 1
  lastState:
    terminated:
      exitCode: {UNFETCHABLE_EXIT_CODE}
      finishedAt: {{{{ $now | Quote }}}}
      message: {INIT_FAILURE_MESSAGE}
      reason: Error
      startedAt: {{{{ $now | Quote }}}}
  state:
    waiting:
      reason: CrashLoopBackOff
{{{{ else }}}}
  restartCount: 0
  state:
    waiting:
      reason: PodInitializing
{{{{ end }}}}"""
    initializing = """\
  restartCount: 0
  state:
    waiting:
      reason: PodInitializing"""
    # Its times are the pod's creation: see the weight below.
    status = f"""\
{{{{ $now := .metadata.creationTimestamp }}}}
conditions:
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "True"
  type: PodScheduled
{_false_conditions("ContainersNotInitialized", "Initialized", "Ready", "ContainersReady")}\
{_container_statuses("initContainerStatuses", crash_loop)}{_container_statuses("containerStatuses", initializing)}\
phase: Pending
"""
    # Chosen over KWOK's pod-ready Stage, which matches the same pods with no weight. The pod still
    # matches once patched, but the status is the same each time, so that patch changes nothing.
    return _stage("traindeploy-pod-init-failure", [
        {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
        {"key": _annotation(STORAGE_URI_ANNOTATION), "operator": "In", "values": [UNFETCHABLE_STORAGE_URI]}],
        status, weight=1)


POD_STAGES = (*EXIT_STAGES, _init_failure_stage())


class UpstreamServer(processes.LocalServer):
    """An upstream controller against `cp`, run from the binaries of one wrapper build, with its
    data files read from the module it pins (`module_dir`)."""

    def __init__(self, cp: ControlPlane, workdir: Path | None, bin_dir: Path | None, build: tools.GoBuild,
                 module_path: str) -> None:
        self.cp = cp
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"traindeploy-{build.name}-"))
        self.bin_dir = bin_dir or tools.go_bin_dir(build)
        self.module_dir = tools.go_module_dir(build, module_path)
        self.logfile = self.workdir / f"{build.name}.log"
        self._procs: list[subprocess.Popen] = []

    def _start_manager(self, binary: str, args: list[str], timeout: float,
                       env: dict[str, str] | None = None) -> tuple[int, bytes]:
        """A controller-runtime manager of the wrapper modules' flags: its webhook server on
        127.0.0.1 with a self-signed certificate, metrics off. Returns the webhook port and the
        certificate (the CA bundle of its registration) once /readyz answers."""
        certs = self_signed_certificate(self.workdir / "certs")
        webhook_port, probe_port = processes.free_port(), processes.free_port()
        argv = [str(self.bin_dir / binary), *args,
                "--webhook-host=127.0.0.1", f"--webhook-server-port={webhook_port}",
                f"--webhook-cert-dir={certs}",
                f"--health-probe-bind-address=127.0.0.1:{probe_port}",
                "--metrics-bind-address=0",
                "--zap-log-level=info"]
        env = {"KUBECONFIG": str(self.cp.kubeconfig), "HOME": str(self.workdir), "PATH": "/usr/bin:/bin",
               **(env or {})}
        proc = processes.start(argv, self.logfile, env=env)
        self._procs.append(proc)
        processes.wait_until(lambda: http_ok(f"http://127.0.0.1:{probe_port}/readyz"), timeout,
                             f"{binary} /readyz", proc, self.logfile)
        return webhook_port, (certs / "tls.crt").read_bytes()


class Kwok(UpstreamServer):
    """KWOK's controller against `cp`: it manages the Nodes made with `add_node`."""

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None) -> None:
        super().__init__(cp, workdir, bin_dir, tools.KWOK, KWOK_MODULE_PATH)

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ours = self.workdir / "traindeploy-stages.yaml"
        ours.write_text(yaml.safe_dump_all(POD_STAGES, sort_keys=False))
        configs = [self.module_dir / stage for stage in KWOK_STAGES] + [ours]
        missing = [str(path) for path in configs if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"KWOK Stages not found: {missing}")
        port = processes.free_port()
        argv = [str(self.bin_dir / "kwok"),
                *(f"--config={path}" for path in configs),
                f"--kubeconfig={self.cp.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                # Pod IPs from a range of their own, apart from the Service range (10.0.0.0/24).
                "--cidr=10.244.0.0/16",
                f"--server-address=127.0.0.1:{port}"]
        # HOME: KWOK would also read ~/.kwok/kwok.yaml; the tests use only the Stages above.
        env = {"HOME": str(self.workdir), "PATH": "/usr/bin:/bin"}
        proc = processes.start(argv, self.logfile, env=env)
        self._procs.append(proc)
        processes.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout,
                             "kwok /healthz", proc, self.logfile)


    def add_node(self, name: str, *, cpu: str = "32", memory: str = "256Gi", gpus: int = 0,
                 pods: str = "110", labels: dict[str, str] | None = None) -> dict:
        """A fake Node with this capacity; KWOK makes it Ready (see `wait_nodes_ready`)."""
        capacity = {"cpu": cpu, "memory": memory, "pods": pods}
        if gpus:
            capacity[GPU_RESOURCE] = str(gpus)
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok", **(labels or {})}},
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }
        self.cp.kubectl_run("create", "-f", "-", input=json.dumps(node))
        return node

    def wait_nodes_ready(self, names: list[str], timeout: float = 60.0) -> None:
        """Ready, and without the not-ready taint (the node lifecycle controller lifts it)."""
        def ready() -> bool:
            nodes = json.loads(self.cp.kubectl_run("get", "nodes", "-o", "json").stdout)["items"]
            by_name = {node["metadata"]["name"]: node for node in nodes}
            return all(name in by_name and _node_schedulable(by_name[name]) for name in names)

        processes.wait_until(ready, timeout, f"nodes {names} Ready and untainted", self._procs[0], self.logfile)

    @staticmethod
    def end_pod(core_api, namespace: str, name: str, exit_code: int = 0) -> None:
        """Makes a Running pod's containers exit with `exit_code` (through our Stages above)."""
        core_api.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {
            EXIT_CODE_ANNOTATION: str(exit_code)}}})


def _node_schedulable(node: dict) -> bool:
    conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    taints = node.get("spec", {}).get("taints") or []
    return conditions.get("Ready") == "True" and not any(
        taint.get("key", "").startswith("node.kubernetes.io/") for taint in taints)


class TrainingOperator(UpstreamServer):
    """The Training Operator v1 against `cp`, with only the given job kinds enabled.

    It installs those kinds' CRDs from the module, serves its validating webhook on 127.0.0.1
    with a self-signed certificate, and registers it by URL (`clientConfig.url`) from the
    module's own webhook manifest.
    """

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None,
                 schemes: tuple[str, ...] = ("pytorchjob",)) -> None:
        super().__init__(cp, workdir, bin_dir, tools.TRAINING_OPERATOR, TRAINING_OPERATOR_MODULE_PATH)
        self.schemes = schemes
        self.webhook_configuration = "traindeploy-test-training-operator"

    @property
    def crd_files(self) -> list[Path]:
        return [self.module_dir / "manifests" / "base" / "crds" / f"kubeflow.org_{scheme}s.yaml"
                for scheme in self.schemes]

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.install_crds(*self.crd_files)
        port, certificate = self._start_manager(
            "training-operator", [*(f"--enable-scheme={scheme}" for scheme in self.schemes), "--zap-devel=false"],
            timeout)
        self._register_webhook(port, certificate)

    def _register_webhook(self, port: int, ca: bytes) -> None:
        manifest = self.module_dir / "manifests" / "base" / "webhook" / "manifests.yaml"
        (upstream,) = [doc for doc in yaml.safe_load_all(manifest.read_text())
                       if doc and doc["kind"] == "ValidatingWebhookConfiguration"]
        plurals = {f"{scheme}s" for scheme in self.schemes}
        webhooks = []
        for webhook in upstream["webhooks"]:
            if not plurals & {resource for rule in webhook["rules"] for resource in rule["resources"]}:
                continue
            webhooks.append(webhook_by_url(webhook, port, ca))
        if len(webhooks) != len(plurals):
            raise RuntimeError(f"{manifest} has no webhook for some of {sorted(plurals)}")
        configuration = {"apiVersion": "admissionregistration.k8s.io/v1",
                         "kind": "ValidatingWebhookConfiguration",
                         "metadata": {"name": self.webhook_configuration}, "webhooks": webhooks}
        self.cp.kubectl_run("apply", "--server-side", "-f", "-", input=json.dumps(configuration))
        if "pytorchjob" in self.schemes:
            self._wait_webhook_enforced()

    def _wait_webhook_enforced(self, timeout: float = 30.0) -> None:
        """The apiserver picks webhook configurations up asynchronously: wait until a PyTorchJob
        the webhook must refuse (no container named `pytorch`) is refused, in a server dry run."""
        probe = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                 "metadata": {"name": "webhook-probe", "namespace": "default"},
                 "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {
                     "containers": [{"name": "not-pytorch", "image": "busybox"}]}}}}}}

        def refused() -> bool:
            result = self.cp.kubectl_run("create", "--dry-run=server", "-f", "-", input=json.dumps(probe),
                                         check=False)
            return (result.returncode != 0
                    and "validator.pytorchjob.training-operator.kubeflow.org" in result.stderr)

        processes.wait_until(refused, timeout, "the PyTorchJob webhook to be enforced", self._procs[0],
                             self.logfile)

    def _before_stop(self) -> None:
        self.cp.kubectl_run("delete", "validatingwebhookconfiguration", self.webhook_configuration,
                            "--ignore-not-found", check=False, timeout=30)


def webhook_by_url(webhook: dict, port: int, ca: bytes) -> dict:
    """An upstream webhook entry that names its in-cluster Service, pointed at 127.0.0.1:`port`
    instead (same path), trusting `ca`."""
    path = webhook["clientConfig"]["service"]["path"]
    return {**webhook, "clientConfig": {"url": f"https://127.0.0.1:{port}{path}",
                                        "caBundle": base64.b64encode(ca).decode()}}


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def self_signed_certificate(directory: Path) -> Path:
    """`directory` with tls.crt and tls.key for 127.0.0.1, for a webhook registered by URL."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
                   check=True, capture_output=True)
    return directory


def wait_for(read, predicate=bool, timeout: float = 60.0, what: str = "condition", interval: float = 0.2):
    """Polls `read()` until `predicate(value)`; returns the value (the last one in the error)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = read()
        if predicate(value):
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.upstream up`: the upstream tier's cluster (control plane with
    kube-scheduler, KWOK with two 8-GPU nodes, the Training Operator, JobSet and Trainer v2 with
    its torch-distributed runtime, Katib, KServe) until interrupted."""
    import argparse
    import signal
    import threading

    from harness.paths import OUR_CRDS
    from harness.upstream_katib import Katib
    from harness.upstream_kserve import KServe
    from harness.upstream_trainer import JobSet, Trainer  # they build on this module

    parser = argparse.ArgumentParser(prog="python -m harness.upstream")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workdir", type=Path,
                        help="keep state and logs here instead of a temporary directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="traindeploy-upstream-"))
    with ControlPlane(workdir=workdir / "controlplane", scheduler=True,
                      controllers=UPSTREAM_KCM_CONTROLLERS) as cp:
        cp.install_crds(OUR_CRDS)
        with Kwok(cp, workdir=workdir / "kwok") as kwok:
            names = ["gpu-node-0", "gpu-node-1"]
            for name in names:
                kwok.add_node(name, gpus=8)
            kwok.wait_nodes_ready(names)
            with TrainingOperator(cp, workdir=workdir / "training-operator"), \
                    JobSet(cp, workdir=workdir / "jobset"), Trainer(cp, workdir=workdir / "trainer"), \
                    Katib(cp, workdir=workdir / "katib"), KServe(cp, workdir=workdir / "kserve"):
                print(f"logs in {workdir}", flush=True)
                print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
                stopping.wait()
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
