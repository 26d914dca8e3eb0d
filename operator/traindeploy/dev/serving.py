"""InferenceService, served for real on this machine, in KServe's Knative mode.

Each change of the predictor is a new revision (`<name>-predictor-0000N`), as Knative makes one:
its model is fetched from `storageUri` by KServe's storage initializer (the `kserve-storage`
package) and served by the server KServe's `kserve-mlserver` runtime runs for the `mlflow` format,
MLServer with its MLflow runtime, speaking the V2 inference protocol, one process per revision. A
router in front of them splits requests by `canaryTrafficPercent` as Knative's route does (4.5 in
UPSTREAM.md), and status is written as KServe writes it (dev/status/kserve.py).

Revisions that no longer take traffic and are neither the rolled-out nor the previous one are
stopped (Knative scales them to zero). Standard (raw deployment) mode needs a Deployment
controller and a Gateway; it is not played here: such an InferenceService is reported not ready
with a message saying so.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from traindeploy.dev import processes
from traindeploy.dev.status import kserve as status
from traindeploy.dev.watching import Watcher, patch_status

log = logging.getLogger(__name__)

INFERENCESERVICE = ("serving.kserve.io", "v1beta1", "inferenceservices")
STORAGE_INITIALIZER = Path(__file__).with_name("storage_initializer.py")
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
VERSION_ANNOTATION = "traindeploy.io/model-version"
LOAD_TIMEOUT = 600.0       # a cold model server imports torch and MLflow: give it time, but bounded
DOWNLOAD_TIMEOUT = 600.0
PROXY_TIMEOUT = 60.0


@dataclass
class Revision:
    name: str
    key: str                      # what made it: the predictor spec's hash
    storage_uri: str
    model_name: str
    version: str | None
    directory: Path
    port: int = 0
    process: object = None
    ready: bool = False
    failure: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Service:
    name: str
    uid: str
    router: "Router"
    revisions: list[Revision] = field(default_factory=list)
    rolled_out: str | None = None
    previous_rolled_out: str | None = None
    latest_spec: dict = field(default_factory=dict)
    generation: int = 0
    annotations: dict = field(default_factory=dict)
    written: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def revision(self, name: str | None) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)


class Router(ThreadingHTTPServer):
    """Knative's route, locally: each request goes to one revision, chosen by the traffic weights."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Proxy)
        self.targets: list[tuple[int, str]] = []  # (percent, backend URL)
        self._thread = threading.Thread(target=self.serve_forever, name="dev-router", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "Router":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def pick(self) -> str | None:
        targets = [(weight, url) for weight, url in self.targets if weight > 0]
        if not targets:
            return None
        return random.choices([url for _, url in targets], weights=[w for w, _ in targets])[0]


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the router's access log would drown the progress view
        pass

    def _forward(self) -> None:
        backend = self.server.pick()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if backend is None:
            self._answer(503, b'{"error": "no ready revision takes traffic"}')
            return
        host, port = backend.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=PROXY_TIMEOUT)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self._answer(response.status, payload, response.getheader("Content-Type") or "application/json")
        except OSError as error:
            self._answer(502, json.dumps({"error": f"revision unreachable: {error}"}).encode())
        finally:
            connection.close()

    def _answer(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


def _predictor_key(predictor: dict) -> str:
    """Knative makes a revision for every change of the pod template: the predictor without the
    traffic percentage is what the template is made of."""
    template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def _model_env(predictor: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in (predictor.get("model") or {}).get("env") or [] if "name" in e}


class InferenceServices:
    """Watches InferenceServices in one namespace and serves each as its revisions change."""

    def __init__(self, api_client, namespace: str, model_server_python, workdir: Path, on_event=None,
                 load_timeout: float = LOAD_TIMEOUT) -> None:
        self.api_client, self.namespace = api_client, namespace
        self.model_server_python = model_server_python  # () -> Path, built on first use
        self.workdir = workdir
        self.load_timeout = load_timeout
        self.on_event = on_event or (lambda line: None)
        self._services: dict[str, Service] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher = Watcher(api_client, namespace, INFERENCESERVICE, self._on_event, "dev-inferenceservices")

    def start(self) -> "InferenceServices":
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._watcher.stopping.set()
        with self._lock:
            services = list(self._services.values())
            self._services.clear()
        for service in services:
            self._remove(service)
        self._watcher.stop()

    def service(self, name: str) -> Service | None:
        with self._lock:
            return next((s for s in self._services.values() if s.name == name), None)

    # -- events ---------------------------------------------------------------------------------

    def _on_event(self, event: str, isvc: dict) -> None:
        meta = isvc["metadata"]
        with self._lock:
            service = self._services.get(meta["uid"])
            if event == "DELETED":
                self._services.pop(meta["uid"], None)
            elif service is None:
                service = self._services[meta["uid"]] = Service(meta["name"], meta["uid"], Router().start())
        if event == "DELETED":
            if service is not None:
                self._remove(service)
            return
        with service.lock:
            if meta.get("generation") == service.generation:
                return
            service.generation = meta.get("generation") or 0
            service.annotations = dict(meta.get("annotations") or {})
            service.latest_spec = isvc["spec"]
            mode = service.annotations.get(MODE_ANNOTATION, "")
            if mode in ("Standard", "RawDeployment"):
                self._write(service, {"deploymentMode": "Standard", "conditions": [
                    {"type": "Ready", "status": "False", "reason": "DeploymentModeNotPlayed",
                     "message": "traindeploy dev serves in Knative mode only; remove serving.deploymentMode",
                     "lastTransitionTime": status.now()}]})
                return
            predictor = isvc["spec"].get("predictor") or {}
            key = _predictor_key(predictor)
            latest = service.revisions[-1] if service.revisions else None
            if latest is None or latest.key != key:
                revision = self._new_revision(service, isvc, predictor, key)
                threading.Thread(target=self._load, args=(service, revision), name=f"dev-load-{revision.name}",
                                 daemon=True).start()
            self._publish(service)

    def _new_revision(self, service: Service, isvc: dict, predictor: dict, key: str) -> Revision:
        number = len(service.revisions) + 1
        name = f"{service.name}-predictor-{number:05d}"
        model = predictor.get("model") or {}
        revision = Revision(name=name, key=key, storage_uri=model.get("storageUri") or "",
                            model_name=_model_env(predictor).get("MLSERVER_MODEL_NAME") or service.name,
                            version=(isvc["metadata"].get("annotations") or {}).get(VERSION_ANNOTATION),
                            directory=self.workdir / "inferenceservices" / service.name / name)
        service.revisions.append(revision)
        self.on_event(f"inferenceservice {service.name}: revision {name} for {revision.storage_uri}")
        return revision

    # -- a revision's life ----------------------------------------------------------------------

    def _load(self, service: Service, revision: Revision) -> None:
        try:
            self._serve(revision)
            revision.ready = True
            self.on_event(f"inferenceservice {service.name}: revision {revision.name} serves model "
                          f"{revision.model_name} version {revision.version or '?'} at {revision.url}")
        except (RuntimeError, TimeoutError, OSError) as error:
            revision.failure = str(error)
            self.on_event(f"inferenceservice {service.name}: revision {revision.name} failed: {error}")
        if self._stopping.is_set():
            self._stop_revision(revision)
            return
        with service.lock:
            self._publish(service)

    def _serve(self, revision: Revision) -> None:
        python = self.model_server_python()
        revision.directory.mkdir(parents=True, exist_ok=True)
        model_dir = revision.directory / "model"
        log_path = revision.directory / "server.log"
        fetch = processes.start([str(python), str(STORAGE_INITIALIZER), revision.storage_uri, str(model_dir)],
                                revision.directory / "storage-initializer.log")
        try:
            code = fetch.wait(timeout=DOWNLOAD_TIMEOUT)
        except Exception:
            processes.stop(fetch)
            raise TimeoutError(f"storage initializer did not finish within {DOWNLOAD_TIMEOUT:.0f}s")
        if code != 0:
            raise RuntimeError(f"storage initializer exited with {code}: "
                               f"{_last_line(revision.directory / 'storage-initializer.log')}")
        revision.port = processes.free_port()
        settings = {"host": "127.0.0.1", "http_port": revision.port, "grpc_port": processes.free_port(),
                    "metrics_port": processes.free_port(), "parallel_workers": 0}
        model = {"name": revision.model_name, "implementation": "mlserver_mlflow.MLflowRuntime",
                 "parameters": {"uri": str(model_dir), **({"version": revision.version} if revision.version else {})}}
        (revision.directory / "settings.json").write_text(json.dumps(settings))
        (revision.directory / "model-settings.json").write_text(json.dumps(model))
        mlserver = python.with_name("mlserver")
        revision.process = processes.start([str(mlserver), "start", str(revision.directory)], log_path,
                                           env={**os.environ, "MLSERVER_MODEL_NAME": revision.model_name},
                                           cwd=revision.directory)
        ready_path = f"{revision.url}/v2/models/{revision.model_name}/ready"
        try:
            processes.wait_until(lambda: _ok(ready_path), self.load_timeout, f"model server {revision.name}",
                                 revision.process, log_path, interval=0.5)
        except (RuntimeError, TimeoutError) as error:
            self._stop_revision(revision)
            raise RuntimeError(f"model server did not load the model: {_last_error(log_path) or error}") from None

    def _stop_revision(self, revision: Revision) -> None:
        if revision.process is not None:
            processes.stop(revision.process, grace=5)
            revision.process = None

    def _remove(self, service: Service) -> None:
        for revision in service.revisions:
            self._stop_revision(revision)
        service.router.stop()

    # -- traffic and status ---------------------------------------------------------------------

    def _publish(self, service: Service) -> None:
        """Routes and writes status for what the revisions are now (with service.lock held)."""
        latest = service.revisions[-1]
        ready = [r for r in service.revisions if r.ready]
        revisions = status.Revisions(latest_created=latest.name, latest_ready=ready[-1].name if ready else None,
                                     rolled_out=service.rolled_out, previous_rolled_out=service.previous_rolled_out)
        percent = (service.latest_spec.get("predictor") or {}).get("canaryTrafficPercent")
        traffic, moved = status.knative_traffic(revisions, percent)
        service.rolled_out, service.previous_rolled_out = moved.rolled_out, moved.previous_rolled_out
        urls = {r.name: r.url for r in service.revisions}
        service.router.targets = [(t["percent"], urls[t["revisionName"]]) for t in traffic]
        kept = {moved.rolled_out, moved.previous_rolled_out, latest.name, *(t["revisionName"] for t in traffic)}
        for revision in service.revisions:
            if revision.name not in kept and revision.process is not None:
                self._stop_revision(revision)
        tag_latest = service.annotations.get(TAG_ROUTING_ANNOTATION) == "true"
        body = status.knative(url=service.router.url, predictor_url=service.router.url, revisions=moved,
                              traffic=status.tag_urls(traffic, urls.get, tag_latest),
                              observed_generation=service.generation,
                              failure=latest.failure)
        self._write(service, body)

    def _write(self, service: Service, body: dict) -> None:
        comparable = {k: v for k, v in body.items() if k != "conditions"}
        comparable["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                    for c in body.get("conditions") or []]
        if comparable == service.written:
            return
        try:
            patch_status(self.api_client, self.namespace, INFERENCESERVICE, service.name, body)
            service.written = comparable
        except Exception:  # noqa: BLE001 - deleted meanwhile; the watch says so next
            log.exception("could not write the status of inferenceservice %s", service.name)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    return lines[-1] if lines else ""


def _last_error(path: Path) -> str:
    """The model server's own reason: the last exception line of its log."""
    if not path.exists():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    # `package.SomeError: what went wrong`; a bare `CancelledError` is the shutdown that follows.
    errors = [line for line in lines if ": " in line and line.split(": ", 1)[0].endswith(("Error", "Exception"))]
    return (errors or lines or [""])[-1][:500]
