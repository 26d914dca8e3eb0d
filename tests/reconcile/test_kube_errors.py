"""Kubernetes errors by type, from the real apiserver: each answer class becomes its typed error
(`traindeploy.kube`), and each typed error the result the stages act on (`Pass.kube`)."""

from __future__ import annotations

import ssl

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from harness import processes
from traindeploy import kube
from traindeploy.apiserver import ApiServer
from traindeploy.config import OperatorConfig
from traindeploy.context import Environment, Pass
from traindeploy.kube import Kind, Kube
from traindeploy.results import Blocked, Fail, Problem
from traindeploy.stages.training import PYTORCHJOB

NOT_SERVED = Kind("kubeflow.org", "v1", "nosuchjobs", "NoSuchJob")


def _job(namespace: str, name: str, **spec) -> dict:
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name, "namespace": namespace},
            "spec": spec or {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {
                "containers": [{"name": "pytorch", "image": "t:1"}]}}}}}}


def _as_result(kube_api, call):
    p = Pass({"metadata": {"name": "churn", "namespace": "ml", "uid": "u"}, "spec": {}},
             Environment(kube=kube_api, config=OperatorConfig()))
    with pytest.raises(Problem) as problem:
        p.kube(call)
    return problem.value.result


def _service_account_client(control_plane, api_client, namespace: str) -> ApiServer:
    """A client for a ServiceAccount that may do nothing: every request is forbidden."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="nobody")))
    token = core.create_namespaced_service_account_token("nobody", namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    return ApiServer(control_plane.server, authorization=lambda: f"Bearer {token}",
                     ssl_context=ssl.create_default_context(cafile=str(control_plane.ca_file)))


def test_not_found_reads_as_missing(apiserver, namespace):
    assert Kube(apiserver).get(PYTORCHJOB, namespace, "absent") is None
    Kube(apiserver).delete(PYTORCHJOB, namespace, "absent")  # deleting what is gone is done


def test_a_kind_the_cluster_does_not_serve_holds_the_cycle(apiserver, namespace):
    with pytest.raises(kube.KindNotServed):
        Kube(apiserver).ensure(NOT_SERVED, {**_job(namespace, "x"), "apiVersion": "kubeflow.org/v1"})
    result = _as_result(Kube(apiserver), lambda: Kube(apiserver).get(NOT_SERVED, namespace, "x"))
    assert isinstance(result, Blocked) and result.reason == "ChildKindNotInstalled"


def test_an_object_the_apiserver_finds_invalid_names_the_field(apiserver, namespace):
    bad = _job(namespace, "bad")
    bad["spec"]["runPolicy"] = {"backoffLimit": "many"}
    with pytest.raises(kube.Invalid) as invalid:
        Kube(apiserver).ensure(PYTORCHJOB, bad)
    assert any("backoffLimit" in field for field in invalid.value.fields)
    result = _as_result(Kube(apiserver), lambda: Kube(apiserver).ensure(PYTORCHJOB, bad))
    assert isinstance(result, Fail) and result.reason == "InvalidSpec" and "backoffLimit" in result.message


def test_an_object_too_large_for_etcd_fails_instead_of_reading_as_an_outage(api_client, apiserver, namespace):
    """The apiserver answers such an object with HTTP 500 and no reason (gRPC ResourceExhausted)."""
    big = _job(namespace, "big")
    big["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "X", "value": "y" * (2 * 1024 * 1024)}]
    with pytest.raises(ApiException) as answered:  # what the apiserver says when it is sent anyway
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", big)
    assert answered.value.status == 500
    result = _as_result(Kube(apiserver), lambda: Kube(apiserver).ensure(PYTORCHJOB, big))
    assert isinstance(result, Fail) and result.reason == "KubernetesRefused" and "too large" in result.message


def test_an_object_too_large_for_the_apiserver_fails_with_its_message(apiserver, namespace):
    huge = _job(namespace, "huge")
    huge["metadata"]["annotations"] = {"big": "x" * (3 * 1024 * 1024 + 1)}
    result = _as_result(Kube(apiserver), lambda: Kube(apiserver).ensure(PYTORCHJOB, huge))
    assert isinstance(result, Fail) and result.reason == "KubernetesRefused"
    assert "too large" in result.message.lower()


def test_a_stale_resource_version_is_a_conflict(api_client, apiserver, namespace):
    api = Kube(apiserver)
    created, _ = api.ensure(PYTORCHJOB, _job(namespace, "job"))
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs", "job", {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(kube.Conflict):
        api.replace_status(PYTORCHJOB, namespace, "job", {"conditions": []},
                           resource_version=created["metadata"]["resourceVersion"])


def test_forbidden_holds_the_cycle(control_plane, api_client, namespace):
    nobody = Kube(_service_account_client(control_plane, api_client, namespace))
    with pytest.raises(kube.Forbidden):
        nobody.get(PYTORCHJOB, namespace, "job")
    result = _as_result(nobody, lambda: nobody.secret_data(namespace, "mlflow-creds"))
    assert isinstance(result, Blocked) and result.reason == "Forbidden" and "RBAC" in result.message


def test_an_apiserver_that_does_not_answer_is_unavailable():
    down = Kube(ApiServer(f"https://127.0.0.1:{processes.free_port()}", insecure=True), timeout=2)
    with pytest.raises(kube.KubeUnavailable):
        down.get(PYTORCHJOB, "ml", "job")
    result = _as_result(down, lambda: down.get(PYTORCHJOB, "ml", "job"))
    assert isinstance(result, Blocked) and result.reason == "KubernetesUnavailable"
