"""Runs `traindeploy dev` (what it does and its arguments: `traindeploy.dev.arguments`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from traindeploy.dev import images, processes, venvs
from traindeploy.dev.arguments import build_parser
from traindeploy.dev.controlplane import ControlPlane
from traindeploy.dev.jobs import TrainingJobs, install_runtime, torch_distributed_runtime
from traindeploy.dev.mlflow_server import MlflowServer
from traindeploy.dev.serving import InferenceServices

log = logging.getLogger(__name__)

TD = ("traindeploy.io", "v1alpha1", "traindeploys")
EXIT_INTERRUPTED = 130
# The operator's intervals for one laptop: fast feedback, nothing to spread a restart over.
OPERATOR_SETTINGS = {"TRAINDEPLOY_POLL_INTERVAL": "2", "TRAINDEPLOY_STARTUP_SPREAD": "0"}


class Stopped(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def say(line: str = "") -> None:
    print(line, flush=True)


@dataclass
class Session:
    """Everything one `traindeploy dev` started, stopped newest first."""

    workdir: Path
    started: float = field(default_factory=time.monotonic)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    api_client: object = None
    kubeconfig: Path | None = None
    mlflow_url: str = ""
    serving: InferenceServices | None = None
    operator_log: Path | None = None

    def close(self) -> None:
        self.stack.close()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    def stop(signum: int, _frame) -> None:
        raise Stopped(signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    session = Session(Path(tempfile.mkdtemp(prefix="traindeploy-dev-")))
    try:
        return _lifecycle(session, args)
    except (KeyboardInterrupt, Stopped) as interruption:
        say()
        return 128 + interruption.signum if isinstance(interruption, Stopped) else EXIT_INTERRUPTED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        say("==> Stopping everything traindeploy dev started")
        session.close()
        say(f"    stopped; its files were in {session.workdir}")


def _config(args: argparse.Namespace) -> images.DevConfig:
    path = args.dev_config or images.find_config(args.manifests[0].resolve())
    config = images.load_config(path)
    for mapping in args.image:
        image, _, rest = mapping.partition("=")
        directory, _, requirements = rest.partition(":")
        config = config.with_image(image, Path(directory).resolve(),
                                   Path(requirements).resolve() if requirements else None)
    return config


def _lifecycle(session: Session, args: argparse.Namespace) -> int:
    from kubernetes import client, config as kube_config

    dev_config = _config(args)
    say(f"==> Images as local code: {dev_config.source or 'from --image'}")
    for mapping in dev_config.images:
        say(f"    {mapping.image}: " + ", ".join(f"{k} -> {v}" for k, v in mapping.paths.items()))

    # MLflow needs no cluster: it starts while the control plane does. The model server's venv
    # holds the full MLflow too, so it runs the tracking server.
    started = time.monotonic()
    base = venvs.python_for(dev_config.model_server_base) if dev_config.model_server_base else None
    server_python = venvs.python_for(dev_config.model_server_requirements, "model-server", base=base)
    mlflow = MlflowServer(session.workdir / "mlflow", executable=server_python.with_name("mlflow"))
    session.stack.callback(mlflow.stop)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dev-start") as background:
        mlflow_started = background.submit(mlflow.start)
        if args.kubeconfig:
            session.kubeconfig = args.kubeconfig
        else:
            if not args.control_plane_bin or not args.kubectl:
                raise SystemExit("traindeploy dev: a local control plane needs --control-plane-bin and --kubectl "
                                 "(make run passes them), or give --kubeconfig")
            say("==> Starting a local control plane (etcd, kube-apiserver, kube-controller-manager) and MLflow "
                "(SQLite, local artifacts)")
            plane = ControlPlane(session.workdir / "controlplane", args.control_plane_bin, args.kubectl)
            session.stack.callback(plane.stop)
            plane.start()
            names = plane.install_crds(*args.crds) if args.crds else []
            session.kubeconfig = plane.kubeconfig
            if "clustertrainingruntimes.trainer.kubeflow.org" in names:
                # What installing Trainer gives a cluster: the runtime TrainJobs refer to by default.
                runtime_client = kube_config.new_client_from_config(config_file=str(plane.kubeconfig))
                with runtime_client:
                    install_runtime(runtime_client, torch_distributed_runtime())
            say(f"    control plane up at {plane.server}, {len(names)} CRDs, in {time.monotonic() - started:.1f}s")
        mlflow_started.result()
    session.mlflow_url = mlflow.url
    say(f"    MLflow up at {mlflow.url}")
    session.api_client = kube_config.new_client_from_config(config_file=str(session.kubeconfig))
    session.stack.callback(session.api_client.close)

    settings = {**OPERATOR_SETTINGS, "TRAINDEPLOY_MLFLOW_TRACKING_URI": mlflow.url,
                "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": mlflow.artifacts_dir.as_uri()}
    if args.kfp_python:
        from traindeploy.dev.kfp_endpoint import KfpEndpoint

        endpoint = KfpEndpoint(args.kfp_python, session.workdir / "kfp")
        session.stack.callback(endpoint.stop)
        endpoint.start()
        settings["TRAINDEPLOY_KFP_ENDPOINT"] = endpoint.url
        say(f"==> Local KFP endpoint (kfp.local) at {endpoint.url}")

    core = client.CoreV1Api(session.api_client)
    resolver = images.Resolver(dev_config, images.kube_key_reader(core))
    jobs = TrainingJobs(session.api_client, args.namespace, resolver, session.workdir / "jobs", on_event=_event)
    session.stack.callback(jobs.stop)
    jobs.start()
    session.serving = InferenceServices(session.api_client, args.namespace, lambda: server_python,
                                        session.workdir, on_event=_event)
    session.stack.callback(session.serving.stop)
    session.serving.start()
    _start_katib(session, args.namespace, resolver)

    say("==> Starting the operator: python -m traindeploy run")
    session.operator_log = session.workdir / "operator.log"
    port = processes.free_port()
    operator = processes.start(
        [sys.executable, "-m", "traindeploy", "run", "--namespace", args.namespace,
         "--liveness", f"http://127.0.0.1:{port}/healthz"],
        session.operator_log, env={**os.environ, **settings, "KUBECONFIG": str(session.kubeconfig)})
    session.stack.callback(processes.stop, operator)
    processes.wait_until(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), 60, "operator", operator,
                         session.operator_log)
    say(f"    live; its log: {session.operator_log}")

    names = _apply(session, args.namespace, args.manifests)
    return _follow(session, args, names)


def _start_katib(session: Session, namespace: str, resolver: images.Resolver) -> None:
    from traindeploy.dev.katib import KatibExecutor

    def launch(trial):
        command = resolver.command(trial.container, namespace, trial.env)
        return processes.start(command.argv, trial.log_path, env={**os.environ, **command.env}, cwd=command.cwd)

    katib = KatibExecutor(session.api_client, namespace, launch, session.workdir / "katib")
    session.stack.callback(katib.stop)
    katib.start()


RECENT_EVENTS: list[str] = []  # the executors' last lines, under the live view on a terminal
LIVE = sys.stdout.isatty()


def _event(line: str) -> None:
    RECENT_EVENTS[:] = [*RECENT_EVENTS[-7:], line]
    if not LIVE:
        say(f"    [local] {line}")


def _apply(session: Session, namespace: str, manifests: list[Path]) -> list[str]:
    """Creates (or updates) each document, as `kubectl apply` would for these kinds."""
    from kubernetes import client, utils
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(session.api_client)
    names = []
    for path in manifests:
        say(f"==> Applying {path}")
        for document in yaml.safe_load_all(path.read_text()):
            if not document:
                continue
            if document.get("kind") != "TrainDeploy":
                try:
                    utils.create_from_dict(session.api_client, document, namespace=namespace)
                    say(f"    {document['kind'].lower()}/{document['metadata']['name']} created")
                except utils.FailToCreateError as error:
                    if any(failure.status != 409 for failure in error.api_exceptions):
                        raise
                    say(f"    {document['kind'].lower()}/{document['metadata']['name']} exists, left as it is")
                continue
            name = document["metadata"]["name"]
            try:
                current = custom.get_namespaced_custom_object(*TD[:2], namespace, TD[2], name)
                document["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                custom.replace_namespaced_custom_object(*TD[:2], namespace, TD[2], name, document)
            except ApiException as error:
                if error.status != 404:
                    raise
                custom.create_namespaced_custom_object(*TD[:2], namespace, TD[2], document)
            say(f"    traindeploy.traindeploy.io/{name} applied")
            names.append(name)
    return names


def _draw(cluster, names: list[str], footers: dict[str, str]) -> None:
    """The live view on a terminal: each TrainDeploy as the kubectl plugin's tree (stages,
    children, traffic), redrawn in place, with the executors' last lines under it."""
    import datetime as dt

    from traindeploy.kubectl_plugin import render_get

    frames = []
    for name in names:
        td = cluster.traindeploy(name)
        children, looked_up, _ = cluster.children(td)
        frames.append(render_get(td, children, dt.datetime.now(dt.timezone.utc), looked_up))
    events = "\n".join(f"  [local] {line}" for line in RECENT_EVENTS)
    sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(frames) + "\n" + events + "\n\n"
                     + "\n".join(footers.values()) + "\n")
    sys.stdout.flush()


def _follow(session: Session, args: argparse.Namespace, names: list[str]) -> int:
    from kubernetes import client

    from traindeploy.kubectl_plugin import Cluster

    custom = client.CustomObjectsApi(session.api_client)
    cluster = Cluster(session.api_client, args.namespace, custom=custom)
    shown: dict[str, tuple] = {}
    done: dict[str, str] = {}
    footers: dict[str, str] = {}  # what each TrainDeploy's last Ready (or failure) said
    deadline = time.monotonic() + args.timeout
    applied = time.monotonic()
    while True:
        for name in names:
            td = custom.get_namespaced_custom_object(*TD[:2], args.namespace, TD[2], name)
            status = td.get("status") or {}
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
            line = (status.get("phase"), ready.get("status"), ready.get("reason"), ready.get("message"))
            if line != shown.get(name):
                shown[name] = line
                if not LIVE:
                    say(f"traindeploy/{name}: phase {line[0] or '-'}, Ready={line[1] or '-'}"
                        + (f" ({line[2]}: {line[3]})" if line[2] else ""))
            serving = status.get("serving") or {}
            outcome = (status.get("phase"), serving.get("modelVersion"))
            if status.get("phase") == "Ready" and ready.get("status") == "True" and done.get(name) != str(outcome):
                done[name] = str(outcome)
                footers[name] = _ready_text(session, td, time.monotonic() - applied)
                if not LIVE:
                    say(footers[name])
            elif status.get("phase") == "Failed" and done.get(name) != str(outcome):
                done[name] = str(outcome)
                footers[name] = f"==> traindeploy/{name} failed: {ready.get('reason')}: {ready.get('message')}"
                if not LIVE:
                    say(footers[name])
        if LIVE:
            _draw(cluster, names, footers)
        if args.exit_when_ready and len(done) == len(names):
            phases = {shown[name][0] for name in names}
            return 0 if phases == {"Ready"} else 1
        if len(done) < len(names) and time.monotonic() > deadline:
            say(f"==> not Ready within {args.timeout:.0f}s; the operator's log: {session.operator_log}")
            return 1
        time.sleep(1.0)


def _ready_text(session: Session, td: dict, elapsed: float) -> str:
    """The URL, a ready-to-paste curl for a prediction, MLflow and the kubeconfig."""
    name = td["metadata"]["name"]
    status = td.get("status") or {}
    url = (status.get("serving") or {}).get("url") or ""
    version = (status.get("serving") or {}).get("modelVersion") or (status.get("model") or {}).get("version")
    lines = [f"==> traindeploy/{name} is Ready {elapsed:.0f}s after apply "
             f"({time.monotonic() - session.started:.0f}s after start): model {td['spec']['model']['name']} "
             f"version {version} serves at {url}"]
    service = session.serving.service(name) if session.serving else None
    request = example_request(service.revisions[-1].directory / "model") if service and service.revisions else None
    model = service.revisions[-1].model_name if service and service.revisions else name
    if request is not None and url:
        lines += ["    try it:",
                  f"    curl -s -H 'Content-Type: application/json' {url}/v2/models/{model}/infer \\\n"
                  f"      -d {shlex.quote(json.dumps(request))}"]
    lines += [f"    MLflow: {session.mlflow_url}/#/models/{td['spec']['model']['name']}",
              f"    export KUBECONFIG={session.kubeconfig}   # then: kubectl get td,pytorchjobs,inferenceservices"]
    return "\n".join(lines)


def example_request(model_dir: Path) -> dict | None:
    """A V2 `infer` request built from the model's signature and its logged input example."""
    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
        inputs = json.loads(mlmodel["signature"]["inputs"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
    if not inputs or inputs[0].get("type") != "tensor":
        return None
    spec = inputs[0]["tensor-spec"]
    width = spec["shape"][-1] if len(spec["shape"]) > 1 else 1
    row = [0.0] * width
    example = model_dir / "serving_input_example.json"
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError, TypeError):
        data = json.loads(example.read_text())
        first = (data.get("inputs") or data.get("instances"))[0]
        row = [round(float(v), 4) for v in first]
    datatype = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}.get(spec["dtype"], "FP32")
    return {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": datatype, "data": row}]}


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200
