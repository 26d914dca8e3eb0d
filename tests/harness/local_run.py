"""`make run`: TrainDeploy at work on this machine, from `kubectl apply` to a served model version.

    PYTHONPATH=tests .venv/bin/python -m harness.local_run [--exit-when-ready]

It starts the same real parts the tests use, all on 127.0.0.1: a Kubernetes control plane with
every CRD installed (ours and the upstream child kinds), an MLflow tracking server, and the
operator itself as `python -m traindeploy run`. Then it applies examples/traindeploys/minimal.yaml
with the real kubectl and shows what the operator does with it.

No Training Operator, trainer pod or KServe runs here, so their parts are played, and each time
that is said in a line starting "[local stand-in for ...]": a stand-in writes a child's status
exactly as the upstream controller would (tests/e2e/players.py), and the trainer's stand-in logs
real metrics and a real model into the MLflow run the operator created, through the MLFLOW_*
variables the operator put into the job. Everything else, from the children's manifests to the
gate, the model version, its aliases, the status and the Events, is the operator's own work.

It keeps running after Ready, so that the cluster and MLflow can be explored (the stand-ins go on
playing: `kubectl annotate td/churn traindeploy.io/retrain=again` trains and serves version 2),
until Ctrl-C or SIGTERM; `--exit-when-ready` stops at Ready instead. Either way every process it
started is stopped and its temporary directory removed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from e2e.operator_process import OperatorProcess
from e2e.players import Players, train_into_run
from harness import tools
from harness.controlplane import ControlPlane
from harness.mlflow_server import MlflowServer
from harness.paths import REPO_ROOT

DEFAULT_MANIFEST = REPO_ROOT / "examples" / "traindeploys" / "minimal.yaml"
NAMESPACE = "default"  # the kubeconfig's own namespace: plain `kubectl get td` finds it

TD = ("traindeploy.io", "v1alpha1", "traindeploys")
PYTORCHJOBS = ("kubeflow.org", "v1", "pytorchjobs")
TRAINJOBS = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
INFERENCESERVICES = ("serving.kserve.io", "v1beta1", "inferenceservices")
CHILD_LISTING = "pytorchjobs,trainjobs,inferenceservices"

EXIT_INTERRUPTED = 130


class Stopped(BaseException):
    """SIGTERM or SIGHUP: leave the way Ctrl-C does, through the clean-up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def say(line: str = "") -> None:
    print(line, flush=True)


def step(title: str) -> None:
    say(f"\n==> {title}")


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.rstrip().splitlines())


# -- the parts -------------------------------------------------------------------------------------


@dataclass
class Parts:
    workdir: Path
    control_plane: ControlPlane | None = None
    mlflow: MlflowServer | None = None
    operator: OperatorProcess | None = None
    api_client: object = None
    ready: bool = False  # the applied TrainDeploy has been Ready at least once

    @property
    def kubectl(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubectl

    def kubectl_show(self, *args: str) -> str:
        """Runs kubectl against the local control plane and prints the command and its output."""
        assert self.control_plane is not None
        say(f"$ kubectl {' '.join(args)}")
        result = self.control_plane.kubectl_run(*args, check=False)
        output = (result.stdout + result.stderr).rstrip()
        if output:
            say(output)
        return result.stdout

    def stop(self) -> None:
        """Stops what was started, newest first; safe to call more than once."""
        if self.api_client is not None:
            with contextlib.suppress(Exception):
                self.api_client.close()
            self.api_client = None
        for name in ("operator", "mlflow", "control_plane"):
            part = getattr(self, name)
            if part is not None:
                part.stop()
                setattr(self, name, None)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_parts(parts: Parts) -> None:
    step("Starting a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)")
    started = time.monotonic()
    kubectl = tools.kube_tools_dir() / "kubectl"
    parts.control_plane = ControlPlane(workdir=parts.workdir / "controlplane", kubectl=kubectl)
    parts.control_plane.start()
    say(f"    up at {parts.control_plane.server} in {time.monotonic() - started:.1f}s")

    step("Installing the CRDs: TrainDeploy, and the kinds it creates (PyTorchJob, TrainJob, Katib "
         "Experiment, KServe InferenceService, Gateway API HTTPRoute)")
    started = time.monotonic()
    names = parts.control_plane.install_all_crds()
    say(f"    {len(names)} CRDs established in {time.monotonic() - started:.1f}s")

    step("Starting an MLflow tracking server (SQLite backend, local artifact store)")
    started = time.monotonic()
    parts.mlflow = MlflowServer(workdir=parts.workdir / "mlflow")
    parts.mlflow.start()
    say(f"    up at {parts.mlflow.url} in {time.monotonic() - started:.1f}s")

    step(f"Starting the TrainDeploy operator: python -m traindeploy run --namespace {NAMESPACE}")
    started = time.monotonic()
    settings = {"TRAINDEPLOY_MLFLOW_TRACKING_URI": parts.mlflow.url,
                "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": parts.mlflow.artifacts_dir.as_uri()}
    for key, value in settings.items():
        say(f"    {key}={value}")
    parts.operator = OperatorProcess(NAMESPACE, parts.control_plane.kubeconfig, parts.workdir, settings)
    parts.operator.start()
    say(f"    live in {time.monotonic() - started:.1f}s; its log: {parts.operator.logfile}")

    from kubernetes import config

    parts.api_client = config.new_client_from_config(config_file=str(parts.control_plane.kubeconfig))


# -- the upstream controllers, played --------------------------------------------------------------


def _true(obj: dict, condition_type: str) -> bool:
    return any(c.get("type") == condition_type and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _condition(td: dict, condition_type: str) -> dict:
    return next((c for c in (td.get("status") or {}).get("conditions") or [] if c.get("type") == condition_type),
                {})


@dataclass
class StandIns:
    """Plays the Training Operator, Trainer v2, the trainer and KServe for every child the operator
    has recorded in a TrainDeploy's status.children, once each, and reports TrainDeploy progress."""

    parts: Parts
    accuracy: float
    players: Players = field(init=False)
    played: set = field(default_factory=set)
    shown: dict = field(default_factory=dict)  # TrainDeploy name -> last (phase, Ready status, reason)

    def __post_init__(self) -> None:
        self.players = Players(self.parts.api_client, NAMESPACE)

    def tick(self) -> list[dict]:
        """One look at every TrainDeploy: report changes, play what waits on an upstream controller."""
        tds = self.players.list(*TD)
        for td in tds:
            self._report(td)
            for child in (td.get("status") or {}).get("children") or []:
                self._play(child)
        return tds

    def _report(self, td: dict) -> None:
        status = td.get("status") or {}
        ready = _condition(td, "Ready")
        now = (status.get("phase"), ready.get("status"), ready.get("reason"))
        name = td["metadata"]["name"]
        if now == self.shown.get(name) or not status:
            return
        self.shown[name] = now
        line = f"    traindeploy/{name}: phase {status.get('phase') or '-'}, Ready={ready.get('status') or '-'}"
        if ready.get("reason"):
            line += f" ({ready['reason']}"
            line += f": {ready['message']})" if ready.get("message") else ")"
        say(line)

    def _play(self, child: dict) -> None:
        kind, name = child.get("kind"), child.get("name")
        handler = {"PyTorchJob": self._training_job, "TrainJob": self._training_job,
                   "InferenceService": self._inference_service}.get(kind)
        if handler is None:
            return
        plural = {"PyTorchJob": PYTORCHJOBS, "TrainJob": TRAINJOBS, "InferenceService": INFERENCESERVICES}[kind]
        obj = self.players.get(*plural, name)
        if obj is None:
            return
        key = (kind, obj["metadata"]["uid"], obj["metadata"].get("generation"))
        if key in self.played:
            return
        handler(kind, name, obj)
        self.played.add(key)

    def _training_job(self, kind: str, name: str, job: dict) -> None:
        done = ("Succeeded", "Failed") if kind == "PyTorchJob" else ("Complete", "Failed")
        if any(_true(job, c) for c in done):
            return
        show_children(self.parts)
        controller = "the Training Operator" if kind == "PyTorchJob" else "Kubeflow Trainer"
        if kind == "PyTorchJob":
            say(f"[local stand-in for {controller}] marking {kind} {NAMESPACE}/{name} Running "
                "(no pods run here)")
            self.players.pytorchjob(name, "Running")
        metrics = {"accuracy": self.accuracy, "loss": round(max(0.0, 1 - self.accuracy) * 1.7, 4)}
        shown = ", ".join(f"{k}={v:g}" for k, v in metrics.items())
        say(f"[local stand-in for the trainer, examples/trainer/train.py] logging {shown} and a model "
            f"to the MLflow run the operator created, through the MLFLOW_TRACKING_URI and MLFLOW_RUN_ID "
            f"it put into the {kind}'s container")
        run_id = train_into_run(job, metrics)
        say(f"    logged to MLflow run {run_id}")
        outcome = "Succeeded" if kind == "PyTorchJob" else "Complete"
        say(f"[local stand-in for {controller}] marking {kind} {NAMESPACE}/{name} {outcome}")
        if kind == "PyTorchJob":
            self.players.pytorchjob(name, "Succeeded")
        else:
            self.players.trainjob(name, "Complete")

    def _inference_service(self, kind: str, name: str, isvc: dict) -> None:
        storage = (((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("storageUri")
        version = (isvc["metadata"].get("annotations") or {}).get("traindeploy.io/model-version")
        if _true(isvc, "Ready"):
            if any(key[:2] == (kind, isvc["metadata"]["uid"]) for key in self.played):
                say(f"[local stand-in for KServe] InferenceService {NAMESPACE}/{name} now serves version "
                    f"{version} from {storage}; it stays Ready (no model server runs here)")
            return
        show_children(self.parts)
        say(f"[local stand-in for KServe] marking InferenceService {NAMESPACE}/{name} Ready "
            f"(no model server runs here; it would load version {version} from {storage})")
        self.players.inferenceservice(name, ready=True)


def show_children(parts: Parts) -> None:
    say()
    parts.kubectl_show("get", CHILD_LISTING, "-o", "wide")


# -- what the run shows ----------------------------------------------------------------------------


def wait_events(parts: Parts, name: str, reason: str, timeout: float = 15.0) -> None:
    """kopf posts Events in the background; wait a little for the one `describe` should show."""
    from kubernetes import client

    core = client.CoreV1Api(parts.api_client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
        if any(event.reason == reason for event in events):
            return
        time.sleep(0.3)


def show_model(parts: Parts, td: dict) -> str | None:
    """The registered model version and its aliases, from MLflow itself."""
    from mlflow import MlflowClient

    assert parts.mlflow is not None
    model_name = td["spec"]["model"]["name"]
    version = ((td.get("status") or {}).get("model") or {}).get("version")
    registry = MlflowClient(parts.mlflow.url)
    registered = registry.get_registered_model(model_name)
    aliases = dict(registered.aliases or {})
    say(f"MLflow registered model {model_name} at {parts.mlflow.url}")
    for number in sorted({version, *aliases.values()} - {None}, key=int):
        found = registry.get_model_version(model_name, number)
        named = sorted(alias for alias, target in aliases.items() if str(target) == str(number))
        say(f"    version {found.version}: status {found.status}, aliases {', '.join(named) or '(none)'}, "
            f"run {found.run_id}, source {found.source}")
        lineage = {k: v for k, v in sorted((found.tags or {}).items()) if k.startswith("traindeploy.io/")}
        if lineage:
            say("        tags: " + ", ".join(f"{k}={v}" for k, v in lineage.items()))
    return version


def show_ready(parts: Parts, td: dict, elapsed: float) -> None:
    name = td["metadata"]["name"]
    ready = _condition(td, "Ready")
    step(f"TrainDeploy {name} is Ready, {elapsed:.0f}s after kubectl apply: {ready.get('message', '')}")
    show_children(parts)
    say()
    parts.kubectl_show("get", "td", name)
    wait_events(parts, name, "Ready")
    say()
    parts.kubectl_show("describe", "td", name)
    say()
    show_model(parts, td)


def show_failed(parts: Parts, td: dict) -> None:
    name = td["metadata"]["name"]
    ready = _condition(td, "Ready")
    status = td.get("status") or {}
    step(f"TrainDeploy {name} failed at stage {status.get('failedStage') or '?'}: "
         f"{ready.get('reason')}: {ready.get('message')}")
    parts.kubectl_show("get", "td", name)
    wait_events(parts, name, ready.get("reason") or "")
    say()
    parts.kubectl_show("describe", "td", name)


def show_how_to_explore(parts: Parts, td_name: str, model_name: str) -> None:
    assert parts.control_plane is not None and parts.mlflow is not None and parts.operator is not None
    step("Explore while this runs, from another terminal")
    say(f"""\
    export KUBECONFIG={parts.control_plane.kubeconfig}
    export PATH={parts.kubectl.parent}:$PATH      # the kubectl and helm this run uses
    kubectl get td,{CHILD_LISTING}
    kubectl describe td {td_name}
    kubectl annotate td/{td_name} traindeploy.io/retrain=again   # a new training cycle: version 2

    MLflow UI:     {parts.mlflow.url}/#/models/{model_name}   (loopback only)
    Operator log:  {parts.operator.logfile}

The stand-ins keep playing the Training Operator, the trainer and KServe for every new job and
InferenceService (not Knative's canary traffic split). Ctrl-C stops everything and removes it.""")


# -- the run ---------------------------------------------------------------------------------------


def run(parts: Parts, manifest: Path, accuracy: float, exit_when_ready: bool, timeout: float) -> int:
    document = yaml.safe_load(manifest.read_text())
    td_name, model_name = document["metadata"]["name"], document["spec"]["model"]["name"]
    start_parts(parts)

    relative = os.path.relpath(manifest)
    shown = relative if not relative.startswith("..") else str(manifest)
    step(f"Applying {shown} with kubectl")
    parts.kubectl_show("apply", "-f", shown)
    applied = time.monotonic()
    stand_ins = StandIns(parts, accuracy)

    step("Following the operator; the lines in [brackets] are the local stand-ins at work")
    announced: dict[str, tuple] = {}  # TrainDeploy -> (phase, version) last announced as Ready or Failed
    deadline = applied + timeout
    first_done = False
    while True:
        try:
            tds = stand_ins.tick()
        except Exception as error:  # noqa: BLE001 - a hiccup of the apiserver or MLflow; look again
            say(f"[local run] the stand-ins could not play this round ({type(error).__name__}: {error}); "
                "trying again")
            tds = []
        for td in tds:
            status = td.get("status") or {}
            phase, name = status.get("phase"), td["metadata"]["name"]
            outcome = (phase, (status.get("serving") or {}).get("modelVersion"))
            if phase not in ("Ready", "Failed") or announced.get(name) == outcome:
                continue
            if phase == "Ready" and _condition(td, "Ready").get("status") != "True":
                continue
            announced[name] = outcome
            if name == td_name and not first_done:
                first_done = True
                if phase == "Ready":
                    parts.ready = True
                    show_ready(parts, td, time.monotonic() - applied)
                else:
                    show_failed(parts, td)
                if exit_when_ready:
                    return 0 if phase == "Ready" else 1
                show_how_to_explore(parts, td_name, model_name)
            elif phase == "Ready":
                step(f"TrainDeploy {name} is Ready: {_condition(td, 'Ready').get('message', '')}")
                with contextlib.suppress(Exception):
                    show_model(parts, td)
            else:
                show_failed(parts, td)
        if not first_done and time.monotonic() > deadline:
            step(f"TrainDeploy {td_name} did not reach Ready within {timeout:.0f}s")
            parts.kubectl_show("describe", "td", td_name)
            assert parts.operator is not None
            say(f"\n--- last lines of the operator log ({parts.operator.logfile}) ---\n"
                f"{parts.operator.log_tail(60)}")
            return 1
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.local_run",
        description="Run TrainDeploy locally: a control plane, MLflow and the operator, with the upstream "
                    "controllers played by labelled stand-ins, until Ctrl-C.")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="stop (and clean up) once the TrainDeploy is Ready; exit 1 if it fails instead")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                        help="the TrainDeploy to apply; the stand-ins play PyTorchJobs, TrainJobs and "
                             "InferenceServices, not KFP or Katib (default: %(default)s)")
    parser.add_argument("--accuracy", type=float, default=0.91,
                        help="accuracy the stand-in trainer logs; below the example's gate of 0.8 the cycle "
                             "fails with GateFailed (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds from kubectl apply to Ready before giving up (default: %(default)s)")
    args = parser.parse_args(argv)
    manifest = args.manifest.resolve()

    # Quiet libraries; the harness still warns about slow first-time builds.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("mlflow", "urllib3", "kubernetes", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    def stop(signum: int, _frame) -> None:
        raise Stopped(signum)

    # Ctrl-C works even when started with SIGINT ignored (from a script, in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)

    parts = Parts(workdir=Path(tempfile.mkdtemp(prefix="traindeploy-local-")))
    try:
        return run(parts, manifest, args.accuracy, args.exit_when_ready, args.timeout)
    except (KeyboardInterrupt, Stopped) as interruption:
        say()
        if parts.ready:
            return 0  # the way to end a run that has shown what it came to show
        return 128 + interruption.signum if isinstance(interruption, Stopped) else EXIT_INTERRUPTED
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        step("Stopping the operator, MLflow and the control plane")
        parts.stop()
        say(f"    stopped; removed {parts.workdir}")

if __name__ == "__main__":
    sys.exit(main())
