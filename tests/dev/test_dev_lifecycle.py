"""`traindeploy dev` end to end, for real: the example trainer trains with PyTorch on CPU, the
operator registers the model in MLflow, MLServer serves it, and V2 `infer` requests to the printed
URL answer with that model's predictions; a second version rolls out by canary with real traffic
split by the router, after a release whose model cannot load was rolled back while version 1 kept
answering; Ctrl-C stops every process it started.

Slow (PyTorch and MLServer start-ups): about 5 minutes warm on 2 cores.
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
BROKEN_IMAGE = "traindeploy-broken-trainer"
BROKEN_TRAINER = Path(__file__).with_name("broken_trainer")


def manifest(tmp_path: Path) -> Path:
    document = yaml.safe_load((REPO_ROOT / "examples" / "traindeploys" / "minimal.yaml").read_text())
    document["spec"]["training"]["hyperparameters"] = {"lr": "0.01", "epochs": "3"}
    document["spec"]["serving"] = {"canary": {"steps": [50, 100], "stepIntervalSeconds": STEP_SECONDS,
                                              "readyTimeoutSeconds": 300}}
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class DevRun:
    def __init__(self, tmp_path: Path, manifest_path: Path, *extra: str) -> None:
        self.output = tmp_path / "dev.out"
        argv = [str(Path(sys.executable).with_name("traindeploy")), "dev", str(manifest_path),
                "--dev-config", str(REPO_ROOT / "examples" / "traindeploy-dev.yaml"),
                f"--control-plane-bin={tools.controlplane_bin_dir()}",
                f"--kubectl={tools.kube_tools_dir() / 'kubectl'}",
                f"--crds={OUR_CRDS}", f"--crds={upstream_crds_dir()}",
                f"--kfp-python={trainer_env.pipelines_python()}",
                # The broken release's image: a trainer whose model cannot load.
                f"--image={BROKEN_IMAGE}={BROKEN_TRAINER}:{REPO_ROOT / 'examples' / 'trainer' / 'requirements.txt'}",
                *extra]
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


def test_trains_serves_rolls_back_a_broken_canary_and_rolls_out_a_good_one_for_real(tmp_path):
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

        from kubernetes import client, config

        api = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))

        def td() -> dict:
            return api.get_namespaced_custom_object(*TD[:2], "default", TD[2], "churn")

        def patch(training: dict) -> None:
            api.patch_namespaced_custom_object(*TD[:2], "default", TD[2], "churn", {"spec": {"training": training}})

        # A release whose model cannot load: its canary fails in MLServer, it is rolled back, and
        # version 1 answers all along.
        patch({"image": f"{BROKEN_IMAGE}:1"})
        answered = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            answered += versions_answering(url, body, 5)
            rollout = (td().get("status") or {}).get("rollout") or {}
            if rollout.get("version") == "2" and rollout.get("state") == "RolledBack":
                break
            time.sleep(1)
        else:
            raise AssertionError(f"the broken canary was not rolled back:\n{run.text()[-4000:]}")
        assert "failed: model server did not load the model" in run.text()
        assert set(answered + versions_answering(url, body, 20)) == {"1"}

        # A new hyperparameter is a new cycle: version 3, rolled out by canary through the router.
        patch({"image": "ghcr.io/traindeploy/example-trainer:0.1", "hyperparameters": {"lr": "0.02"}})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rollout = (td().get("status") or {}).get("rollout") or {}
            if rollout.get("version") == "3" and rollout.get("weight") == 50 and \
                    "3" in versions_answering(url, body, 10):
                break
            time.sleep(2)
        else:
            raise AssertionError(f"no 50% canary of version 3:\n{run.text()[-4000:]}")
        answered = versions_answering(url, body, SPLIT_REQUESTS)
        still = (td().get("status") or {}).get("rollout") or {}
        assert still.get("weight") == 50, "the step moved during the measurement; raise STEP_SECONDS"
        share = answered.count("3") / len(answered)
        assert set(answered) == {"1", "3"} and abs(share - 0.5) <= SPLIT_TOLERANCE, share

        promoted = run.wait_for(r"traindeploy/churn is Ready .* version 3 serves", timeout=600, after=ready.end())
        assert promoted
        assert set(versions_answering(url, body, 20)) == {"3"}
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


def test_a_pipeline_and_a_katib_search_run_before_the_final_training_for_real(tmp_path):
    """examples/traindeploys/search.yaml: the compiled pipeline runs through the local KFP
    endpoint, Katib's trials run as processes with Optuna's suggestions, and the best trial's
    learning rate is the one the final training run logged to MLflow."""
    pipeline = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prep-pipeline"},
                "data": {"pipeline.yaml": (REPO_ROOT / "examples" / "pipelines" / "prep_pipeline.yaml").read_text()}}
    search = yaml.safe_load((REPO_ROOT / "examples" / "traindeploys" / "search.yaml").read_text())
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump_all([pipeline, search]))
    run = DevRun(tmp_path, path)
    try:
        run.wait_for(r"traindeploy/churn-search is Ready .* version 1 serves at", timeout=1200)
        kubeconfig = run.wait_for(r"export KUBECONFIG=(\S+)", timeout=30)[1]
        mlflow_url = run.wait_for(r"MLflow: (http://\S+)/#", timeout=30)[1]
        from kubernetes import client, config

        api = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
        status = api.get_namespaced_custom_object(*TD[:2], "default", TD[2], "churn-search")["status"]
        assert status["pipeline"]["state"] == "SUCCEEDED", status["pipeline"]  # as KFP names it
        experiment = api.get_namespaced_custom_object("kubeflow.org", "v1beta1", "default", "experiments",
                                                      status["tuning"]["experimentName"])
        assert experiment["status"]["trials"] == 4 and experiment["status"].get("trialsSucceeded") == 4
        best = status["tuning"]["bestParameters"]["lr"]
        observed = experiment["status"]["currentOptimalTrial"]
        assert {a["name"]: a["value"] for a in observed["parameterAssignments"]} == {"lr": best}
        with urllib.request.urlopen(f"{mlflow_url}/api/2.0/mlflow/runs/get?run_id="
                                    f"{status['training']['mlflowRunId']}", timeout=10) as response:
            params = {p["key"]: p["value"] for p in json.loads(response.read())["run"]["data"]["params"]}
        assert float(params["lr"]) == float(best) and params["epochs"] == "3"
        assert "--lr=" + best in run.text()  # the final job's command line, as the executor shows it
    finally:
        run.interrupt()
