"""The real KServe controller (v0.20.0, tests/upstream/kserve) on the upstream tier's control plane,
in Standard (RawDeployment) mode: InferenceServices become Deployments, Services and an Ingress;
KWOK plays the predictor pods.

    with KServe(cp) as kserve:       # CRDs, inferenceservice-config, kserve-mlserver, webhooks
        ...                          # InferenceServices are admitted, defaulted and reconciled

What it installs is read at test time from the module cache, at the version the wrapper module
pins: the CRDs (config/crd/full), the ConfigMap (config/configmap/inferenceservice.yaml) with one
change, the MLServer runtime (config/runtimes/kserve-mlserver.yaml) and the default storage
container (config/storagecontainers/default.yaml) with the images their kustomizations name, and
the webhook configurations (config/webhook/manifests.yaml) pointed at
127.0.0.1. The Gateway API HTTPRoute CRD, for the operator's Standard-mode canary route, comes from
sigs.k8s.io/gateway-api at the version KServe requires.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import yaml

from harness import processes, tools
from harness.controlplane import ControlPlane
from harness.upstream import UpstreamServer

KSERVE_MODULE_PATH = "github.com/kserve/kserve"
GATEWAY_API_MODULE_PATH = "sigs.k8s.io/gateway-api"

# Where the manager reads inferenceservice-config ($POD_NAMESPACE, constants.KServeNamespace).
KSERVE_NAMESPACE = "kserve"
CONFIGMAP_NAME = "inferenceservice-config"
# What KServe's own Standard-mode install changes in the shipped ConfigMap
# (hack/setup/quick-install/kserve-standard-mode-*: deploy.defaultDeploymentMode=Standard, and
# without a Gateway API network layer nothing else), and the one setting KServe asks for when
# Istio is absent (its VirtualServiceCRDNotFound event: ingress.disableIstioVirtualHost=true).
# The ingress stays a networking/v1 Ingress of class istio, which KServe creates and no
# controller serves here: its IngressReady does not wait for an Ingress status
# (reconcilers/ingress/kube_ingress_reconciler.go).
DEFAULT_DEPLOYMENT_MODE = "Standard"
CONFIG_CHANGES = {"deploy": {"defaultDeploymentMode": DEFAULT_DEPLOYMENT_MODE},
                  "ingress": {"disableIstioVirtualHost": True}}

CRDS = ("serving.kserve.io_inferenceservices.yaml", "serving.kserve.io_servingruntimes.yaml",
        "serving.kserve.io_clusterservingruntimes.yaml",
        # The controller lists an InferenceService's TrainedModels when it is deleted.
        "serving.kserve.io_trainedmodels.yaml",
        # Which storage initializer serves a storageUri's scheme (s3://, gs://, ...).
        "clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml")
RUNTIMES = ("kserve-mlserver",)
STORAGE_CONTAINERS = ("default",)
# The webhooks of the InferenceService controller: the ISVC defaulter and validator, and the pod
# mutator that injects the storage initializer (names as in config/webhook/manifests.yaml).
WEBHOOKS = ("inferenceservice.kserve-webhook-server.defaulter",
            "inferenceservice.kserve-webhook-server.pod-mutator",
            "inferenceservice.kserve-webhook-server.validator")


class KServe(UpstreamServer):
    """KServe's InferenceService controller and webhooks against `cp`."""

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None) -> None:
        super().__init__(cp, workdir, bin_dir, tools.KSERVE, KSERVE_MODULE_PATH)
        self.gateway_api_dir = tools.go_module_dir(tools.KSERVE, GATEWAY_API_MODULE_PATH)
        self.webhook_configuration = "traindeploy-test-kserve"

    @property
    def crd_files(self) -> list[Path]:
        return [*(self.module_dir / "config" / "crd" / "full" / name for name in CRDS),
                self.gateway_api_dir / "config" / "crd" / "standard" / "gateway.networking.k8s.io_httproutes.yaml"]

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.install_crds(*self.crd_files)
        self._apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KSERVE_NAMESPACE}},
                    self.configmap(), *self.cluster_objects("runtimes", RUNTIMES),
                    *self.cluster_objects("storagecontainers", STORAGE_CONTAINERS))
        # $POD_NAMESPACE: where the manager reads inferenceservice-config.
        port, certificate = self._start_manager("kserve-manager", [], timeout, env={"POD_NAMESPACE": KSERVE_NAMESPACE})
        self._apply(*self.webhook_configurations(port, certificate))
        self._wait_webhooks_enforced()

    def _apply(self, *objects: dict) -> None:
        self.cp.kubectl_run("apply", "--server-side", "--force-conflicts", "-f", "-",
                            input="\n---\n".join(json.dumps(o) for o in objects))

    def configmap(self) -> dict:
        """The shipped inferenceservice-config with CONFIG_CHANGES made to its JSON values."""
        shipped = yaml.safe_load((self.module_dir / "config" / "configmap" / "inferenceservice.yaml").read_text())
        data = dict(shipped["data"])
        for key, changes in CONFIG_CHANGES.items():
            data[key] = json.dumps({**json.loads(data[key]), **changes})
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": CONFIGMAP_NAME, "namespace": KSERVE_NAMESPACE}, "data": data}

    def cluster_objects(self, directory: str, names: tuple[str, ...]) -> list[dict]:
        """config/<directory>/<name>.yaml for each name (ClusterServingRuntimes, the default
        ClusterStorageContainer), with the images the directory's kustomization gives their
        placeholder names (`mlserver:replace` becomes the seldonio/mlserver release it names)."""
        found = self.module_dir / "config" / directory
        images = {entry["name"]: f"{entry['newName']}:{entry['newTag']}"
                  for entry in yaml.safe_load((found / "kustomization.yaml").read_text())["images"]}
        objects = []
        for name in names:
            obj = yaml.safe_load((found / f"{name}.yaml").read_text())
            spec = obj["spec"]
            for container in spec.get("containers") or [spec["container"]]:
                container["image"] = images.get(container["image"].split(":", 1)[0], container["image"])
            objects.append(obj)
        return objects

    def webhook_configurations(self, port: int, ca: bytes) -> list[dict]:
        """The module's mutating and validating configurations, only WEBHOOKS, served by URL."""
        manifest = self.module_dir / "config" / "webhook" / "manifests.yaml"
        bundle = base64.b64encode(ca).decode()
        configurations = []
        for doc in yaml.safe_load_all(manifest.read_text()):
            if not doc:
                continue
            webhooks = [{**webhook, "clientConfig": {
                "url": f"https://127.0.0.1:{port}{webhook['clientConfig']['service']['path']}", "caBundle": bundle}}
                for webhook in doc["webhooks"] if webhook["name"] in WEBHOOKS]
            if webhooks:
                configurations.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                                       "metadata": {"name": self.webhook_configuration}, "webhooks": webhooks})
        found = {webhook["name"] for c in configurations for webhook in c["webhooks"]}
        if found != set(WEBHOOKS):
            raise RuntimeError(f"{manifest} lacks the webhooks {sorted(set(WEBHOOKS) - found)}")
        return configurations

    def _wait_webhooks_enforced(self, timeout: float = 30.0) -> None:
        """The apiserver picks webhook configurations up asynchronously: wait until a server dry
        run of an InferenceService comes back defaulted (the deployment-mode annotation) and one
        named against KServe's rule (a dot is valid for the apiserver) is refused."""
        def probe(name: str) -> dict:
            return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2",
                                                     "storageUri": "s3://probe/model"}}}}

        def enforced() -> bool:
            defaulted = self.cp.kubectl_run("create", "--dry-run=server", "-o", "json", "-f", "-",
                                            input=json.dumps(probe("webhook-probe")), check=False)
            if defaulted.returncode != 0:
                return False
            annotations = json.loads(defaulted.stdout)["metadata"].get("annotations") or {}
            if annotations.get("serving.kserve.io/deploymentMode") != DEFAULT_DEPLOYMENT_MODE:
                return False
            refused = self.cp.kubectl_run("create", "--dry-run=server", "-f", "-",
                                          input=json.dumps(probe("webhook.probe")), check=False)
            return refused.returncode != 0 and "inferenceservice.kserve-webhook-server.validator" in refused.stderr

        processes.wait_until(enforced, timeout, "the KServe webhooks to be enforced", self._procs[0], self.logfile)

    def _before_stop(self) -> None:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            self.cp.kubectl_run("delete", kind, self.webhook_configuration, "--ignore-not-found",
                                check=False, timeout=30)
