"""The real upstream controllers, on a control plane of their own: KWOK plays the kubelets of fake
Nodes, and the Training Operator reconciles PyTorchJobs.

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
# JobSet (under Trainer v2) makes batch Jobs, and the job controller makes their pods.
UPSTREAM_KCM_CONTROLLERS = ("garbage-collector-controller,namespace-controller,"
                            "node-lifecycle-controller,job-controller")

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


def _exit_stage(name: str, operator: str, phase: str, reason: str) -> dict:
    annotation = f'.metadata.annotations["{EXIT_CODE_ANNOTATION}"]'
    status = f"""\
{{{{ $now := Now }}}}
{{{{ $code := index .metadata.annotations "{EXIT_CODE_ANNOTATION}" }}}}
conditions:
- lastTransitionTime: {{{{ $now | Quote }}}}
  reason: {reason}
  status: "False"
  type: Ready
- lastTransitionTime: {{{{ $now | Quote }}}}
  reason: {reason}
  status: "False"
  type: ContainersReady
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: {{{{ $code }}}}
      finishedAt: {{{{ $now | Quote }}}}
      reason: {"Completed" if phase == "Succeeded" else "Error"}
{{{{ end }}}}
phase: {phase}
"""
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": annotation, "operator": "Exists"},
                {"key": annotation, "operator": operator, "values": ["0"]},
            ]},
            "next": {"statusTemplate": status},
        },
    }


EXIT_STAGES = (
    _exit_stage("traindeploy-pod-exit-success", "In", "Succeeded", "PodCompleted"),
    _exit_stage("traindeploy-pod-exit-failure", "NotIn", "Failed", "PodFailed"),
)


class Kwok(processes.LocalServer):
    """KWOK's controller against `cp`: it manages the Nodes made with `add_node`."""

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None) -> None:
        self.cp = cp
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="traindeploy-kwok-"))
        self.bin_dir = bin_dir or tools.kwok_bin_dir()
        self.module_dir = tools.go_module_dir(tools.KWOK, KWOK_MODULE_PATH)
        self.logfile = self.workdir / "kwok.log"
        self._procs: list[subprocess.Popen] = []

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ours = self.workdir / "traindeploy-stages.yaml"
        ours.write_text(yaml.safe_dump_all(EXIT_STAGES, sort_keys=False))
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


class WebhookManager(processes.LocalServer):
    """A controller-runtime manager of the upstream tier against `cp`, from one of the wrapper
    mains (they all take the flags below): it installs `crd_files`, serves its admission webhooks
    on 127.0.0.1 with a self-signed certificate, and registers them by URL (`clientConfig.url`)
    from the module's own webhook manifests (`_register_webhooks`)."""

    binary: str

    def __init__(self, cp: ControlPlane, workdir: Path | None, bin_dir: Path, module_dir: Path) -> None:
        self.cp = cp
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"traindeploy-{self.binary}-"))
        self.bin_dir = bin_dir
        self.module_dir = module_dir
        self.logfile = self.workdir / f"{self.binary}.log"
        self.webhook_configuration = f"traindeploy-test-{self.binary}"
        self._procs: list[subprocess.Popen] = []

    @property
    def crd_files(self) -> list[Path]:
        raise NotImplementedError

    def _args(self) -> list[str]:
        """The manager's own flags, besides the ones every wrapper main takes."""
        return []

    def _register_webhooks(self, port: int, ca: bytes) -> None:
        raise NotImplementedError

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.install_crds(*self.crd_files)
        certs = self.workdir / "certs"
        ca = self_signed_cert(certs)
        webhook_port, probe_port = processes.free_port(), processes.free_port()
        argv = [str(self.bin_dir / self.binary), *self._args(),
                "--webhook-host=127.0.0.1", f"--webhook-server-port={webhook_port}",
                f"--webhook-cert-dir={certs}",
                f"--health-probe-bind-address=127.0.0.1:{probe_port}",
                "--metrics-bind-address=0",
                "--zap-log-level=info", "--zap-devel=false"]
        env = {"KUBECONFIG": str(self.cp.kubeconfig), "HOME": str(self.workdir), "PATH": "/usr/bin:/bin"}
        proc = processes.start(argv, self.logfile, env=env)
        self._procs.append(proc)
        processes.wait_until(lambda: http_ok(f"http://127.0.0.1:{probe_port}/readyz"), timeout,
                             f"{self.binary} /readyz", proc, self.logfile)
        self._register_webhooks(webhook_port, ca)


class TrainingOperator(WebhookManager):
    """The Training Operator v1 against `cp`, with only the given job kinds enabled.

    It installs those kinds' CRDs from the module and registers its validating webhook from the
    module's own webhook manifest.
    """

    binary = "training-operator"

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None,
                 schemes: tuple[str, ...] = ("pytorchjob",)) -> None:
        super().__init__(cp, workdir, bin_dir or tools.training_operator_bin_dir(),
                         tools.go_module_dir(tools.TRAINING_OPERATOR, TRAINING_OPERATOR_MODULE_PATH))
        self.schemes = schemes

    @property
    def crd_files(self) -> list[Path]:
        return [self.module_dir / "manifests" / "base" / "crds" / f"kubeflow.org_{scheme}s.yaml"
                for scheme in self.schemes]

    def _args(self) -> list[str]:
        return [f"--enable-scheme={scheme}" for scheme in self.schemes]

    def _register_webhooks(self, port: int, ca: bytes) -> None:
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


def self_signed_cert(directory: Path) -> bytes:
    """Writes tls.key and a self-signed tls.crt for 127.0.0.1 into `directory` (the file names
    controller-runtime's webhook server reads); returns the certificate, the webhooks' CA bundle."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
                   check=True, capture_output=True)
    return (directory / "tls.crt").read_bytes()


def webhook_by_url(webhook: dict, port: int, ca: bytes) -> dict:
    """An upstream webhook entry that names its in-cluster Service, pointed at 127.0.0.1:`port`
    instead (same path), trusting `ca`."""
    path = webhook["clientConfig"]["service"]["path"]
    return {**webhook, "clientConfig": {"url": f"https://127.0.0.1:{port}{path}",
                                        "caBundle": base64.b64encode(ca).decode()}}


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


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
    its torch-distributed runtime) until interrupted."""
    import argparse
    import signal
    import threading

    from harness.paths import OUR_CRDS
    from harness.upstream_trainer import JobSet, Trainer  # it builds on this module

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
                    JobSet(cp, workdir=workdir / "jobset"), Trainer(cp, workdir=workdir / "trainer"):
                print(f"logs in {workdir}", flush=True)
                print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
                stopping.wait()
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
