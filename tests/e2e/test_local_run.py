"""`make run` (python -m harness.local_run) as a newcomer runs it: it reaches Ready, shows the model
version, and leaves nothing behind, whether it stops by itself or is interrupted."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT

pytestmark = pytest.mark.slow

MARKER = "TRAINDEPLOY_LOCAL_RUN_TEST"


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    """Starts local_run with a marker in its environment, which every process it starts inherits."""
    token = secrets.token_hex(8)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests"), "PYTHONUNBUFFERED": "1", MARKER: token}
    env.pop("KUBECONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "harness.local_run", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, token


def _left_behind(token: str, wait: float = 15.0) -> list[str]:
    """Command lines of live processes whose environment carries the marker (reparented ones too)."""
    needle = f"{MARKER}={token}".encode()
    deadline = time.monotonic() + wait
    while True:
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if needle in environ.read_bytes():  # a zombie's environ reads empty
                    found.append((environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _workdir(output: str) -> Path:
    match = re.search(r"removed (\S*traindeploy-local-\S+)", output)
    assert match, "the run did not say which directory it removed"
    return Path(match.group(1))


def test_make_run_reaches_ready_shows_the_model_and_cleans_up():
    proc, token = _start("--exit-when-ready")
    try:
        output, _ = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"local_run did not finish in time:\n{output[-6000:]}")

    assert proc.returncode == 0, output[-6000:]
    # Each stand-in says what it plays.
    assert "[local stand-in for the Training Operator] marking PyTorchJob default/churn-g1-train Succeeded" in output
    assert "[local stand-in for the trainer" in output
    assert "[local stand-in for KServe] marking InferenceService default/churn Ready" in output
    # The children, the TrainDeploy's printer columns, and its Events through kubectl describe.
    assert re.search(r"pytorchjob\.kubeflow\.org/churn-g1-train\s+Succeeded", output), output[-6000:]
    assert re.search(r"inferenceservice\.serving\.kserve\.io/churn\s+http://churn\.default\.example\.com\s+True",
                     output), output[-6000:]
    assert "TrainDeploy churn is Ready" in output
    assert re.search(r"^churn\s+Ready\s+churn-classifier\s+1\s+v1 100%\s+True\s", output, re.MULTILINE), \
        output[-6000:]
    assert re.search(r"Normal\s+ModelVersionCreated\s+.*Created churn-classifier version 1", output)
    # The version as MLflow itself reports it, with the aliases the operator moved.
    assert re.search(r"version 1: status READY, aliases challenger, champion, run [0-9a-f]{32}", output), \
        output[-6000:]

    assert not _left_behind(token)
    assert not _workdir(output).exists()


def test_ctrl_c_midway_stops_everything():
    proc, token = _start()
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    try:
        # Interrupt once the operator is at work on the applied TrainDeploy: every part is running.
        while not any("Following the operator" in line for line in seen):
            assert proc.poll() is None, "".join(seen)[-6000:]
            assert time.monotonic() < deadline, "".join(seen)[-6000:]
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)

    assert proc.returncode == 130, output[-6000:]
    assert "Stopping the operator, MLflow and the control plane" in output
    assert not _left_behind(token)
    assert not _workdir(output).exists()
