"""The metrics, leader-election and concurrency settings as the environment gives them."""

from __future__ import annotations

from traindeploy.config import OperatorConfig


def test_defaults():
    config = OperatorConfig.from_env({})
    assert (config.metrics_address, config.metrics_port, config.metrics_path) == ("0.0.0.0", 8081, "/metrics")
    assert config.leader_election is False and config.lease_name == "traindeploy-operator"
    assert config.lease_namespace is None
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15.0, 10.0, 2.0)


def test_from_the_environment():
    config = OperatorConfig.from_env({
        "TRAINDEPLOY_METRICS_PORT": "9100", "TRAINDEPLOY_METRICS_PATH": "internal/metrics",
        "TRAINDEPLOY_LEADER_ELECTION": "True", "POD_NAMESPACE": "ops", "TRAINDEPLOY_LEASE_DURATION": "20"})
    assert config.metrics_port == 9100 and config.metrics_path == "/internal/metrics"
    assert config.leader_election is True and config.lease_namespace == "ops" and config.lease_duration == 20.0
    assert OperatorConfig.from_env({"TRAINDEPLOY_LEADER_ELECTION": "false"}).leader_election is False
    assert OperatorConfig.from_env({"TRAINDEPLOY_METRICS_PORT": "0"}).metrics_port == 0
    assert OperatorConfig.from_env({"POD_NAMESPACE": "a", "TRAINDEPLOY_LEASE_NAMESPACE": "b"}).lease_namespace == "b"


def test_reconcile_workers():
    assert OperatorConfig.from_env({}).reconcile_workers == 8
    assert OperatorConfig.from_env({"TRAINDEPLOY_RECONCILE_WORKERS": "16"}).reconcile_workers == 16
    assert OperatorConfig.from_env({"TRAINDEPLOY_RECONCILE_WORKERS": "0"}).reconcile_workers == 1
