"""The operator's /metrics endpoint, scraped during a real lifecycle: a first version through every
stage with a KFP pipeline, then a retrain whose version goes through a Knative canary to promotion.
The counts must match what happened, no more (nothing counted twice) and no less."""

from __future__ import annotations

from e2e import manifests
from e2e.kserve_player import KnativePlayer
from e2e.players import wait_for
from e2e.test_canary import annotate, canary_td, train
from e2e.test_full_path import pipeline_config_map
from e2e.test_lifecycle import _phase, create
from harness.kfp_fake import KfpFake


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: dict, name: str) -> dict[tuple, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def finish_pipeline_run(kfp: KfpFake, done: set[str]) -> None:
    run = wait_for(lambda: next((r for r in kfp.runs.values() if r["run_id"] not in done), None),
                   timeout=60, what="a new KFP run")
    kfp.set_run_state(run["run_id"], "SUCCEEDED")
    done.add(run["run_id"])


def test_a_lifecycle_is_counted_on_the_metrics_endpoint(api_client, namespace, players, operator, model_name,
                                                         kfp: KfpFake):
    pipeline_config_map(api_client, namespace)
    body = canary_td(model_name, "Knative")
    body["spec"]["pipeline"] = manifests.full("churn", model_name, kfp.url)["spec"]["pipeline"]
    runs: set[str] = set()
    with KnativePlayer(api_client, namespace, "churn"):
        create(api_client, namespace, body)
        players.wait_td("churn", lambda td: (td.get("status", {}).get("pipeline") or {}).get("runId"))
        # The gauge is set once the status write has returned, a moment after the watch shows it.
        during = wait_for(operator.scrape, lambda s: series(s, "traindeploy_traindeploys"), timeout=10,
                          what="the phase gauge")
        assert series(during, "traindeploy_traindeploys") == {(("phase", "PipelineRunning"),): 1.0}
        assert value(during, "traindeploy_stage_transitions_total", stage="pipeline", outcome="started") == 1
        assert value(during, "traindeploy_stage_duration_seconds_count", stage="pipeline", outcome="succeeded") == 0
        assert value(during, "traindeploy_leader") == 1
        finish_pipeline_run(kfp, runs)
        train(players, "churn-g1-train")
        players.wait_td("churn", _phase("Ready"), timeout=60, what="version 1 serving")
        first = operator.scrape()
        assert value(first, "traindeploy_cycle_duration_seconds_count", outcome="ready", trigger="spec") == 1

        annotate(api_client, namespace, "churn", "traindeploy.io/retrain", "metrics-retrain")
        finish_pipeline_run(kfp, runs)
        train(players, "churn-g1r1-train")
        players.wait_td("churn", lambda td: (td["status"].get("rollout") or {}).get("state") == "Promoted"
                        and td["status"]["phase"] == "Ready", timeout=90, what="version 2 promoted")

    samples = wait_for(operator.scrape, lambda s: value(s, "traindeploy_canary_outcomes_total",
                                                        outcome="promoted", reason="Promoted") == 1,
                       timeout=10, what="the promotion counted")
    for stage in ("pipeline", "training", "gate", "registering"):
        assert value(samples, "traindeploy_stage_transitions_total", stage=stage, outcome="started") == 2, stage
        assert value(samples, "traindeploy_stage_transitions_total", stage=stage, outcome="succeeded") == 2, stage
        assert value(samples, "traindeploy_stage_duration_seconds_count", stage=stage, outcome="succeeded") == 2
        assert value(samples, "traindeploy_stage_transitions_total", stage=stage, outcome="failed") == 0
    # Serving: the first rollout, then the canary of version 2 (ServingReady Unknown until promoted).
    deploying = value(samples, "traindeploy_stage_transitions_total", stage="deploying", outcome="succeeded")
    assert deploying == value(samples, "traindeploy_stage_transitions_total", stage="deploying", outcome="started")
    assert deploying == 2
    assert "tuning" not in {dict(labels).get("stage") for labels in series(samples, "traindeploy_stage_transitions_total")}
    assert value(samples, "traindeploy_cycle_duration_seconds_count", outcome="ready", trigger="spec") == 1
    assert value(samples, "traindeploy_cycle_duration_seconds_count", outcome="ready", trigger="annotation") == 1
    assert value(samples, "traindeploy_canary_step_duration_seconds_count", outcome="advanced") == 1  # 10% -> 50%
    assert value(samples, "traindeploy_canary_step_duration_seconds_count", outcome="promoted") == 1  # 50% -> all
    # Each step held its weight at least the interval (2s).
    assert value(samples, "traindeploy_canary_step_duration_seconds_sum", outcome="advanced") >= 1.9
    assert series(samples, "traindeploy_canary_outcomes_total") == {
        (("outcome", "promoted"), ("reason", "Promoted")): 1.0}
    assert series(samples, "traindeploy_traindeploys") == {(("phase", "Ready"),): 1.0}

    passes = series(samples, "traindeploy_reconcile_total")
    assert passes.get((("result", "ok"),), 0) >= 10
    assert passes.get((("result", "error"),), 0) == 0
    assert value(samples, "traindeploy_reconcile_duration_seconds_count", result="ok") == passes[(("result", "ok"),)]
    assert value(samples, "traindeploy_backoffs_in_progress") == 0
    # Requests to each dependency, by result: the status writes and children, the MLflow run and
    # registration, the KFP submission and polls.
    for dependency in ("kubernetes", "mlflow", "kfp"):
        assert value(samples, "traindeploy_dependency_request_duration_seconds_count",
                     dependency=dependency, result="ok") > 0, dependency
    assert value(samples, "traindeploy_dependency_request_duration_seconds_count",
                 dependency="kfp", result="unavailable") == 0
    # Two cycles: two KFP runs submitted, nothing more.
    assert len(kfp.runs) == 2
    # What the dashboards and alerts are checked against (traindeploy.metrics.exported_names) is
    # what the endpoint really serves.
    from traindeploy import metrics

    served = {name for name, _ in samples if name.startswith("traindeploy_")}
    assert served <= metrics.exported_names(), served - metrics.exported_names()
    # Bounded labels: nothing names the object, its namespace or a run.
    for (name, labels) in samples:
        if name.startswith("traindeploy_"):
            assert not any(namespace in v or "churn" in v or model_name in v for _, v in labels), (name, labels)
