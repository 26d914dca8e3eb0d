"""The real Katib controller and webhooks (v0.19.0) for the upstream tier, like the Training
Operator in harness.upstream:

    with Katib(cp) as katib:          # CRDs, the kubeflow namespace, katib-config, webhooks by URL
        katib.suggestion_image("tpe")  # the image the module's katib-config names for it
        ...                            # Experiments are defaulted, validated and reconciled

Everything Katib's install would bring is read from the Go module cache at the version the
wrapper module (tests/upstream/katib) pins: the CRDs, the `kubeflow` namespace, the webhook
manifests and the standalone install's katib-config. The config is changed only where the test
set-up differs from an in-cluster install: no cert generator (the harness hands over a
self-signed certificate for 127.0.0.1) and no webhook port (a flag gives a free one).

The suggestion services are images (Python gRPC servers) and do not run here: Katib creates a
suggestion Deployment and Service for each Experiment, and the config gives each suggestion
container a CPU request no fake node can hold, so its pod stays Pending and the Deployment
unavailable (the tier runs the deployment controller for KServe), the Suggestion stays
`DeploymentReady=False` and no Trial is created. Upstream's suggestion controller would otherwise
call the unreachable service with a 60-second deadline on every reconcile.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import subprocess
from pathlib import Path

import yaml

from harness import processes, tools
from harness.controlplane import ControlPlane
from harness.upstream import UpstreamServer

log = logging.getLogger(__name__)

KATIB_MODULE_PATH = "github.com/kubeflow/katib"
KATIB_NAMESPACE = "kubeflow"  # consts.DefaultKatibNamespace: where katib-config is looked up
CONFIG_MAP = "katib-config"  # consts.KatibConfigMapName, its key consts.LabelKatibConfigTag
CONFIG_KEY = "katib-config.yaml"
# The label the validating webhook requires on an Experiment's namespace and the pod webhook
# selects namespaces by (pkg/webhook/v1beta1/common).
INJECTION_LABEL = "katib.kubeflow.org/metrics-collector-injection"
VALIDATING_WEBHOOK = "validator.experiment.katib.kubeflow.org"

# More than any fake node of the tier offers: suggestion pods stay Pending (see the docstring).
UNSCHEDULABLE_CPU = "1000"

_MANIFESTS = Path("manifests") / "v1beta1"
CRD_FILES = tuple(_MANIFESTS / "components" / "crd" / f"{name}.yaml" for name in ("experiment", "suggestion", "trial"))
NAMESPACE_FILE = _MANIFESTS / "components" / "namespace" / "namespace.yaml"
WEBHOOK_FILE = _MANIFESTS / "components" / "webhook" / "webhooks.yaml"
CONFIG_FILE = _MANIFESTS / "installs" / "katib-standalone" / "katib-config.yaml"


def test_config(standalone: dict) -> dict:
    """The standalone install's KatibConfig as this set-up needs it: the cert generator off and
    the webhook port left to the command line; trial resources, metrics collectors and
    suggestion images as shipped, their pods asking for more CPU than a node has (see above)."""
    config = copy.deepcopy(standalone)
    init = config.setdefault("init", {})
    init["certGenerator"] = {"enable": False}
    init.setdefault("controller", {}).pop("webhookPort", None)
    for suggestion in (config.get("runtime") or {}).get("suggestions") or []:
        suggestion["resources"] = {"requests": {"cpu": UNSCHEDULABLE_CPU}, "limits": {"cpu": UNSCHEDULABLE_CPU}}
    return config


class Katib(UpstreamServer):
    """Katib's controller against `cp`, with its webhooks registered by URL."""

    def __init__(self, cp: ControlPlane, workdir: Path | None = None, bin_dir: Path | None = None) -> None:
        super().__init__(cp, workdir, bin_dir, tools.KATIB, KATIB_MODULE_PATH)
        self.config = test_config(yaml.safe_load((self.module_dir / CONFIG_FILE).read_text()))
        self.webhook_configuration = "traindeploy-test-katib"

    def suggestion_image(self, algorithm: str) -> str:
        (image,) = [item["image"] for item in self.config["runtime"]["suggestions"]
                    if item["algorithmName"] == algorithm]
        return image

    @property
    def trial_resources(self) -> list[str]:
        return list(self.config["init"]["controller"]["trialResources"])

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.install_crds(*(self.module_dir / path for path in CRD_FILES))
        self.cp.kubectl_run("apply", "--server-side", "-f", str(self.module_dir / NAMESPACE_FILE))
        config_text = yaml.safe_dump(self.config, sort_keys=False)
        config_file = self.workdir / CONFIG_KEY
        config_file.write_text(config_text)
        config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": CONFIG_MAP, "namespace": KATIB_NAMESPACE},
                      "data": {CONFIG_KEY: config_text}}
        self.cp.kubectl_run("apply", "--server-side", "-f", "-", input=json.dumps(config_map))
        port, certificate = self._start_manager(
            "katib-controller", [f"--katib-config={config_file}", "--zap-devel=false"], timeout)
        self._register_webhooks(port, certificate)
        self._wait_webhooks_enforced()

    def _register_webhooks(self, port: int, ca: bytes) -> None:
        """The module's Validating and Mutating configurations, each webhook pointed at our URL."""
        ca_bundle = base64.b64encode(ca).decode()
        documents = [doc for doc in yaml.safe_load_all((self.module_dir / WEBHOOK_FILE).read_text()) if doc]
        for upstream in documents:
            webhooks = [{**webhook, "clientConfig": {
                "url": f"https://127.0.0.1:{port}{webhook['clientConfig']['service']['path']}",
                "caBundle": ca_bundle}} for webhook in upstream["webhooks"]]
            configuration = {"apiVersion": upstream["apiVersion"], "kind": upstream["kind"],
                             "metadata": {"name": self.webhook_configuration}, "webhooks": webhooks}
            self.cp.kubectl_run("apply", "--server-side", "-f", "-", input=json.dumps(configuration))

    def dry_run(self, experiment: dict) -> subprocess.CompletedProcess:
        """A server-side dry-run create: the webhooks run, nothing is stored."""
        return self.cp.kubectl_run("create", "--dry-run=server", "-o", "json", "-f", "-",
                                   input=json.dumps(experiment), check=False)

    def _wait_webhooks_enforced(self, timeout: float = 30.0) -> None:
        """The apiserver picks webhook configurations up asynchronously: wait until an Experiment
        the validator must refuse (more parallel trials than trials) is refused, and the same
        Experiment without `parallelTrialCount` comes back with the defaulter's value."""
        refused_probe = _probe_experiment(parallel=4)
        defaulted_probe = _probe_experiment(parallel=None)

        def enforced() -> bool:
            refused = self.dry_run(refused_probe)
            if refused.returncode == 0 or VALIDATING_WEBHOOK not in refused.stderr:
                return False
            defaulted = self.dry_run(defaulted_probe)
            return defaulted.returncode == 0 and "parallelTrialCount" in json.loads(defaulted.stdout)["spec"]

        processes.wait_until(enforced, timeout, "the Katib webhooks to be enforced", self._procs[0], self.logfile)

    def _before_stop(self) -> None:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            self.cp.kubectl_run("delete", kind, self.webhook_configuration, "--ignore-not-found",
                                check=False, timeout=30)


def _probe_experiment(parallel: int | None) -> dict:
    """A three-trial Experiment with a batch Job trial, in Katib's own (labelled) namespace. Three:
    the defaulter's `parallelTrialCount` (3) must not exceed it."""
    spec = {
        "objective": {"type": "minimize", "objectiveMetricName": "loss"},
        "algorithm": {"algorithmName": "random"},
        "maxTrialCount": 3,
        "parameters": [{"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.2"}}],
        "trialTemplate": {
            "primaryContainerName": "main",
            "trialParameters": [{"name": "lr", "reference": "lr"}],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["echo", "${trialParameters.lr}"]}],
            }}}},
        },
    }
    if parallel is not None:
        spec["parallelTrialCount"] = parallel
    return {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
            "metadata": {"name": "webhook-probe", "namespace": KATIB_NAMESPACE}, "spec": spec}
