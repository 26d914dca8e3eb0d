"""The Helm chart, with the real helm and kubectl and the real control plane: lint, render with
default and other values, the schema, server-side validation, install and uninstall, and the
RBAC proof: the operator runs a TrainDeploy to Ready with nothing but the chart's permissions."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e import manifests
from e2e.operator_process import OperatorProcess
from e2e.players import Players, train_into_run, wait_for
from harness.paths import OUR_CRDS, REPO_ROOT
from packaging_helm import CHART, Helm, find, one, rule_table

CRUD = {"get", "list", "watch", "create", "patch", "delete"}

# The operator's permissions, with the reasons in templates/_rbac.tpl. A change to the RBAC is a
# change to this table, made on purpose.
NAMESPACED_RULES = {
    ("traindeploy.io", "traindeploys"): {"get", "list", "watch", "patch"},
    ("traindeploy.io", "traindeploys/status"): {"update"},
    ("traindeploy.io", "traindeploys/finalizers"): {"update"},
    ("kubeflow.org", "pytorchjobs"): CRUD,
    ("kubeflow.org", "experiments"): CRUD,
    ("kubeflow.org", "trials"): {"delete"},
    ("trainer.kubeflow.org", "trainjobs"): CRUD,
    ("trainer.kubeflow.org", "trainingruntimes"): {"get"},
    ("serving.kserve.io", "inferenceservices"): CRUD,
    ("gateway.networking.k8s.io", "httproutes"): CRUD,
    ("apps", "deployments"): {"get"},
    ("", "pods"): {"list"},
    ("", "secrets"): {"get"},
    ("", "configmaps"): {"get"},
    ("", "events"): {"create"},
}
# The CRD get is limited to trainjobs.trainer.kubeflow.org (a rule of its own, with resourceNames).
DISCOVERY_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch", "get"},
                   ("trainer.kubeflow.org", "clustertrainingruntimes"): {"get"}}
NAMESPACE_RULES = {("", "namespaces"): {"list", "watch"}}
# With leader election (replicas > 1): a Role in the release namespace, for the one Lease.
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "update", "create"}}

RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
FORBIDDEN_IN_LOG = re.compile(r"forbidden|not enough permissions|\bHTTP 403\b|\b403 Forbidden\b|code: 403\b",
                              re.IGNORECASE)


@pytest.fixture(scope="module")
def helm(kube_tools, tmp_path_factory) -> Helm:
    return Helm(kube_tools, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def defaults(helm) -> list[dict]:
    return helm.render()


def _container(objects: list[dict]) -> dict:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(objects: list[dict]) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in _container(objects).get("env", [])}


# -- chart files ---------------------------------------------------------------------------------


def _sync_script():
    spec = importlib.util.spec_from_file_location("sync_chart_crds", REPO_ROOT / "scripts" / "sync_chart_crds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_crds_are_a_byte_for_byte_copy_of_crds():
    sources = sorted(OUR_CRDS.glob("*.yaml"))
    copies = sorted((CHART / "crds-source").glob("*.yaml"))
    assert sources and [p.name for p in copies] == [p.name for p in sources], \
        "run: python3 scripts/sync_chart_crds.py"
    for source, copy in zip(sources, copies):
        assert copy.read_bytes() == source.read_bytes(), f"{copy.name} differs; run: python3 scripts/sync_chart_crds.py"
    assert _sync_script().differences() == []


def test_sync_script_check_mode_reports_and_sync_repairs(tmp_path):
    sync = _sync_script()
    source, target = tmp_path / "crds", tmp_path / "chart" / "crds-source"
    source.mkdir()
    (source / "a.yaml").write_text("kind: A\n")
    (source / "b.yaml").write_text("kind: B\n")
    target.mkdir(parents=True)
    (target / "a.yaml").write_text("kind: old\n")
    (target / "gone.yaml").write_text("kind: Gone\n")
    assert sorted(sync.differences(source, target)) == ["differs: a.yaml", "missing: b.yaml", "stale: gone.yaml"]
    sync.sync(source, target)
    assert sync.differences(source, target) == []
    assert sorted(p.name for p in target.iterdir()) == ["a.yaml", "b.yaml"]
    # The command line's --check agrees with differences() about the real chart.
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "sync_chart_crds.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == (1 if sync.differences() else 0), result.stderr


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0" and chart["appVersion"] == "0.1.0"
    assert chart["kubeVersion"] == ">=1.29.0-0"


@pytest.mark.parametrize("values", [
    {},
    {"watchNamespaces": ["team-a", "team-b"], "crds": {"install": False}, "logFormat": "text",
     "argocd": {"healthChecks": {"enabled": True}}, "serviceAccount": {"create": False, "name": "ops"}},
], ids=["defaults", "namespaced"])
def test_lint_strict(helm, values):
    result = helm.run("lint", "--strict", str(CHART), "-f", str(helm.values_file(values)))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_kube_version_floor(helm):
    too_old = helm.template(extra=("--kube-version", "1.28.9"), check=False)
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr
    helm.template(extra=("--kube-version", "1.29.0"))


def test_values_schema_types_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False

    def walk(value, node, path):
        assert node is not None, f"{path} is not in values.schema.json"
        assert "type" in node or "enum" in node, f"{path} has no type or enum in values.schema.json"
        if isinstance(value, dict) and "properties" in node:
            for key, item in value.items():
                walk(item, node["properties"].get(key), f"{path}.{key}")

    walk(values, schema, "values")


# -- rendering -----------------------------------------------------------------------------------


def test_default_render(defaults):
    kinds = sorted(o["kind"] for o in defaults)
    assert kinds == sorted(["ServiceAccount", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                            "Deployment", "Service"])
    assert not find(defaults, "Role") and not find(defaults, "ConfigMap")


def test_rendered_crd_is_the_source_crd(defaults):
    crd = one(defaults, "CustomResourceDefinition")
    # The chart's copy; that it equals crds/ is test_chart_crds_are_a_byte_for_byte_copy_of_crds.
    source = yaml.safe_load((CHART / "crds-source" / "traindeploy.io_traindeploys.yaml").read_text())
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    rendered = {**crd, "metadata": {k: v for k, v in crd["metadata"].items() if k not in ("labels", "annotations")}}
    assert rendered == source


def test_crds_keep_false_and_install_false(helm):
    crd = one(helm.render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    assert not find(helm.render({"crds": {"install": False}}), "CustomResourceDefinition")


def test_deployment_shape(defaults):
    deployment = one(defaults, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    sa = one(defaults, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] > 60, "longer than the wait for passes in flight (handlers.STOP_TIMEOUT)"
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    container = _container(defaults)
    assert container["image"] == "ghcr.io/traindeploy/traindeploy-operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert container["args"] == ["--liveness=http://0.0.0.0:8080/healthz"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_security_context(defaults):
    pod = one(defaults, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = _container(defaults)["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 65532
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in context and "add" not in context["capabilities"]


def test_probes_hit_the_liveness_endpoint(defaults):
    container = _container(defaults)
    port, metrics = container["ports"]
    assert port["containerPort"] == 8080
    assert metrics == {"name": "metrics", "containerPort": 8081, "protocol": "TCP"}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in (8080, port["name"]), probe
        assert container[probe]["timeoutSeconds"] >= 1
    assert "0.0.0.0:8080/healthz" in container["args"][0]


def test_default_env(defaults):
    assert _env(defaults) == {"TRAINDEPLOY_LOG_LEVEL": "info", "TRAINDEPLOY_LOG_FORMAT": "json",
                              "TRAINDEPLOY_GPU_RESOURCE": "nvidia.com/gpu", "TRAINDEPLOY_HTTP_TIMEOUT": "10",
                              "TRAINDEPLOY_METRICS_PORT": "8081", "TRAINDEPLOY_METRICS_PATH": "/metrics"}


def test_values_reach_the_pod(helm):
    values = {
        "image": {"repository": "registry.example/td/operator", "tag": "dev", "pullPolicy": "Always"},
        "watchNamespaces": ["team-a", "team-b"], "logLevel": "debug", "logFormat": "text",
        "mlflow": {"trackingUri": "http://mlflow.mlflow.svc:5000", "artifactsDestination": "s3://mlflow/artifacts"},
        "kfp": {"endpoint": "http://ml-pipeline.kubeflow.svc:8888", "uiEndpoint": "https://kubeflow.example/pipeline"},
        "gpuResource": "amd.com/gpu", "kserve": {"deploymentMode": "Standard", "gateway": "istio-system/ingress"},
        "prometheus": {"url": "http://prometheus.monitoring.svc:9090"}, "httpTimeoutSeconds": 2.5,
        "extraEnv": [{"name": "TRAINDEPLOY_POLL_INTERVAL", "value": "15"},
                     {"name": "MLFLOW_TRACKING_TOKEN",
                      "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}}}],
        "podAnnotations": {"prometheus.io/scrape": "false"}, "podLabels": {"team": "ml"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "system-cluster-critical", "imagePullSecrets": [{"name": "registry"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "metrics": {"port": 9100, "path": "/internal/metrics"}, "replicas": 3,
        "leaderElection": {"leaseName": "td-leader", "leaseDurationSeconds": 20, "renewDeadlineSeconds": 12,
                           "retryPeriodSeconds": 3},
    }
    objects = helm.render(values)
    env = _env(objects)
    assert env == {
        "TRAINDEPLOY_LOG_LEVEL": "debug", "TRAINDEPLOY_LOG_FORMAT": "text",
        "TRAINDEPLOY_WATCH_NAMESPACES": "team-a,team-b",
        "TRAINDEPLOY_MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc:5000",
        "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow/artifacts",
        "TRAINDEPLOY_KFP_ENDPOINT": "http://ml-pipeline.kubeflow.svc:8888",
        "TRAINDEPLOY_KFP_UI_ENDPOINT": "https://kubeflow.example/pipeline",
        "TRAINDEPLOY_GPU_RESOURCE": "amd.com/gpu", "TRAINDEPLOY_DEPLOYMENT_MODE": "Standard",
        "TRAINDEPLOY_GATEWAY": "istio-system/ingress",
        "TRAINDEPLOY_PROMETHEUS_URL": "http://prometheus.monitoring.svc:9090",
        "TRAINDEPLOY_HTTP_TIMEOUT": "2.5", "TRAINDEPLOY_POLL_INTERVAL": "15", "MLFLOW_TRACKING_TOKEN": None,
        "TRAINDEPLOY_METRICS_PORT": "9100", "TRAINDEPLOY_METRICS_PATH": "/internal/metrics",
        "TRAINDEPLOY_LEADER_ELECTION": "true", "TRAINDEPLOY_LEASE_NAME": "td-leader",
        "TRAINDEPLOY_LEASE_DURATION": "20", "TRAINDEPLOY_RENEW_DEADLINE": "12", "TRAINDEPLOY_RETRY_PERIOD": "3",
        "POD_NAMESPACE": None, "POD_NAME": None,
    }
    # The operator reads exactly these names (the chart and config.py must not drift apart).
    config_source = (REPO_ROOT / "operator" / "traindeploy" / "config.py").read_text()
    for name in env:
        if name.startswith("TRAINDEPLOY_") and name not in ("TRAINDEPLOY_LOG_LEVEL", "TRAINDEPLOY_LOG_FORMAT",
                                                             "TRAINDEPLOY_WATCH_NAMESPACES"):
            assert f'"{name}"' in config_source, name
    from traindeploy import cli

    assert {cli.ENV_LOG_LEVEL, cli.ENV_LOG_FORMAT, cli.ENV_WATCH_NAMESPACES} <= set(env)
    container = _container(objects)
    assert container["image"] == "registry.example/td/operator:dev" and container["imagePullPolicy"] == "Always"
    assert container["resources"] == values["resources"]
    template = one(objects, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"prometheus.io/scrape": "false"}
    assert template["metadata"]["labels"]["team"] == "ml"
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert template["spec"][key] == values[key], key


def test_existing_service_account(helm):
    objects = helm.render({"serviceAccount": {"create": False, "name": "platform-operator"}})
    assert not find(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "platform-operator",
                                    "namespace": "traindeploy-system"}]
    missing = helm.template({"serviceAccount": {"create": False}}, check=False)
    assert missing.returncode != 0 and "serviceAccount.name is required" in missing.stderr


def test_rbac_create_false_renders_no_rbac(helm):
    assert not [o for o in helm.render({"rbac": {"create": False}}) if o["kind"] in RBAC_KINDS]
    assert not [o for o in helm.render({"rbac": {"create": False}, "replicas": 2}) if o["kind"] in RBAC_KINDS]


@pytest.mark.parametrize(("values", "where"), [
    ({"logFormat": "xml"}, "/logFormat"),
    ({"logLevel": "trace"}, "/logLevel"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"kserve": {"deploymentMode": "Serverless"}}, "/kserve/deploymentMode"),
    ({"mlflow": {"trackingUri": "mlflow:5000"}}, "/mlflow/trackingUri"),
    ({"httpTimeoutSeconds": 0}, "/httpTimeoutSeconds"),
    ({"crds": {"install": "yes"}}, "/crds/install"),
    ({"replicas": 0}, "/replicas"),
    ({"metrics": {"path": "metrics"}}, "/metrics/path"),
    ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "/metrics/serviceMonitor/interval"),
    ({"leaderElection": {"leaseDurationSeconds": 0}}, "/leaderElection/leaseDurationSeconds"),
    ({"argocd": {"healthChecks": {"enable": True}}}, "additional properties 'enable'"),
])
def test_schema_rejects_bad_values(helm, values, where):
    result = helm.template(values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr


# -- RBAC ----------------------------------------------------------------------------------------


def test_cluster_wide_rbac(defaults):
    role = one(defaults, "ClusterRole")
    assert rule_table(role["rules"]) == {**DISCOVERY_RULES, **NAMESPACED_RULES}
    crd_get, = [rule for rule in role["rules"] if "customresourcedefinitions" in rule["resources"]
                and "get" in rule["verbs"]]
    assert crd_get["resourceNames"] == ["trainjobs.trainer.kubeflow.org"] and crd_get["verbs"] == ["get"]
    binding = one(defaults, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    sa = one(defaults, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "traindeploy-system"}]


def test_namespaced_rbac(helm):
    objects = helm.render({"watchNamespaces": ["team-a", "team-b"]})
    for namespace in ("team-a", "team-b"):
        role = one(objects, "Role", namespace=namespace)
        assert rule_table(role["rules"]) == NAMESPACED_RULES
        binding = one(objects, "RoleBinding", namespace=namespace)
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"][0]["namespace"] == "traindeploy-system"
    # Only cluster-scoped reads are granted cluster-wide: nothing on the workload kinds.
    cluster_role = one(objects, "ClusterRole")
    assert rule_table(cluster_role["rules"]) == {**DISCOVERY_RULES, **NAMESPACE_RULES}
    assert one(objects, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert not find(objects, "Role", namespace="traindeploy-system")


def test_no_rbac_wildcards(helm):
    for values in ({}, {"watchNamespaces": ["team-a"]}, {"replicas": 2}):
        for role in (o for o in helm.render(values) if o["kind"] in ("ClusterRole", "Role")):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                    assert not any("*" in item for item in rule.get(key, [])), (role["metadata"]["name"], rule)


def test_every_rbac_rule_has_a_comment(helm):
    def uncommented(text: str) -> list[str]:
        lines = [line for line in text.splitlines() if line.strip()]
        return [line for previous, line in zip(lines, lines[1:])
                if re.match(r"\s*- apiGroups:", line) and not previous.strip().startswith("#")]

    sources = sorted((CHART / "templates").glob("*.tpl")) + sorted((CHART / "templates").glob("*.yaml"))
    rules_in_source = 0
    for source in sources:
        text = source.read_text()
        rules_in_source += len(re.findall(r"^\s*- apiGroups:", text, re.MULTILINE))
        assert not uncommented(text), f"{source.name}: rules without a comment above them"
    # The Lease has two rules: get and update limited to its name, create without one; the CRDs two:
    # list and watch of all, get of the TrainJob CRD by name.
    assert rules_in_source == len(NAMESPACED_RULES) - 1 + len(DISCOVERY_RULES) + 1 + len(NAMESPACE_RULES) + 2
    for values in ({}, {"watchNamespaces": ["team-a"]}, {"replicas": 2}):
        assert not uncommented(helm.template(values).stdout)


def test_rbac_covers_every_kind_kopf_watches():
    """kopf needs list and watch on every resource the operator's handlers are registered for."""
    program = ("import json, kopf, traindeploy.handlers; r = kopf.get_default_registry(); "
               "print(json.dumps(sorted({(h.selector.group, h.selector.any_name) for reg in "
               "(r._watching, r._spawning, r._changing, r._indexing) for h in reg.get_all_handlers()})))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator")})
    assert result.returncode == 0, result.stderr
    watched = [tuple(pair) for pair in json.loads(result.stdout)]
    assert ("traindeploy.io", "traindeploys") in watched
    for group, plural in watched:
        assert {"list", "watch"} <= NAMESPACED_RULES.get((group, plural), set()), (group, plural)


# -- Argo CD health checks -----------------------------------------------------------------------


def test_argocd_health_checks_off_by_default(defaults):
    assert not find(defaults, "ConfigMap")


def test_argocd_health_checks_hold_each_script_of_the_chart(helm):
    (config_map,) = find(helm.render({"argocd": {"healthChecks": {"enabled": True}}}), "ConfigMap")
    scripts = {f"resource.customizations.health.{path.stem}": path.read_text()
               for path in sorted((CHART / "argocd").glob("*.lua"))} if (CHART / "argocd").is_dir() else {}
    assert (config_map.get("data") or {}) == scripts


@pytest.fixture
def chart_copy(tmp_path) -> Path:
    """A copy of the chart whose argocd/ folder a test may fill as it likes."""
    copy = tmp_path / "traindeploy-operator"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("argocd"))
    (copy / "argocd").mkdir()
    return copy


def test_argocd_health_checks_with_an_empty_folder(helm, chart_copy):
    objects = helm.render({"argocd": {"healthChecks": {"enabled": True}}}, chart=chart_copy)
    assert one(objects, "ConfigMap").get("data") in ({}, None)


def test_argocd_health_checks_follow_the_file_names(helm, chart_copy):
    scripts = {"traindeploy.io_TrainDeploy.lua": 'hs = {}\nhs.status = "Healthy"\nreturn hs\n',
               "serving.kserve.io_InferenceService.lua": "return {status = \"Progressing\", message = \"a: b\"}\n"}
    for name, text in scripts.items():
        (chart_copy / "argocd" / name).write_text(text)
    (chart_copy / "argocd" / "notes.txt").write_text("not a script")
    (chart_copy / "argocd" / ".traindeploy.io_TrainDeploy.lua.1a2b.tmp").write_text("an editor's temporary file")
    data = one(helm.render({"argocd": {"healthChecks": {"enabled": True}}}, chart=chart_copy), "ConfigMap")["data"]
    assert data == {f"resource.customizations.health.{name.removesuffix('.lua')}": text
                    for name, text in scripts.items()}
    (chart_copy / "argocd" / "health.lua").write_text("return {}\n")
    bad = helm.template({"argocd": {"healthChecks": {"enabled": True}}}, chart=chart_copy, check=False)
    assert bad.returncode != 0 and "<group>_<Kind>.lua" in bad.stderr


# -- on the real control plane -------------------------------------------------------------------


def test_server_side_dry_run_apply(control_plane, namespace, helm):
    """The apiserver validates every rendered object (the CRD's structural schema and CEL costs
    included) without storing anything."""
    for values in ({}, {"watchNamespaces": [namespace], "argocd": {"healthChecks": {"enabled": True}},
                        "serviceAccount": {"name": "traindeploy"}}):
        manifest = helm.template(values, release="dryrun", namespace=namespace).stdout
        result = control_plane.kubectl_run("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                                           "--field-manager=chart-test", "-f", "-", input=manifest, check=False)
        assert result.returncode == 0, result.stderr
        applied = result.stdout.splitlines()
        assert any("customresourcedefinition" in line for line in applied)
        assert any(line.startswith("deployment.apps/") for line in applied)


def _gone(read) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def test_helm_install_and_uninstall(control_plane, api_client, namespace, helm):
    release = f"it-{secrets.token_hex(3)}"
    live = helm.with_cluster(control_plane.kubeconfig)
    # The test control plane already has the CRD (applied by kubectl): take it over, as an
    # upgrade from a kubectl-installed operator would.
    installed = live.run("install", release, str(CHART), "--namespace", namespace, "--take-ownership")
    assert f"rollout status deployment/{release}-traindeploy-operator" in installed.stdout, "NOTES"
    # The first TrainDeploy the NOTES suggest is valid: the apiserver accepts it (dry run).
    example = re.search(r"<<'YAML'\n(.*?)\nYAML\n", installed.stdout, re.DOTALL)[1]
    control_plane.kubectl_run("create", "--dry-run=server", "-n", namespace, "-f", "-", input=example)
    name = f"{release}-traindeploy-operator"
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    rbac, extensions = client.RbacAuthorizationV1Api(api_client), client.ApiextensionsV1Api(api_client)
    reads = {
        "Deployment": lambda: apps.read_namespaced_deployment(name, namespace),
        "ServiceAccount": lambda: core.read_namespaced_service_account(name, namespace),
        "ClusterRole": lambda: rbac.read_cluster_role(name),
        "ClusterRoleBinding": lambda: rbac.read_cluster_role_binding(name),
    }
    try:
        deployment = reads["Deployment"]()
        assert deployment.spec.strategy.type == "Recreate"
        assert deployment.spec.template.spec.service_account_name == name
        assert reads["ServiceAccount"]().metadata.labels["app.kubernetes.io/instance"] == release
        assert {rule.api_groups[0] for rule in reads["ClusterRole"]().rules} >= {"traindeploy.io", "kubeflow.org"}
        assert reads["ClusterRoleBinding"]().subjects[0].namespace == namespace
        crd = extensions.read_custom_resource_definition("traindeploys.traindeploy.io")
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
        assert crd.metadata.annotations["meta.helm.sh/release-name"] == release
        status = json.loads(live.run("status", release, "--namespace", namespace, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
    finally:
        uninstalled = live.run("uninstall", release, "--namespace", namespace, check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert "kept due to the resource policy" in uninstalled.stdout
    for kind, read in reads.items():
        wait_for(lambda: _gone(read), timeout=30, what=f"{kind} {name} to be deleted")
    crd = extensions.read_custom_resource_definition("traindeploys.traindeploy.io")
    assert crd.metadata.deletion_timestamp is None
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)


# -- the RBAC proof ------------------------------------------------------------------------------


def _service_account_kubeconfig(control_plane, api_client, namespace: str, service_account: str,
                                path: Path) -> Path:
    """A kubeconfig for the ServiceAccount, with a token from the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                  expiration_seconds=3600))
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        service_account, namespace, request).status.token
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "test", "cluster": {"server": control_plane.server,
                                                  "certificate-authority": str(control_plane.ca_file)}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": service_account,
                                                      "namespace": namespace}}],
    }))
    path.chmod(0o600)
    return path


def _can_i(kubectl: Path, kubeconfig: Path, namespace: str, verb: str, resource: str) -> bool:
    result = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource,
                             "-n", namespace], capture_output=True, text=True, timeout=60)
    return result.stdout.strip() == "yes"


def test_operator_reaches_ready_with_only_the_chart_rbac(control_plane, api_client, namespace, helm, kube_tools,
                                                         mlflow_server, tmp_path):
    release = f"proof-{secrets.token_hex(3)}"
    name = f"{release}-traindeploy-operator"
    # Two replicas: the Lease Role is rendered too, and the operator below runs with election on.
    rendered = helm.template({"watchNamespaces": [namespace], "crds": {"install": False}, "replicas": 2},
                             release=release,
                             namespace=namespace,
                             show_only=("templates/serviceaccount.yaml", "templates/rbac.yaml")).stdout
    control_plane.kubectl_run("apply", "-f", "-", input=rendered)
    try:
        kubeconfig = _service_account_kubeconfig(control_plane, api_client, namespace, name, tmp_path / "kubeconfig")
        whoami = subprocess.run([str(kube_tools / "kubectl"), f"--kubeconfig={kubeconfig}", "auth", "whoami",
                                 "-o", "json"], capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == \
            f"system:serviceaccount:{namespace}:{name}"
        kubectl = kube_tools / "kubectl"
        # The identity is exactly the chart's: what it needs, and nothing it does not.
        assert _can_i(kubectl, kubeconfig, namespace, "patch", "traindeploys.traindeploy.io/status")
        assert _can_i(kubectl, kubeconfig, namespace, "get", "secrets")
        assert not _can_i(kubectl, kubeconfig, namespace, "list", "secrets")
        assert not _can_i(kubectl, kubeconfig, namespace, "create", "pods")
        assert not _can_i(kubectl, kubeconfig, namespace, "create", "traindeploys.traindeploy.io")
        assert not _can_i(kubectl, kubeconfig, "default", "list", "traindeploys.traindeploy.io")
        assert _can_i(kubectl, kubeconfig, namespace, "update", "leases.coordination.k8s.io/traindeploy-operator")
        assert not _can_i(kubectl, kubeconfig, namespace, "update", "leases.coordination.k8s.io/someone-else")

        settings = {"TRAINDEPLOY_MLFLOW_TRACKING_URI": mlflow_server.url,
                    "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": mlflow_server.artifacts_dir.as_uri(),
                    "TRAINDEPLOY_LEADER_ELECTION": "true", "POD_NAMESPACE": namespace}
        operator = OperatorProcess(namespace, kubeconfig, tmp_path, settings).start()
        wait_for(operator.scrape, lambda samples: samples.get(("traindeploy_leader", ())) == 1, timeout=30,
                 what="the operator to take the Lease with the chart's RBAC")
        try:
            _drive_to_ready_and_delete(api_client, namespace, mlflow_server)
        finally:
            operator.stop()
        log = operator.logfile.read_text(errors="replace")
        denied = [line for line in log.splitlines() if FORBIDDEN_IN_LOG.search(line)]
        assert not denied, "the operator was refused:\n" + "\n".join(denied[:20])
    finally:
        control_plane.kubectl_run("delete", "clusterrole,clusterrolebinding", f"{name}-discovery",
                                  "--ignore-not-found", check=False)


def _phase(phase: str):
    return lambda td: td.get("status", {}).get("phase") == phase


def _drive_to_ready_and_delete(api_client, namespace: str, mlflow_server) -> None:
    """The minimal path of tests/e2e/test_lifecycle.py, the tests playing the controllers and the
    trainer; then the TrainDeploy is deleted and its finalizer must come off."""
    players = Players(api_client, namespace)
    custom = client.CustomObjectsApi(api_client)
    model_name = f"model-{secrets.token_hex(4)}"
    custom.create_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace, "traindeploys",
                                           manifests.minimal("churn", model_name))
    job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    players.wait_td("churn", _phase("Training"))
    train_into_run(job, {"accuracy": 0.91})
    players.pytorchjob("churn-g1-train", "Succeeded")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.wait_td("churn", _phase("Deploying"))
    players.inferenceservice("churn", ready=True)
    td = players.wait_td("churn", _phase("Ready"))
    ready = next(c for c in td["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert td["metadata"]["finalizers"] == ["traindeploy.io/finalizer"]
    # The operator's Events were posted (events: create).
    wait_for(lambda: {e.reason for e in client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=churn").items},
        lambda reasons: {"TrainingSucceeded", "Ready"} <= reasons, timeout=30, what="the operator's Events")
    # Deletion: kopf stops the loop and patches its finalizer off (traindeploys: patch).
    custom.delete_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn")
    wait_for(lambda: _gone(lambda: players.td("churn")), timeout=60, what="the TrainDeploy to be deleted")
