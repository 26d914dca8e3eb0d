"""Fixtures for the KFP client and its test double: no control plane, everything on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.kfp_fake import KfpFake
from traindeploy.kfp import KfpClient, load_pipeline_package

DATA = Path(__file__).parent / "data"


@pytest.fixture
def kfp_fake():
    with KfpFake() as fake:
        yield fake


@pytest.fixture
def kfp_client(kfp_fake):
    client = KfpClient(kfp_fake.url, timeout=5.0)
    # Keep retry sleeps short in tests; the policy (3 GET attempts, doubling backoff) is unchanged.
    client.BACKOFF_SECONDS = 0.01
    yield client
    client.close()


@pytest.fixture(scope="session")
def pipeline_yaml() -> str:
    return (DATA / "prep_pipeline.yaml").read_text()


@pytest.fixture(scope="session")
def pipeline_platform_yaml() -> str:
    return (DATA / "prep_pipeline_platform.yaml").read_text()


@pytest.fixture
def pipeline_spec(pipeline_yaml) -> dict:
    return load_pipeline_package(pipeline_yaml)


