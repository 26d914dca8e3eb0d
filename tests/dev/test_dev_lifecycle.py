"""`traindeploy dev` end to end, for real: the example trainer trains with PyTorch on CPU, the
operator registers the model in MLflow, MLServer serves it, and V2 `infer` requests to the printed
URL answer with that model's predictions; a second version rolls out by canary with real traffic
split by the router; Ctrl-C stops every process it started.

Slow (PyTorch and MLServer start-ups): about 3-4 minutes warm on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness import tools, trainer_env
from harness.paths import OUR_CRDS, REPO_ROOT, upstream_crds_dir

pytestmark = pytest.mark.slow

TD = ("traindeploy.io", "v1alpha1", "traindeploys")
STEP_SECONDS = 45
# At 50%, 300 requests give a canary share with a standard deviation of 2.9 points: 15 points is
# five of them, so the check fails only when the split is really wrong.
SPLIT_REQUESTS = 300
SPLIT_TOLERANCE = 0.15


def manifest(tmp_path: Path) -> Path:
    document = yaml.safe_load((REPO_ROOT / "examples" / "traindeploys" / "minimal.yaml").read_text())
    document["spec"]["training"]["hyperparameters"] = {"lr": "0.01", "epochs": "3"}
    document["spec"]["serving"] = {"canary": {"steps": [50, 100], "stepIntervalSeconds": STEP_SECONDS}}
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class DevRun:
    def __init__(self, tmp_path: Path, manifest_path: Path) -> None:
        self.output = tmp_path / "dev.out"
        argv = [str(Path(sys.executable).with_name("traindeploy")), "dev", str(manifest_path),
                "--dev-config", str(REPO_ROOT / "examples" / "traindeploy-dev.yaml"),
                f"--control-plane-bin={tools.controlplane_bin_dir()}",
                f"--kubectl={tools.kube_tools_dir() / 'kubectl'}",
                f"--crds={OUR_CRDS}", f"--crds={upstream_crds_dir()}",
                f"--kfp-python={trainer_env.pipelines_python()}"]
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float, after: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.compile(pattern).search(self.text(), after)
            if found:
                return found
            assert self.proc.poll() is None, f"traindeploy dev exited:\n{self.text()[-4000:]}"
            time.sleep(1)
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.text()[-4000:]}")

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=120)


def infer(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def versions_answering(url: str, body: dict, count: int) -> list[str]:
    return [infer(url, body)["model_version"] for _ in range(count)]


def test_trains_serves_and_rolls_out_a_canary_for_real(tmp_path):
    run = DevRun(tmp_path, manifest(tmp_path))
    try:
        ready = run.wait_for(r"traindeploy/churn is Ready .* version (\S+) serves at (\S+)", timeout=900)
        assert ready[1] == "1"
        curl = run.wait_for(r"curl -s .* (\S+/v2/models/churn/infer) \\\n\s+-d '([^']+)'", timeout=30)
        url, body = curl[1], json.loads(curl[2])
        kubeconfig = run.wait_for(r"export KUBECONFIG=(\S+)", timeout=30)[1]

        # A real prediction from version 1: class probabilities of the example classifier.
        answer = infer(url, body)
        assert answer["model_version"] == "1"
        probabilities = answer["outputs"][0]["data"]
        assert answer["outputs"][0]["shape"] == [1, 4] and abs(sum(probabilities) - 1) < 1e-4

        # A new hyperparameter is a new cycle: version 2, rolled out by canary through the router.
        from kubernetes import client, config

        api = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
        api.patch_namespaced_custom_object(*TD[:2], "default", TD[2], "churn",
                                           {"spec": {"training": {"hyperparameters": {"lr": "0.02"}}}})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rollout = (api.get_namespaced_custom_object(*TD[:2], "default", TD[2], "churn").get("status") or {}) \
                .get("rollout") or {}
            if rollout.get("version") == "2" and rollout.get("weight") == 50 and \
                    "2" in versions_answering(url, body, 10):
                break
            time.sleep(2)
        else:
            raise AssertionError(f"no 50% canary of version 2:\n{run.text()[-4000:]}")
        answered = versions_answering(url, body, SPLIT_REQUESTS)
        still = (api.get_namespaced_custom_object(*TD[:2], "default", TD[2], "churn").get("status") or {}) \
            .get("rollout") or {}
        assert still.get("weight") == 50, "the step moved during the measurement; raise STEP_SECONDS"
        share = answered.count("2") / len(answered)
        assert set(answered) == {"1", "2"} and abs(share - 0.5) <= SPLIT_TOLERANCE, share

        promoted = run.wait_for(r"traindeploy/churn is Ready .* version 2 serves", timeout=600, after=ready.end())
        assert promoted
        assert set(versions_answering(url, body, 20)) == {"2"}
    finally:
        code = run.interrupt()
    assert code == 0 or code == 130
    workdir = re.search(r"its files were in (\S+)", run.text())[1]
    # Ctrl-C stopped every process it started: none refers to its working directory any more.
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and workdir in _cmdline(pid)]
    assert not left, [(_cmdline(pid)) for pid in left]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
