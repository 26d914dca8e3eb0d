"""The trainer tier runs examples/ code in venvs of its own (tests/harness/trainer_env.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import trainer_env


@pytest.fixture(scope="session")
def trainer_python() -> Path:
    """Python with torch and the MLflow client; the first use installs them (minutes, GBs)."""
    return trainer_env.trainer_python()


@pytest.fixture(scope="session")
def pipelines_python() -> Path:
    """Python with the KFP SDK."""
    return trainer_env.pipelines_python()
