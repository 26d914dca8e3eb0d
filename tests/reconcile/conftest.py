"""The reconciler, pass by pass (`reconcile()` called directly), on the real control plane and the
real MLflow: no operator process, so each pass is exactly one call."""

from __future__ import annotations

import secrets

import pytest


@pytest.fixture
def model_name() -> str:
    return f"churn-{secrets.token_hex(4)}"
