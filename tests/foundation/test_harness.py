"""The harness itself: cached builds, real tools, and no process left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import tools
from harness.paths import CONTROLPLANE_MODULE, REPO_ROOT


def test_cache_key_follows_go_sum(tmp_path):
    module = tmp_path / "controlplane"
    shutil.copytree(CONTROLPLANE_MODULE, module)
    assert tools.controlplane_key(module) == tools.controlplane_key()
    with open(module / "go.sum", "a") as go_sum:
        go_sum.write("example.com/changed v1.0.0 h1:AAAA=\n")
    assert tools.controlplane_key(module) != tools.controlplane_key()


def test_binaries_are_cached_and_are_the_pinned_releases(control_plane, kube_tools):
    assert control_plane.bin_dir == tools.controlplane_bin_dir()  # a cache hit, no rebuild
    etcd = subprocess.run([str(control_plane.bin_dir / "etcd"), "--version"],
                          capture_output=True, text=True, check=True).stdout
    assert "etcd Version: 3.6." in etcd
    versions = json.loads(control_plane.kubectl_run("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"].startswith("v1.36.")
    assert versions["clientVersion"]["gitVersion"].startswith("v1.34.")
    helm = subprocess.run([str(kube_tools / "helm"), "version", "--short"],
                          capture_output=True, text=True, check=True).stdout
    assert helm.startswith("v4.")
    assert not str(kube_tools / "kubectl").startswith("/usr/bin")


def test_rbac_is_enforced(control_plane, api_client, namespace):
    """An identity without bindings is refused: the apiserver really authorizes with RBAC."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="nobody")))
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    denied = subprocess.run(
        [str(control_plane.kubectl), f"--server={control_plane.server}",
         f"--certificate-authority={control_plane.ca_file}", f"--token={token}",
         "get", "pods", "-n", namespace], capture_output=True, text=True)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_children_die_with_a_killed_parent(tmp_path):
    """Even a SIGKILLed test run (no cleanup code runs) leaves no server behind."""
    marker = tmp_path / "marker"
    script = (
        "import sys, time; from pathlib import Path; from harness import processes\n"
        f"processes.start(['sleep', '300', '{marker}'], Path('{tmp_path / 'log'}'))\n"
        "print('started', flush=True); time.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")})
    assert parent.stdout.readline().strip() == "started"
    assert _pids_mentioning(str(marker))
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _pids_mentioning(str(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pids_mentioning(str(marker)) == []


@pytest.mark.slow
def test_command_line_control_plane_starts_and_stops_cleanly(tmp_path, kube_tools):
    workdir = tmp_path / "cp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.controlplane", "up", "--no-crds", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")})
    try:
        kubeconfig = None
        for line in proc.stdout:
            if line.startswith("export KUBECONFIG="):
                kubeconfig = line.strip().split("=", 1)[1]
                break
        assert kubeconfig, "the command never printed its kubeconfig"
        children = _pids_mentioning(str(workdir))
        assert len(children) >= 3, "etcd, kube-apiserver and kube-controller-manager should run"
        ready = subprocess.run([str(kube_tools / "kubectl"), f"--kubeconfig={kubeconfig}",
                                "get", "--raw", "/readyz"], capture_output=True, text=True, check=True)
        assert ready.stdout == "ok"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert _pids_mentioning(str(workdir)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
