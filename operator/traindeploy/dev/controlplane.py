"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
and on request kube-scheduler.

    with ControlPlane(workdir, bin_dir, kubectl) as cp:
        cp.kubeconfig          # admin kubeconfig (bearer token, verified TLS)
        cp.install_crds(...)   # our CRDs and the upstream child CRDs

The apiserver runs with RBAC authorization and without the ServiceAccount admission plugin (no
token controller runs); the controller manager runs only the garbage-collector and namespace
controllers, so owner references and namespace deletion behave as on a real cluster.

`ControlPlane(scheduler=True, controllers=...)` is the upstream tier's cluster: kube-scheduler binds
pods to the fake Nodes KWOK plays (`harness.upstream`), and the controller manager runs more of
its controllers (the node lifecycle controller lifts the not-ready taint new Nodes get).

`traindeploy dev` runs one for a local lifecycle; the tests run one per session
(tests/harness/controlplane.py gives the binaries the harness built).
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from traindeploy.dev import processes

log = logging.getLogger(__name__)

KCM_CONTROLLERS = "garbage-collector-controller,namespace-controller"


class ControlPlane(processes.LocalServer):
    def __init__(self, workdir: Path | None, bin_dir: Path, kubectl: Path, *, scheduler: bool = False,
                 controllers: str = KCM_CONTROLLERS) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="traindeploy-cp-"))
        self.bin_dir = bin_dir
        self.kubectl = kubectl
        self.admin_token = secrets.token_hex(24)
        self._kcm_token = secrets.token_hex(24)
        self._scheduler_token = secrets.token_hex(24)
        self.scheduler = scheduler
        self.controllers = controllers
        self.port = 0
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ca_file = self.workdir / "certs" / "apiserver.crt"
        self._procs: list[subprocess.Popen] = []

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------

    def _start(self, timeout: float) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        etcd_url = self._start_etcd(timeout)
        self._start_apiserver(etcd_url, timeout)
        self._start_controller_manager(timeout)
        if self.scheduler:
            self._start_scheduler(timeout)
        log.info("control plane up at %s in %.1fs", self.server, time.monotonic() - started)

    # -- components ----------------------------------------------------------------------------

    def _start_etcd(self, timeout: float) -> str:
        client_port, peer_port = processes.free_port(), processes.free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        logfile = self.workdir / "etcd.log"
        proc = processes.start([
            str(self.bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Throwaway data: durability buys nothing here and fsync dominates on slow disks.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ], logfile)
        self._procs.append(proc)
        processes.wait_until(lambda: _http_ok(f"{client_url}/health"), timeout, "etcd", proc, logfile)
        return client_url

    def _start_apiserver(self, etcd_url: str, timeout: float) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        sa_key = certs / "service-account.key"
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", str(sa_key)], check=True, capture_output=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},admin,admin-uid,"system:masters"\n'
            f'{self._kcm_token},system:kube-controller-manager,kcm-uid,"system:masters"\n'
            f'{self._scheduler_token},system:kube-scheduler,scheduler-uid,"system:masters"\n')
        tokens.chmod(0o600)
        self.port = processes.free_port()
        logfile = self.workdir / "kube-apiserver.log"
        proc = processes.start([
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            # No --tls-cert-file: the apiserver writes a self-signed CA and serving cert here.
            f"--cert-dir={certs}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            # No token controller runs, so pods and SAs must not need auto-mounted tokens.
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--profiling=false",
            "--v=1",
        ], logfile)
        self._procs.append(proc)
        processes.wait_until(lambda: self.ca_file.exists(), timeout, "kube-apiserver certs", proc, logfile)
        self._write_kubeconfig(self.kubeconfig, "admin", self.admin_token)
        processes.wait_until(lambda: self._get("/readyz") == "ok", timeout, "kube-apiserver /readyz",
                             proc, logfile)

    def _start_controller_manager(self, timeout: float) -> None:
        flags = [f"--controllers={self.controllers}", "--use-service-account-credentials=false"]
        if "node-lifecycle-controller" in self.controllers:
            # The fake Nodes' Leases are renewed by one local process (KWOK): on a busy machine a
            # late renewal must not mark a Node NotReady, which also turns its pods NotReady.
            flags.append("--node-monitor-grace-period=1h")
        self._start_component("kube-controller-manager", "system:kube-controller-manager", self._kcm_token,
                              "kcm-certs", timeout, flags)

    def _start_scheduler(self, timeout: float) -> None:
        self._start_component("kube-scheduler", "system:kube-scheduler", self._scheduler_token,
                              "scheduler-certs", timeout, [])

    def _start_component(self, binary: str, user: str, token: str, cert_dir: str, timeout: float,
                         flags: list[str]) -> None:
        """A component that talks to the apiserver as `user` and serves /healthz on 127.0.0.1."""
        kubeconfig = self.workdir / f"{binary}.kubeconfig"
        self._write_kubeconfig(kubeconfig, user, token)
        port = processes.free_port()
        logfile = self.workdir / f"{binary}.log"
        proc = processes.start([
            str(self.bin_dir / binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            *flags,
            "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={self.workdir / cert_dir}",
            # Tests delete owners often; the default client rate would make collection lag.
            "--kube-api-qps=100", "--kube-api-burst=200",
            "--v=1",
        ], logfile)
        self._procs.append(proc)
        processes.wait_until(lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", insecure=True),
                             timeout, f"{binary} /healthz", proc, logfile)

    # -- helpers -------------------------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "traindeploy-test",
            "clusters": [{"name": "traindeploy-test",
                          "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "traindeploy-test",
                          "context": {"cluster": "traindeploy-test", "user": user, "namespace": "default"}}],
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _get(self, path: str) -> str:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(self.server + path,
                                         headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.read().decode()

    def kubectl_run(self, *args: str, input: str | None = None, check: bool = True,
                    timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, check=check, timeout=timeout)

    def install_crds(self, *sources: Path, timeout: float = 120) -> list[str]:
        """Server-side applies every CRD under `sources` and waits until each is Established.

        Server-side apply because the largest upstream CRDs exceed the client-side-apply
        annotation limit. Returns the CRD names.
        """
        files = sorted(p for source in sources
                       for p in ([source] if source.is_file() else source.rglob("*.y*ml")))
        args = ["apply", "--server-side", "--force-conflicts", "-o", "name"]
        for path in files:
            args += ["-f", str(path)]
        applied = self.kubectl_run(*args, timeout=timeout).stdout.split()
        deadline = time.monotonic() + timeout
        while True:
            waited = self.kubectl_run("wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                                      *applied, timeout=timeout + 10, check=False)
            if waited.returncode == 0:
                break
            # A CRD read back before the apiserver wrote its first status has no conditions, and
            # kubectl wait gives up at once on it ("accessor error") instead of waiting.
            if "accessor error" not in waited.stderr or time.monotonic() > deadline:
                raise subprocess.CalledProcessError(waited.returncode, waited.args, waited.stdout,
                                                    waited.stderr)
            time.sleep(0.2)
        return [name.split("/", 1)[1] for name in applied]


def _http_ok(url: str, insecure: bool = False) -> bool:
    context = None
    if url.startswith("https") and insecure:
        context = ssl._create_unverified_context()  # the component's own throwaway serving cert
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return response.status == 200
