"""Runs the operator as its own process, as a Deployment's pod would: stop it, kill it mid-stage,
start it again."""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from pathlib import Path

from harness import processes
from harness.paths import REPO_ROOT

# Short intervals so that tests see backoff, polling and deadlines within seconds.
TEST_SETTINGS = {
    "TRAINDEPLOY_HTTP_TIMEOUT": "3",
    "TRAINDEPLOY_BACKOFF_INITIAL": "0.5",
    "TRAINDEPLOY_BACKOFF_MAX": "2",
    "TRAINDEPLOY_POLL_INTERVAL": "1",
    "TRAINDEPLOY_RESYNC_INTERVAL": "30",
    "TRAINDEPLOY_DEADLINE_GRACE": "1",
    "TRAINDEPLOY_STARTUP_SPREAD": "0",
    # The MLflow client library is not used by the operator, but keep any child tools quick.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
}


class OperatorProcess:
    def __init__(self, namespace: str, kubeconfig: Path, logdir: Path, settings: dict[str, str],
                 verbose: bool = True, python: str | Path = sys.executable) -> None:
        """`verbose` logs at debug level (the tests read it); benchmarks measure at info, with
        `python` an interpreter that has the operator's runtime dependencies only, as its image."""
        self.python = str(python)
        self.namespace = namespace
        self.verbose = verbose
        self.kubeconfig = kubeconfig
        self.logfile = logdir / "operator.log"
        self.settings = settings
        self._proc = None
        self.starts = 0
        self.metrics_port: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def scrape(self) -> dict[tuple[str, tuple], float]:
        """The samples the operator's /metrics endpoint serves now: {(name, ((label, value), ...)): value}."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def start(self, timeout: float = 60) -> "OperatorProcess":
        port = processes.free_port()
        self.metrics_port = processes.free_port()
        env = {**os.environ, **TEST_SETTINGS, "TRAINDEPLOY_METRICS_ADDRESS": "127.0.0.1",
               "TRAINDEPLOY_METRICS_PORT": str(self.metrics_port), **self.settings,
               "KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": str(REPO_ROOT / "operator")}
        self._proc = processes.start(
            [self.python, "-m", "traindeploy", "run", "--namespace", self.namespace,
             "--liveness", f"http://127.0.0.1:{port}/healthz",
             *(["--verbose"] if self.verbose else ["--log-level", "info"])],
            self.logfile, env=env)
        self.starts += 1
        processes.wait_until(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), timeout, "operator liveness",
                             self._proc, self.logfile)
        return self

    def stop(self) -> None:
        """A graceful stop (SIGTERM), as on a rolling update."""
        if self._proc is not None:
            processes.stop(self._proc, grace=20)
            self._proc = None

    def kill(self) -> None:
        """A crash: no cleanup code runs."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            processes.stop(self._proc)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 80) -> str:
        if not self.logfile.exists():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200
