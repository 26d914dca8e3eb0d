"""Fixtures for end-to-end tests of the operator on the real control plane and MLflow."""

from __future__ import annotations

import secrets

import pytest

from e2e.operator_process import OperatorProcess
from harness.kfp_fake import KfpFake
from e2e.players import Players


@pytest.fixture
def players(api_client, namespace) -> Players:
    return Players(api_client, namespace)


@pytest.fixture
def operator_settings(mlflow_server) -> dict[str, str]:
    """Operator configuration for a test; tests may add to it before starting the operator."""
    return {"TRAINDEPLOY_MLFLOW_TRACKING_URI": mlflow_server.url,
            "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": mlflow_server.artifacts_dir.as_uri()}


@pytest.fixture
def operator(control_plane, namespace, operator_settings, tmp_path, request):
    """The operator, started for this test's namespace; its log is printed when a test fails."""
    process = OperatorProcess(namespace, control_plane.kubeconfig, tmp_path, operator_settings).start()
    yield process
    process.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- operator log ({process.logfile}) ---\n{process.log_tail(200)}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def model_name() -> str:
    """Registered model names are global on the shared MLflow server."""
    return f"model-{secrets.token_hex(4)}"


@pytest.fixture
def kfp():
    """The KFP API test double (the KFP backend cannot run here)."""
    with KfpFake() as fake:
        yield fake
