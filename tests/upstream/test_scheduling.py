"""kube-scheduler and KWOK: pods bind to the fake GPU nodes, run, and end when a test says so."""

from __future__ import annotations

import pytest
from kubernetes import client

from harness.upstream import GPU_RESOURCE, Kwok, wait_for

from .conftest import GPUS_PER_NODE, NODES

pytestmark = pytest.mark.slow


def _pod(name: str, gpus: int) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
        restart_policy="Never",
        containers=[client.V1Container(
            name="main", image="registry.invalid/never-pulled:1",
            resources=client.V1ResourceRequirements(limits={GPU_RESOURCE: str(gpus)}))]))


def _read(core, namespace, name):
    return core.read_namespaced_pod(name, namespace)


def test_fake_nodes_offer_their_gpus(api_client, kwok):
    nodes = {node.metadata.name: node for node in client.CoreV1Api(api_client).list_node().items}
    assert set(NODES) <= set(nodes)
    for name in NODES:
        assert nodes[name].status.allocatable[GPU_RESOURCE] == str(GPUS_PER_NODE)
        assert not nodes[name].spec.taints, "the node lifecycle controller lifts the not-ready taint"


def test_a_pod_binds_runs_and_succeeds(api_client, kwok, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("fits", gpus=1))
    pod = wait_for(lambda: _read(core, namespace, "fits"), lambda p: p.status.phase == "Running",
                   what="the pod Running")
    assert pod.spec.node_name in NODES
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    assert pod.status.pod_ip

    Kwok.end_pod(core, namespace, "fits", exit_code=0)
    pod = wait_for(lambda: _read(core, namespace, "fits"), lambda p: p.status.phase == "Succeeded",
                   what="the pod Succeeded")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_a_failing_container_fails_the_pod(api_client, kwok, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("fails", gpus=0))
    wait_for(lambda: _read(core, namespace, "fails"), lambda p: p.status.phase == "Running", what="Running")
    Kwok.end_pod(core, namespace, "fails", exit_code=3)
    pod = wait_for(lambda: _read(core, namespace, "fails"), lambda p: p.status.phase == "Failed",
                   what="Failed")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_a_pod_asking_for_more_gpus_than_any_node_has_stays_pending(api_client, kwok, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("too-big", gpus=GPUS_PER_NODE + 1))
    pod = wait_for(lambda: _read(core, namespace, "too-big"),
                   lambda p: any(c.type == "PodScheduled" and c.reason == "Unschedulable"
                                 for c in p.status.conditions or []),
                   what="the scheduler to give up on the pod")
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    (scheduled,) = [c for c in pod.status.conditions if c.type == "PodScheduled"]
    assert f"Insufficient {GPU_RESOURCE}" in scheduled.message
