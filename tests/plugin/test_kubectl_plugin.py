"""`kubectl traindeploy ...` through the real kubectl, against the test control plane.

kubectl finds the plugin on PATH as `kubectl-traindeploy`, the console script `make venv` installs
beside this Python. Each test writes a TrainDeploy's status through the status subresource, as the
operator would, and checks what the commands print and which annotations they set.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from plugin import samples
from traindeploy import kubectl_plugin

GROUP, VERSION, PLURAL = "traindeploy.io", "v1alpha1", "traindeploys"


@pytest.fixture(scope="module")
def plugin_dir() -> Path:
    """The virtualenv's bin directory (not resolved: the console script lives beside the link)."""
    bin_dir = Path(sys.executable).parent
    if not os.access(bin_dir / "kubectl-traindeploy", os.X_OK):
        pytest.fail(f"{bin_dir}/kubectl-traindeploy is missing: run `make venv` (pyproject.toml declares it)")
    return bin_dir


class Kubectl:
    """The real kubectl, with the plugin on PATH and the test cluster in $KUBECONFIG."""

    def __init__(self, binary: Path, kubeconfig: Path, plugin_dir: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "KUBECONFIG": str(kubeconfig)}

    def argv(self, *args: str) -> list[str]:
        return [str(self.binary), *args]

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})})


@pytest.fixture(scope="module")
def kubectl(control_plane, kube_tools, plugin_dir) -> Kubectl:
    return Kubectl(kube_tools / "kubectl", control_plane.kubeconfig, plugin_dir)


@pytest.fixture
def custom(api_client) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def _create_td(custom, namespace: str, status: dict | None = None, annotations: dict | None = None) -> dict:
    body = samples.manifest()
    if annotations:
        body["metadata"]["annotations"] = annotations
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    if status is not None:
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "churn",
                                                     {"status": copy.deepcopy(status)})
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn")


def _create_child(custom, namespace: str, obj: dict) -> None:
    """Creates the child, then writes its status as its controller would."""
    group, version = obj["apiVersion"].split("/")
    plural = {"PyTorchJob": "pytorchjobs", "InferenceService": "inferenceservices", "HTTPRoute": "httproutes",
              "TrainJob": "trainjobs"}[obj["kind"]]
    body = copy.deepcopy(obj)
    status = body.pop("status", None)
    body["metadata"].pop("creationTimestamp", None)
    custom.create_namespaced_custom_object(group, version, namespace, plural, body)
    if status:
        custom.patch_namespaced_custom_object_status(group, version, namespace, plural, body["metadata"]["name"],
                                                     {"status": status})


def _in_process(control_plane, *argv: str) -> tuple[int, str, str]:
    """The plugin's main() against the same cluster, without starting a process: for the cases
    that only add a refusal or a variant to a command already run through kubectl (each start of
    the plugin costs an import of the kubernetes client)."""
    out, err = io.StringIO(), io.StringIO()
    code = kubectl_plugin.main([*argv, "--kubeconfig", str(control_plane.kubeconfig)], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _annotations(custom, namespace: str) -> dict:
    td = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn")
    return td["metadata"].get("annotations") or {}


def _row(lines: list[str], name: str, kind: str) -> str:
    (row,) = [line for line in lines if re.search(rf"⧉ {re.escape(name)} +{kind} ", line)]
    return row


def test_kubectl_lists_the_plugin(kubectl, plugin_dir):
    listed = kubectl("plugin", "list")
    assert str(plugin_dir / "kubectl-traindeploy") in listed.stdout, listed.stdout + listed.stderr


def test_get_draws_the_traindeploy_its_children_and_traffic(kubectl, custom, namespace):
    _create_td(custom, namespace, samples.CANARY)
    _create_child(custom, namespace, samples.pytorchjob(conditions=samples.SUCCEEDED_JOB))
    _create_child(custom, namespace, samples.inferenceservice())
    # Another TrainDeploy's child is not drawn.
    stranger = samples.pytorchjob("other-g1-train", cycle="g1")
    stranger["metadata"]["labels"]["traindeploy.io/name"] = "other"
    _create_child(custom, namespace, stranger)

    result = kubectl("traindeploy", "get", "churn", "-n", namespace)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for line in ("Name:      churn", f"Namespace: {namespace}", "Status:    ◌ Canary",
                 "Traffic:   v3 90%, v4 10%", "Rollout:   ◌ Progressing (Knative)", "  Canary:  v4 at 10%",
                 "  Step:    1/3 (set weight 10%)", "  ✔ GatePassed         GatePassed         val_accuracy 0.91 >= 0.85."):
        assert line in lines, f"{line!r} not in\n{result.stdout}"
    assert re.search(r"PyTorchJob +✔ Succeeded +\S+ +mlflow run 4f6e0c$", _row(lines, "churn-g4-train", "PyTorchJob"))
    assert re.search(r"InferenceService +✔ Ready +\S+ +v4, canary 10%$", _row(lines, "churn", "InferenceService"))
    assert re.search(r"PyTorchJob +⚠ NotFound +in status.children, not in the cluster$",
                     _row(lines, "churn-g3-train", "PyTorchJob"))
    assert "other-g1-train" not in result.stdout
    assert [line.split("# ")[1].split()[0] for line in lines if "──# " in line] == ["cycle:g4", "cycle:g3", "serving"]
    assert result.stderr == ""


def test_get_finds_the_namespace_in_the_kubeconfig_context(kubectl, custom, namespace, control_plane, tmp_path):
    _create_td(custom, namespace, {"phase": "Training"})
    config = json.loads(control_plane.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    by_env = kubectl("traindeploy", "get", "churn", env={"KUBECONFIG": str(kubeconfig)})
    assert by_env.returncode == 0, by_env.stderr
    assert f"Namespace: {namespace}" in by_env.stdout and "Status:    ◌ Training" in by_env.stdout
    # --kubeconfig wins over $KUBECONFIG (the session's, whose context says namespace default).
    out = io.StringIO()
    assert kubectl_plugin.main(["get", "churn", "--kubeconfig", str(kubeconfig)], stdout=out,
                               stderr=io.StringIO()) == 0
    assert f"Namespace: {namespace}" in out.getvalue()


def test_get_of_a_traindeploy_that_does_not_exist(kubectl, namespace):
    result = kubectl("traindeploy", "get", "nope", "-n", namespace)
    assert result.returncode == 1
    assert result.stderr == f"error: TrainDeploy {namespace}/nope not found\n" and result.stdout == ""


class _Lines:
    """Collects a process's stdout lines on a thread, so the test can wait for one."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, line: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while line not in self.lines:
                left = deadline - time.monotonic()
                assert left > 0, f"{line!r} never came; got:\n" + "\n".join(self.lines)
                self._changed.wait(left)


def test_get_watch_redraws_on_change_until_interrupted(kubectl, custom, namespace):
    _create_td(custom, namespace, {"phase": "Training", "cycle": {"generation": 1, "label": "g1"}})
    process = subprocess.Popen(kubectl.argv("traindeploy", "get", "churn", "-n", namespace, "--watch"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kubectl.env)
    try:
        output = _Lines(process)
        output.wait_for("Status:    ◌ Training")
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "churn", {"status": {
            "phase": "Ready", "serving": {"modelVersion": "1", "traffic": "v1 100%"}}})
        output.wait_for("Status:    ✔ Ready")
        # kubectl execs the plugin: the signal reaches it, as Ctrl-C in a terminal would.
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr.read() == ""
    # One frame per change, not one per poll.
    assert output.lines.count("Name:      churn") == 2, "\n".join(output.lines)


def test_get_watch_stops_at_its_timeout(kubectl, custom, namespace):
    _create_td(custom, namespace, {"phase": "Training"})
    started = time.monotonic()
    result = kubectl("traindeploy", "get", "churn", "-n", namespace, "--watch", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Name:      churn") == 1 and time.monotonic() - started < 20


def test_approve_names_the_version_that_waits(kubectl, custom, namespace, control_plane):
    _create_td(custom, namespace, samples.AWAITING)
    code, _, stderr = _in_process(control_plane, "approve", "churn", "5", "-n", namespace)
    assert code == 1 and "version 5 does not await approval; version 4 does" in stderr
    assert "traindeploy.io/approve" not in _annotations(custom, namespace)

    result = kubectl("traindeploy", "approve", "churn", "-n", namespace)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"TrainDeploy {namespace}/churn annotated traindeploy.io/approve=4: version 4 proceeds\n"
    assert _annotations(custom, namespace)["traindeploy.io/approve"] == "4"


def test_approve_when_nothing_waits(custom, namespace, control_plane):
    _create_td(custom, namespace, samples.CANARY)
    code, _, stderr = _in_process(control_plane, "approve", "churn", "-n", namespace)
    assert code == 1
    assert stderr == (f"error: no version of TrainDeploy {namespace}/churn awaits approval "
                      "(status.rollout.awaitingApproval is empty)\n")
    assert "traindeploy.io/approve" not in _annotations(custom, namespace)


def test_rollback_and_history(kubectl, custom, namespace, control_plane):
    _create_td(custom, namespace, samples.CANARY)
    history = kubectl("traindeploy", "history", "churn", "-n", namespace)
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines() == [
        "VERSION      RESULT          PREVIOUS  AT                    REASON",
        "3 (serving)  ManualRollback  2         2026-11-22T12:00:00Z  Rolled back by annotation.",
        "2            Promoted        1         2026-11-21T12:00:00Z  All canary steps passed.",
    ]
    code, _, stderr = _in_process(control_plane, "rollback", "churn", "7", "-n", namespace)
    assert code == 1 and "version 7 is not in the rollout history" in stderr

    result = kubectl("traindeploy", "rollback", "churn", "v2", "-n", namespace)
    assert result.returncode == 0, result.stderr
    assert _annotations(custom, namespace)["traindeploy.io/rollback"] == "2"
    assert "all traffic goes back to version 2 (serving now: version 3)" in result.stdout


def test_retrain_sets_a_fresh_token_each_time(kubectl, custom, namespace, control_plane):
    _create_td(custom, namespace, {"phase": "Ready"}, annotations={"team": "growth"})
    result = kubectl("traindeploy", "retrain", "churn", "-n", namespace)
    assert result.returncode == 0, result.stderr
    first = _annotations(custom, namespace)["traindeploy.io/retrain"]
    assert result.stdout == (f"TrainDeploy {namespace}/churn annotated traindeploy.io/retrain={first}: "
                             "a new training cycle starts\n")
    code, _, _ = _in_process(control_plane, "retrain", "churn", "-n", namespace)
    second = _annotations(custom, namespace)["traindeploy.io/retrain"]
    assert code == 0 and second != first
    assert all(re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", token) for token in (first, second))
    assert _annotations(custom, namespace)["team"] == "growth"  # a merge patch: other annotations stay
    code, _, _ = _in_process(control_plane, "retrain", "churn", "nightly-7", "-n", namespace)
    assert code == 0 and _annotations(custom, namespace)["traindeploy.io/retrain"] == "nightly-7"


def test_logs_says_why_there_is_none(kubectl, custom, api_client, namespace, control_plane):
    _create_td(custom, namespace, {"phase": "Pending"})
    code, _, stderr = _in_process(control_plane, "logs", "churn", "-n", namespace)
    assert code == 1
    assert stderr == f"error: TrainDeploy {namespace}/churn has no training job yet (status.training is empty)\n"

    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "churn", {"status": {
        "phase": "Training", "training": {"kind": "PyTorchJob", "name": "churn-g1-train", "state": "Running"}}})
    code, _, stderr = _in_process(control_plane, "logs", "churn", "-n", namespace)
    assert code == 1
    assert stderr == (
        f"error: no pod of PyTorchJob {namespace}/churn-g1-train yet (looked for pods labelled "
        "training.kubeflow.org/job-name=churn-g1-train with training.kubeflow.org/replica-type=master); the job "
        "may not have started, or its pods were removed\n")

    # The Master pod exists but, with no scheduler or kubelet here, never starts: no log to read.
    core = client.CoreV1Api(api_client)
    for replica in ("worker", "master"):
        core.create_namespaced_pod(namespace, {"metadata": {"name": f"churn-g1-train-{replica}-0", "labels": {
            "training.kubeflow.org/job-name": "churn-g1-train", "training.kubeflow.org/replica-type": replica}},
            "spec": {"containers": [{"name": "pytorch", "image": "ghcr.io/example/churn-train:1.4.0"}]}})
    pending = kubectl("traindeploy", "logs", "churn", "-n", namespace)
    assert pending.returncode == 1
    assert pending.stderr == (f"error: no log from pod {namespace}/churn-g1-train-master-0 yet: it is not scheduled "
                              "to a node (phase Pending)\n")
