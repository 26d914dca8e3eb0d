"""What a status write tells the metrics, read from the status before and after: table-driven."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request

import pytest

from traindeploy import conditions as cond
from traindeploy import metrics, telemetry
from traindeploy.telemetry import Observation

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:40Z", "2026-01-01T00:05:00Z"
NOW = dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.timezone.utc)


def c(condition_type: str, status: str, at: str, reason: str = "R") -> dict:
    return {"type": condition_type, "status": status, "reason": reason, "message": "", "lastTransitionTime": at,
            "observedGeneration": 1}


def st(*conditions, phase: str = "Training", **extra) -> dict:
    return {"phase": phase, "conditions": list(conditions), **extra}


CYCLE = {"startedAt": T0, "trigger": "spec", "label": "g1", "generation": 1}

CASES = [
    ("a stage starts", st(), st(c(cond.TRAINING, cond.UNKNOWN, T0)),
     [Observation("stage", ("training", "started"), None)]),
    ("a stage goes on: nothing", st(c(cond.TRAINING, cond.UNKNOWN, T0)),
     st(c(cond.TRAINING, cond.UNKNOWN, T0, reason="Other")), []),
    ("a stage succeeds after 100s", st(c(cond.TRAINING, cond.UNKNOWN, T0)), st(c(cond.TRAINING, cond.TRUE, T1)),
     [Observation("stage", ("training", "succeeded"), 100.0)]),
    ("a stage fails", st(c(cond.TRAINING, cond.UNKNOWN, T0)), st(c(cond.TRAINING, cond.FALSE, T2)),
     [Observation("stage", ("training", "failed"), 300.0)]),
    ("started and done in one pass", st(), st(c(cond.GATE, cond.TRUE, T1)),
     [Observation("stage", ("gate", "started"), None), Observation("stage", ("gate", "succeeded"), 0.0)]),
    ("a rolled-back canary fails deploying though ServingReady is True",
     st(c(cond.SERVING, cond.UNKNOWN, T0), phase="Canary"),
     st(c(cond.SERVING, cond.TRUE, T1), phase="Failed", failedStage="deploying"),
     [Observation("stage", ("deploying", "failed"), 100.0)]),
    ("a cycle ends Ready", st(c(cond.SERVING, cond.UNKNOWN, T0), c(cond.READY, cond.FALSE, T0), phase="Deploying",
                              cycle=CYCLE),
     st(c(cond.SERVING, cond.TRUE, T2), c(cond.READY, cond.TRUE, T2), phase="Ready", cycle=CYCLE),
     [Observation("stage", ("deploying", "succeeded"), 300.0), Observation("cycle", ("ready", "spec"), 300.0)]),
    ("a serving-only change after the cycle is not a cycle",
     st(c(cond.READY, cond.FALSE, T1), phase="Deploying", cycle=CYCLE),
     st(c(cond.READY, cond.TRUE, T2), phase="Ready", cycle=CYCLE), []),
    ("a retrain cycle's trigger is named without its token",
     st(c(cond.READY, cond.FALSE, T0), phase="Deploying", cycle={**CYCLE, "trigger": "annotation:abc"}),
     st(c(cond.READY, cond.FALSE, T1), phase="Failed", cycle={**CYCLE, "trigger": "annotation:abc"}),
     [Observation("cycle", ("failed", "annotation"), 100.0)]),
    ("a canary step advances",
     st(phase="Canary", rollout={"version": "2", "state": "Progressing", "step": 0, "stepStartedAt": T2}),
     st(phase="Canary", rollout={"version": "2", "state": "Progressing", "step": 1, "stepStartedAt": T2}),
     [Observation("canary_step", ("advanced",), 300.0)]),
    ("the last step promotes",
     st(phase="Canary", rollout={"version": "2", "state": "Progressing", "step": 1, "stepStartedAt": T2}),
     st(phase="Canary", rollout={"version": "2", "state": "Promoted", "step": 1}),
     [Observation("canary_step", ("promoted",), 300.0)]),
    ("the same step goes on: nothing",
     st(phase="Canary", rollout={"version": "2", "state": "Progressing", "step": 1, "stepStartedAt": T2}),
     st(phase="Canary", rollout={"version": "2", "state": "Progressing", "step": 1, "stepStartedAt": T2}), []),
]


@pytest.mark.parametrize("old, new, want", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_observations(old, new, want):
    assert telemetry.observations(old, new, NOW) == want


def test_every_metric_name_is_exported_with_its_suffixes():
    names = metrics.exported_names()
    assert {"traindeploy_reconcile_total", "traindeploy_stage_duration_seconds_bucket",
            "traindeploy_stage_duration_seconds_count", "traindeploy_traindeploys",
            "traindeploy_dependency_request_duration_seconds_count", "traindeploy_leader",
            "traindeploy_backoffs_in_progress", "traindeploy_canary_outcomes_total"} <= names
    assert "traindeploy_reconcile" not in names  # a counter is exported as _total


def test_the_endpoint_serves_only_its_path():
    server = metrics.serve("127.0.0.1", 0, "/custom/metrics")
    try:
        port = server.server_address[1]
        metrics.DEPENDENCY_REQUESTS.labels("kubernetes", "ok").observe(0.01)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/custom/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'traindeploy_dependency_request_duration_seconds_count{dependency="kubernetes",result="ok"}' in text
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_error_classes_become_snake_case_labels():
    assert metrics.snake("NotFound") == "not_found"
    assert metrics.snake("KubeUnavailable") == "kube_unavailable"
    assert metrics.snake("KindNotServed") == "kind_not_served"
