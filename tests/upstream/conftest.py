"""The upstream tier: the real upstream controllers on a control plane of its own.

kube-scheduler binds pods to fake Nodes that KWOK plays, the Training Operator v1.9.2
reconciles PyTorchJobs (see harness.upstream), Kubeflow Trainer v2.3.0 TrainJobs through JobSet
and the job controller (harness.upstream_trainer), Katib v0.19.0's controller and webhooks admit
and reconcile Experiments (harness.upstream_katib) and KServe v0.20.0 InferenceServices in
Standard mode (harness.upstream_kserve). The session control plane of the other tiers is not used
here: its PyTorchJob CRD is another version's.

`api_client` and `apiserver` are overridden for this directory, so the root `namespace` fixture makes each test's
namespace on this tier's cluster.
"""

from __future__ import annotations

import pytest

from harness.controlplane import ControlPlane
from harness.paths import OUR_CRDS
from harness.upstream import Kwok, TrainingOperator, UPSTREAM_KCM_CONTROLLERS
from harness.upstream_katib import Katib
from harness.upstream_kserve import KServe
from harness.upstream_trainer import JobSet, Trainer

# Two fake GPU nodes of 8 GPUs each; the product label is what tests/children/samples.py selects.
GPUS_PER_NODE = 8
NODES = ("gpu-node-0", "gpu-node-1")
NODE_LABELS = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


@pytest.fixture(scope="session")
def upstream_control_plane(tmp_path_factory, kube_tools):
    workdir = tmp_path_factory.mktemp("upstream-controlplane")
    with ControlPlane(workdir=workdir, kubectl=kube_tools / "kubectl", scheduler=True,
                      controllers=UPSTREAM_KCM_CONTROLLERS) as cp:
        cp.install_crds(OUR_CRDS)
        yield cp


@pytest.fixture(scope="session")
def kwok(upstream_control_plane, tmp_path_factory):
    with Kwok(upstream_control_plane, workdir=tmp_path_factory.mktemp("kwok")) as kwok:
        for name in NODES:
            kwok.add_node(name, cpu="32", memory="256Gi", gpus=GPUS_PER_NODE, labels=NODE_LABELS)
        kwok.wait_nodes_ready(list(NODES))
        yield kwok


@pytest.fixture(scope="session")
def training_operator(upstream_control_plane, kwok, tmp_path_factory):
    with TrainingOperator(upstream_control_plane, workdir=tmp_path_factory.mktemp("training-operator"),
                          schemes=("pytorchjob",)) as operator:
        yield operator


@pytest.fixture(scope="session")
def api_client(upstream_control_plane):
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(upstream_control_plane.kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="session")
def apiserver(upstream_control_plane):
    """The operator's own apiserver client, on this tier's cluster (as `api_client`)."""
    api = upstream_control_plane.apiserver()
    yield api
    api.close()


@pytest.fixture(scope="session")
def katib(upstream_control_plane, tmp_path_factory):
    """Katib v0.19.0 (harness.upstream_katib). Its trial controller watches the job kinds whose
    CRDs exist when it starts; the tests here create no Trial (see tests/upstream/test_katib.py),
    so it does not wait for the Training Operator's."""
    with Katib(upstream_control_plane, workdir=tmp_path_factory.mktemp("katib")) as katib:
        yield katib


@pytest.fixture(scope="session")
def kserve(upstream_control_plane, kwok, tmp_path_factory):
    """KServe v0.20.0 in Standard mode (harness.upstream_kserve): its pods run on KWOK's nodes."""
    with KServe(upstream_control_plane, workdir=tmp_path_factory.mktemp("kserve")) as kserve:
        yield kserve


# Kubeflow Trainer v2 over JobSet (harness.upstream_trainer), with the module's torch-distributed
# runtime installed.
@pytest.fixture(scope="session")
def jobset(upstream_control_plane, kwok, tmp_path_factory):
    with JobSet(upstream_control_plane, workdir=tmp_path_factory.mktemp("jobset")) as jobset:
        yield jobset


@pytest.fixture(scope="session")
def trainer(upstream_control_plane, jobset, tmp_path_factory):
    with Trainer(upstream_control_plane, workdir=tmp_path_factory.mktemp("trainer")) as trainer:
        yield trainer
