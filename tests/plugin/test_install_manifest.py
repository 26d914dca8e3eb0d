"""install.yaml, the install without Helm: it is a fresh render of the chart, and the real
apiserver accepts every object in it.

The CRD is already installed by the session's control plane, so nothing here is applied for real
except the Namespace the manifest creates (only when it is missing, and removed again): every
other object goes through a server-side dry run, which validates and admits it without storing it.
"""

from __future__ import annotations

import importlib.util
import secrets
import time

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from harness.paths import OUR_CRDS, REPO_ROOT

INSTALL = REPO_ROOT / "install.yaml"
NAMESPACE = "traindeploy-system"


def _script():
    spec = importlib.util.spec_from_file_location("gen_install_manifest",
                                                  REPO_ROOT / "scripts" / "gen_install_manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(INSTALL.read_text()) if doc]


def test_install_manifest_is_a_fresh_render_of_the_chart(kube_tools):
    assert INSTALL.read_text() == _script().render(kube_tools / "helm"), \
        "install.yaml is out of date; run: python3 scripts/gen_install_manifest.py"


def test_check_mode_reports_a_stale_file(kube_tools, tmp_path):
    stale = tmp_path / "install.yaml"
    stale.write_text(INSTALL.read_text().replace("replicas: 1", "replicas: 2"))
    script = _script()
    assert script.main(["--check", "--helm", str(kube_tools / "helm"), "--output", str(stale)]) == 1
    assert script.main(["--helm", str(kube_tools / "helm"), "--output", str(stale)]) == 0
    assert stale.read_text() == INSTALL.read_text()
    assert script.main(["--check", "--helm", str(kube_tools / "helm"), "--output", str(stale)]) == 0


def test_what_the_manifest_holds(objects):
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    # The Namespace first, then helm's install order: kubectl applies in file order.
    assert kinds == [("Namespace", NAMESPACE), ("ServiceAccount", "traindeploy-operator"),
                     ("CustomResourceDefinition", "traindeploys.traindeploy.io"), ("ClusterRole", "traindeploy-operator"),
                     ("ClusterRoleBinding", "traindeploy-operator"), ("Service", "traindeploy-operator-metrics"),
                     ("Deployment", "traindeploy-operator")]
    namespaced = [o for o in objects if o["kind"] in ("ServiceAccount", "Service", "Deployment")]
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in namespaced)
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "traindeploy-operator", "namespace": NAMESPACE}]
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubectl", obj["kind"]
    # The CRD is the one in crds/, the single source of truth.
    crd = next(o for o in objects if o["kind"] == "CustomResourceDefinition")
    source = yaml.safe_load((OUR_CRDS / "traindeploy.io_traindeploys.yaml").read_text())
    assert crd["spec"] == source["spec"]
    assert "{{" not in INSTALL.read_text()


@pytest.fixture(scope="module")
def install_namespace(api_client, objects):
    """traindeploy-system as the manifest creates it, for real (a server-side dry run of the
    namespaced objects needs it to exist); removed afterwards if this module made it."""
    core = client.CoreV1Api(api_client)
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    created = False
    deadline = time.monotonic() + 60
    while not created:
        try:
            core.create_namespace(namespace)
            created = True
        except ApiException as error:
            if error.status != 409:
                raise
            existing = core.read_namespace(NAMESPACE)
            if existing.metadata.deletion_timestamp is None:
                break  # made by someone else: used as it is, and left alone
            assert time.monotonic() < deadline, f"namespace {NAMESPACE} stays Terminating"
            time.sleep(0.5)  # a namespace being deleted cannot be created again until it is gone
    yield NAMESPACE
    if created:
        core.delete_namespace(NAMESPACE)


@pytest.mark.parametrize("mode", [
    # What docs/install.md says; the session's CRD may have been installed by the chart tests' helm,
    # whose fields a server-side apply takes over only when told to.
    ("--server-side", "--force-conflicts"),
    (),  # the plain client-side apply people try first
], ids=["server-side", "client-side"])
def test_kubectl_apply_accepts_every_object(control_plane, install_namespace, objects, mode):
    result = control_plane.kubectl_run("apply", *mode, "--dry-run=server", "-f", str(INSTALL), check=False)
    assert result.returncode == 0, result.stderr
    # "clusterrole.rbac.authorization.k8s.io/traindeploy-operator serverside-applied (server dry run)"
    applied = sorted((line.split("/")[0].split(".")[0], line.split("/")[1].split()[0])
                     for line in result.stdout.splitlines())
    assert applied == sorted((o["kind"].lower(), o["metadata"]["name"]) for o in objects), result.stdout
    assert all("(server dry run)" in line for line in result.stdout.splitlines())
    # The namespace enforces the restricted Pod Security Standard: the Deployment must not warn.
    assert "PodSecurity" not in result.stderr, result.stderr


def test_the_operator_pod_is_admitted_under_restricted_pod_security(api_client, install_namespace, objects):
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"admission-{secrets.token_hex(3)}", "labels": template["metadata"]["labels"]},
           "spec": template["spec"]}
    # serviceAccountName names an account this dry run does not create; admission does not look it up here.
    client.CoreV1Api(api_client).create_namespaced_pod(install_namespace, pod, dry_run="All")
