"""A kopf operator run by kopf.testing.KopfRunner sees an object and writes its status."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

PROBE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "probes.harness.traindeploy.io"},
    "spec": {"group": "harness.traindeploy.io", "scope": "Namespaced",
             "names": {"kind": "Probe", "plural": "probes", "singular": "probe"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {"message": {"type": "string"}}},
                               "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                           }}}}]},
}


@pytest.fixture(scope="module")
def probe_crd(control_plane):
    control_plane.kubectl_run("apply", "--server-side", "-f", "-", input=__import__("json").dumps(PROBE_CRD))
    control_plane.kubectl_run("wait", "--for=condition=Established", "crd/probes.harness.traindeploy.io")


def test_kopf_operator_sees_an_object_and_writes_its_status(probe_crd, api_client, namespace):
    api = client.CustomObjectsApi(api_client)
    operator = Path(__file__).with_name("probe_operator.py")
    args = ["run", "--standalone", "--namespace", namespace, "--verbose", str(operator)]
    with KopfRunner(args, timeout=60) as runner:
        api.create_namespaced_custom_object(
            "harness.traindeploy.io", "v1", namespace, "probes",
            {"apiVersion": "harness.traindeploy.io/v1", "kind": "Probe",
             "metadata": {"name": "hello"}, "spec": {"message": "hi from the test"}})
        deadline = time.monotonic() + 30
        status = {}
        while time.monotonic() < deadline and "echo" not in status:
            status = api.get_namespaced_custom_object(
                "harness.traindeploy.io", "v1", namespace, "probes", "hello").get("status", {})
            time.sleep(0.2)
        messages = []
        while time.monotonic() < deadline and "Probe observed." not in messages:
            messages = [event.message for event in client.CoreV1Api(api_client).list_namespaced_event(
                namespace, field_selector="involvedObject.name=hello").items]
            time.sleep(0.2)
        api.delete_namespaced_custom_object("harness.traindeploy.io", "v1", namespace, "probes", "hello")
        time.sleep(1)  # let the operator release its finalizer before it stops
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
    assert status.get("echo") == "hi from the test", runner.output
    assert "Probe observed." in runner.output
    assert "Probe observed." in messages, "kopf did not post the handler's log line as an Event"
