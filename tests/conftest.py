"""Session-wide real parts: a control plane with all CRDs, helm/kubectl, an MLflow server.

Each is started once per test session; each test gets its own namespace.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from harness import tools
from harness.controlplane import ControlPlane
from harness.mlflow_server import MlflowServer


@pytest.fixture(scope="session")
def kube_tools() -> Path:
    """Directory with the real `helm` and `kubectl` (never /usr/bin/kubectl)."""
    return tools.kube_tools_dir()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory, kube_tools):
    workdir = tmp_path_factory.mktemp("controlplane")
    with ControlPlane(workdir=workdir, kubectl=kube_tools / "kubectl") as cp:
        cp.install_all_crds()
        previous = os.environ.get("KUBECONFIG")
        # kopf and the kubernetes client find the cluster the way users' tools do.
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        try:
            yield cp
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def api_client(control_plane):
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="session")
def apiserver(control_plane):
    """The operator's own apiserver client (`traindeploy.apiserver`), on the admin kubeconfig."""
    api = control_plane.apiserver()
    yield api
    api.close()


@pytest.fixture
def namespace(api_client) -> str:
    """A fresh namespace per test, deleted afterwards (the namespace controller empties it)."""
    from kubernetes import client

    name = f"t-{secrets.token_hex(4)}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def all_logs():
    """Every log record at DEBUG and above, from every logger (urllib3 and requests included)."""
    import logging

    from harness.logcapture import LogCapture

    handler = LogCapture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    with MlflowServer(workdir=tmp_path_factory.mktemp("mlflow")) as server:
        yield server
