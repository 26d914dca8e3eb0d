"""Starting a training cycle, and stopping the one it supersedes.

A cycle starts on a training-relevant spec change, a retrain annotation or the cron schedule
(`triggers.decide`, pure). A spec change supersedes a running cycle: its job and Experiment are
deleted (they hold GPUs), its KFP run terminated, its MLflow run ended KILLED, and a rollout in
progress sends traffic back to the stable version. Deleting the TrainDeploy stops the same
outside work; Kubernetes children go with their owner.
"""

from __future__ import annotations

import logging

from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy import triggers
from traindeploy.context import Pass
from traindeploy.results import Problem
from traindeploy.serving import rollback
from traindeploy.serving.state import Serving
from traindeploy.stages import pipeline, training, tuning

log = logging.getLogger(__name__)

# What a new cycle keeps: serving goes on, the rest is the old cycle's.
KEPT_CONDITIONS = (cond.SERVING, cond.READY)
KEPT_CHILD_KINDS = ("InferenceService", "HTTPRoute")


def start_if_needed(p: Pass) -> float | None:
    """Starts a cycle when one is due; returns the seconds until the schedule fires next."""
    decision = triggers.decide(p.spec, p.meta.get("annotations") or {}, p.status, p.now_dt)
    if decision.retrain:
        p.status["retrain"] = decision.retrain
    if decision.start is None:
        return decision.next_check
    previous = p.status.get("cycle") or {}
    if decision.supersede:
        supersede(p)
    generation = p.meta.get("generation", 1)
    retrain = 0
    if decision.start != "spec":
        retrain = previous.get("retrain", 0) + 1 if previous.get("generation") == generation else 1
    p.status["cycle"] = triggers.cycle_record(generation, retrain, lc.training_spec_hash(p.spec), p.now,
                                              decision.start, (p.status.get("retrain") or {}).get("lastToken"))
    label = p.status["cycle"]["label"]
    for key in lc.CYCLE_STATUS_KEYS:
        p.status.pop(key, None)
    p.status["conditions"] = [c for c in p.status.get("conditions", []) if c["type"] in KEPT_CONDITIONS]
    p.status["children"] = [c for c in p.status.get("children", []) if c.get("kind") in KEPT_CHILD_KINDS]
    why = {"spec": f"generation {generation}"}.get(decision.start, decision.start)
    p.event("Normal", "CycleStarted", f"Started training cycle {label} ({why}).")
    return decision.next_check


def supersede(p: Pass) -> None:
    """Stops the running cycle. Each step is tried; one that cannot be done now (an outage) is
    reported as a Warning Event and does not keep the new cycle from starting."""
    steps = [lambda: training.stop(p, p.status.get("training") or {}),
             lambda: tuning.stop(p, p.status.get("tuning") or {}),
             lambda: stop_outside_work(p)]
    if p.spec.get("serving") and (p.status.get("serving") or {}).get("modelVersion"):
        steps.insert(0, lambda: rollback.abort_in_progress(Serving.of(p), "A newer spec superseded this rollout."))
    for step in steps:
        try:
            step()
        except Problem as problem:
            p.event("Warning", problem.result.reason, f"While stopping the superseded cycle: {problem.result.message}")


def stop_outside_work(p: Pass) -> None:
    """Terminates the cycle's KFP run and ends its MLflow run (KILLED) while they still run."""
    record = p.status.get("pipeline") or {}
    running = cond.get(p.status.get("conditions", []), cond.PIPELINE) or {}
    if record.get("runId") and running.get("status") == cond.UNKNOWN:
        client = pipeline.client_for(p)
        if client is not None:
            pipeline.terminate(client, record["runId"])
    run_id = (p.status.get("training") or {}).get("mlflowRunId")
    if run_id:  # end_run leaves a run alone that the trainer already ended
        p.mlflow(lambda client: client.end_run(run_id, "KILLED"))
