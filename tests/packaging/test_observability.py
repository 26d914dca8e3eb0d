"""The chart's monitoring and high-availability objects: the metrics Service and ServiceMonitor,
the PrometheusRule (checked with promtool when it is installed), the Grafana dashboard, the
replicas with their Lease RBAC and PodDisruptionBudget. Every metric a dashboard panel or an
alert queries must be one the operator exports (traindeploy.metrics), with the suffix
Prometheus gives it (_total, _bucket, _count, _sum)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from harness import debian

from packaging_helm import CHART, Helm, find, one, rule_table
from traindeploy import metrics

DASHBOARD = CHART / "dashboards" / "traindeploy.json"
ALERTS = {"TrainDeployCycleFailed", "TrainDeployCanaryRolledBack", "TrainDeployStageStuck",
          "TrainDeployDependencyUnavailable", "TrainDeployOperatorNoLeader", "TrainDeployOperatorTwoLeaders"}
MONITORING = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                          "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}}

# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
             "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers, range
    selectors, grouping lists and strings, that are neither functions nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


@pytest.mark.parametrize(("expr", "want"), [
    ('sum by (stage) (increase(traindeploy_stage_transitions_total{outcome="failed"}[10m])) > 0',
     {"traindeploy_stage_transitions_total"}),
    ('histogram_quantile(0.95, sum by (le, x) (rate(a_bucket{l=~"b|c"}[$__rate_interval])))', {"a_bucket"}),
    ("sum(x) < 1 or absent(y)", {"x", "y"}),
    ('a / on (d) group_left b unless on () (sum(c[5m]) > 0.5)', {"a", "b", "c"}),
    ('up{job="traindeploy_fake_total"}', {"up"}),
])
def test_metric_names_of_promql(expr, want):
    assert metric_names(expr) == want


@pytest.fixture(scope="module")
def helm(kube_tools, tmp_path_factory) -> Helm:
    return Helm(kube_tools, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def monitoring(helm) -> list[dict]:
    return helm.render(MONITORING)


def _dashboard_queries(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_queries_name_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _dashboard_queries(dashboard)
    assert len(queries) >= 12
    exported = metrics.exported_names()
    used = set()
    for query in queries:
        names = metric_names(query)
        assert names, query
        assert names <= exported, f"{sorted(names - exported)} in {query!r} are not exported by the operator"
        used |= names
    # What the issue asks the dashboard for: success rates, stage durations, canary results,
    # apply-to-Ready time; and the operator's own health.
    assert {"traindeploy_stage_transitions_total", "traindeploy_stage_duration_seconds_bucket",
            "traindeploy_canary_outcomes_total", "traindeploy_cycle_duration_seconds_bucket",
            "traindeploy_traindeploys", "traindeploy_dependency_request_duration_seconds_count",
            "traindeploy_leader"} <= used
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_a_misspelt_metric_would_be_caught():
    assert not metric_names("rate(traindeploy_reconcile_totals[5m])") <= metrics.exported_names()


def _rule_groups(objects: list[dict]) -> list[dict]:
    return one(objects, "PrometheusRule")["spec"]["groups"]


def test_alerts_query_only_exported_metrics(monitoring):
    rules = [rule for group in _rule_groups(monitoring) for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERTS
    exported = metrics.exported_names()
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= exported, (rule["alert"], sorted(names - exported))
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_alert_thresholds_come_from_values(helm):
    objects = helm.render({"metrics": {"prometheusRule": {"enabled": True, "stuckStageMinutes": 30,
                                                          "dependencyUnavailableMinutes": 5}}})
    rules = {rule["alert"]: rule for group in _rule_groups(objects) for rule in group["rules"]}
    assert "[30m]" in rules["TrainDeployStageStuck"]["expr"]
    assert rules["TrainDeployDependencyUnavailable"]["for"] == "5m"


def test_promtool_accepts_the_rules(monitoring, tmp_path):
    promtool = str(debian.tool("promtool"))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _rule_groups(monitoring)}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_fires_the_dependency_alert_after_its_threshold(monitoring, tmp_path):
    """promtool's rule unit test: MLflow unavailable for every request; the alert is pending
    until the threshold (15 minutes by default), then fires."""
    promtool = str(debian.tool("promtool"))
    groups = _rule_groups(monitoring)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    rule = next(r for g in groups for r in g["rules"] if r["alert"] == "TrainDeployDependencyUnavailable")
    annotations = {key: text.replace("{{ $labels.dependency }}", "mlflow")
                   for key, text in rule["annotations"].items()}
    series = ('traindeploy_dependency_request_duration_seconds_count{dependency="mlflow",'
              'result="unavailable"}')
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [{"series": series, "values": "0+10x40"},
                                    {"series": "traindeploy_leader", "values": "1x40"}],
                   "alert_rule_test": [
                       {"eval_time": "10m", "alertname": "TrainDeployDependencyUnavailable", "exp_alerts": []},
                       {"eval_time": "25m", "alertname": "TrainDeployDependencyUnavailable",
                        "exp_alerts": [{"exp_labels": {"severity": "critical", "dependency": "mlflow"},
                                        "exp_annotations": annotations}]},
                       {"eval_time": "25m", "alertname": "TrainDeployOperatorNoLeader", "exp_alerts": []}]}]}))
    result = subprocess.run([promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_monitoring_objects_are_off_by_default(helm):
    objects = helm.render()
    assert not find(objects, "ServiceMonitor") and not find(objects, "PrometheusRule")
    assert not find(objects, "ConfigMap") and not find(objects, "PodDisruptionBudget")


def test_service_monitor_scrapes_the_metrics_port(monitoring):
    service = one(monitoring, "Service")
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics" and port["port"] == 8081
    container = one(monitoring, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    pod_labels = one(monitoring, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(monitoring, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]


def test_metrics_off_renders_no_service(helm):
    objects = helm.render({"metrics": {"enabled": False}})
    assert not find(objects, "Service")
    env = {e["name"]: e.get("value") for e in one(objects, "Deployment")["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["TRAINDEPLOY_METRICS_PORT"] == "0"


def test_dashboard_config_map_holds_the_dashboard(monitoring):
    config_map = one(monitoring, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["traindeploy.json"]) == json.loads(DASHBOARD.read_text())


def test_replicas_elect_a_leader_with_lease_rbac_and_a_disruption_budget(helm):
    objects = helm.render({"replicas": 2})
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRAINDEPLOY_LEADER_ELECTION"]["value"] == "true"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    role = one(objects, "Role", namespace="traindeploy-system")
    assert rule_table(role["rules"]) == {("coordination.k8s.io", "leases"): {"get", "update", "create"}}
    named = [rule for rule in role["rules"] if "update" in rule["verbs"]]
    assert [rule["resourceNames"] for rule in named] == [["traindeploy-operator"]]
    binding = one(objects, "RoleBinding", namespace="traindeploy-system")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    # One replica: no election, no Role, no budget, and Recreate as before.
    single = helm.render()
    assert "TRAINDEPLOY_LEADER_ELECTION" not in {e["name"] for e in one(single, "Deployment")["spec"]["template"]
                                                 ["spec"]["containers"][0]["env"]}
    assert not find(single, "Role") and not find(single, "PodDisruptionBudget")


def test_lease_timings_in_values_are_safe():
    """The chart's defaults satisfy the elector's own check (renew deadline + retry < duration)."""
    from traindeploy import leader

    values = yaml.safe_load((CHART / "values.yaml").read_text())["leaderElection"]
    leader.check_timings(values["leaseDurationSeconds"], values["renewDeadlineSeconds"], values["retryPeriodSeconds"])
    with pytest.raises(ValueError):
        leader.check_timings(10, 9, 2)
