"""Pure pieces: filter quoting and wire-shape normalisation (no server)."""

from __future__ import annotations

import math

import pytest

from traindeploy.mlflow_rest import (
    _filter, _latest_metrics, _logged_model, _model_version, _quote_key, _quote_value,
    mlflow_artifacts_to_storage,
)


@pytest.mark.parametrize("value, want", [
    ("abc", "'abc'"),
    ("it's", '"it\'s"'),
    ('say "x"', "'say \"x\"'"),
    ("it's \"x\"", None),
    ("a\\b", "'a\\b'"),
    ("ab\\", None),
    ("", "''"),
])
def test_quote_value(value, want):
    assert _quote_value(value) == want


@pytest.mark.parametrize("key, want", [
    ("accuracy", "accuracy"),
    ("traindeploy.io/uid", "`traindeploy.io/uid`"),
    ("with space", "`with space`"),
    ("back`tick", None),
])
def test_quote_key(key, want):
    assert _quote_key(key) == want


def test_filter_leaves_out_what_cannot_be_written():
    written = _filter({"name": "m"}, {"a.b": "1", "c`d": "2", "e": "it's \"x\""})
    assert written == "name = 'm' AND tags.`a.b` = '1'"
    assert _filter({}, {}) == ""


def test_latest_metrics_reads_protobuf_json_numbers():
    metrics = _latest_metrics([
        {"key": "acc", "value": 0.5, "timestamp": 1, "step": 0},
        {"key": "acc", "value": 0.9, "timestamp": 2, "step": 1},
        {"key": "nan", "value": "NaN", "timestamp": 1, "step": 0},
        {"key": "inf", "value": "-Infinity", "timestamp": 1},
    ])
    assert metrics["acc"] == 0.9 and math.isnan(metrics["nan"]) and metrics["inf"] == -math.inf


def test_logged_model_status_and_location_names():
    model = _logged_model({"info": {"model_id": "m-1", "status": "LOGGED_MODEL_UPLOAD_FAILED",
                                    "artifact_uri": "s3://b/1/models/m-1/artifacts"}})
    assert model["status"] == "FAILED"
    assert model["artifact_location"] == "s3://b/1/models/m-1/artifacts"


@pytest.mark.parametrize("source, model_id", [
    ("models:/m-abc", "m-abc"),
    ("models:/name/3", None),
    ("models:/m-name@champion", None),
    ("mlflow-artifacts:/1/models/m-abc/artifacts", None),
])
def test_model_id_recovered_from_source(source, model_id):
    assert _model_version({"name": "n", "version": "1", "source": source})["model_id"] == model_id


@pytest.mark.parametrize("uri, want", [
    ("mlflow-artifacts:/1/models/m-1/artifacts", "s3://bucket/mlartifacts/1/models/m-1/artifacts"),
    ("s3://other/x", "s3://other/x"),
])
def test_mlflow_artifacts_to_storage(uri, want):
    assert mlflow_artifacts_to_storage(uri, "s3://bucket/mlartifacts/") == want
