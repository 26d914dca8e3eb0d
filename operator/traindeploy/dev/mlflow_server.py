"""A real MLflow tracking server with a SQLite backend and a local artifact store, on loopback.

    with MlflowServer() as server:
        server.url   # http://127.0.0.1:PORT

`traindeploy dev` runs one; so do the tests.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from traindeploy.dev import processes

log = logging.getLogger(__name__)


class MlflowServer(processes.LocalServer):
    def __init__(self, workdir: Path | None = None, port: int | None = None,
                 admin_password: str | None = None, executable: Path | None = None) -> None:
        """With `admin_password`, the server runs MLflow's basic-auth app: every request needs the
        user `admin` and that password (or a user the test creates). `executable` is the `mlflow`
        command, by default the one beside this interpreter."""
        self.executable = executable or Path(sys.executable).with_name("mlflow")
        self.admin_password = admin_password
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="traindeploy-mlflow-"))
        self.port = port or processes.free_port()
        self.logfile = self.workdir / "mlflow.log"
        self._procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / "artifacts"

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(exist_ok=True)
        mlflow = self.executable
        if not mlflow.exists():
            raise RuntimeError(f"{mlflow} not found: install the MLflow server (pip install 'traindeploy[dev]')")
        started = time.monotonic()
        env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
        auth = []
        if self.admin_password:
            config = self.workdir / "basic_auth.ini"
            config.write_text("[mlflow]\ndefault_permission = READ\n"
                              f"database_uri = sqlite:///{self.workdir / 'auth.db'}\n"
                              f"admin_username = admin\nadmin_password = {self.admin_password}\n"
                              "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env.update({"MLFLOW_AUTH_CONFIG_PATH": str(config),
                        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
            auth = ["--app-name", "basic-auth"]
        proc = processes.start([
            str(mlflow), "server", *auth,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            # Clients upload artifacts through the server, as trainers in pods would.
            "--artifacts-destination", self.artifacts_dir.as_uri(),
            "--workers", "1",
        ], self.logfile, env=env, cwd=self.workdir)
        self._procs.append(proc)
        processes.wait_until(self._healthy, timeout, "mlflow server", proc, self.logfile, interval=0.5)
        log.info("mlflow server up at %s in %.1fs", self.url, time.monotonic() - started)

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
            return response.status == 200
