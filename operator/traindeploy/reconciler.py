"""Reconciles one TrainDeploy in one pass: check the spec, decide the cycle, run the stages in
order, summarise. Each stage is its own module and returns a result (`traindeploy.results`).

Level-triggered: every pass recomputes from the spec, the status written last time and what
exists now, so an operator restarted at any point resumes without creating anything twice.
`reconcile()` is synchronous (it runs in a worker thread) and returns the desired status, the
Events to post and when to look again; the handler writes the status only if it changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from traindeploy import conditions as cond
from traindeploy import cycle, lifecycle as lc, serving, triggers, validation, world
from traindeploy.context import TRAINDEPLOY, Environment, Event, Pass
from traindeploy.results import INVALID_SPEC, Blocked, Done, Fail, Problem, Result, Wait
from traindeploy.serving import rollback, traffic
from traindeploy.serving.state import PHASE_AWAITING, PHASE_CANARY, ROLLED_BACK, Serving
from traindeploy.stages import gate, pipeline, registration, training, tuning
from traindeploy.stages.base import Stage

STAGES: tuple[Stage, ...] = (pipeline.STAGE, tuning.STAGE, training.STAGE, gate.STAGE, registration.STAGE,
                             serving.STAGE)
BY_NAME = {stage.name: stage for stage in STAGES}
IN_PROGRESS_REASONS = frozenset([stage.phase for stage in STAGES] + [PHASE_CANARY, PHASE_AWAITING])
CHILD_KINDS = (training.PYTORCHJOB, training.TRAINJOB, tuning.EXPERIMENT, traffic.INFERENCESERVICE)

__all__ = ["Environment", "Outcome", "reconcile", "TRAINDEPLOY", "CHILD_KINDS", "STAGES", "stages_for"]


@dataclass
class Outcome:
    status: dict
    events: list[Event]
    requeue_after: float | None  # seconds; None: only watch events (and the resync) wake it
    blocked: bool = False  # waiting on an unavailable dependency: retry with backoff
    canary_outcomes: tuple[tuple[str, str], ...] = ()  # (outcome, reason) of rollouts this pass ended


def stages_for(spec: dict) -> list[Stage]:
    return [stage for stage in STAGES if stage.applies(spec)]


def reconcile(td: dict, env: Environment) -> Outcome:
    p = Pass(td, env)
    p.status["observedGeneration"] = p.meta.get("generation", 0)
    problems = validation.check(p.spec, env.config)
    if problems:
        return _invalid(p, "; ".join(map(str, problems)))
    try:
        world.rebuild(p)
    except Problem as problem:  # what exists could not be read: nothing is started blind
        p.set_condition(cond.READY, cond.FALSE, problem.result.reason, problem.result.message)
        return Outcome(p.status, p.events, None, blocked=True)
    if (p.status.get("serving") or {}).get("modelVersion"):
        try:
            rollback.manual_rollback(Serving.of(p))
        except Problem as problem:
            p.event("Warning", problem.result.reason, problem.result.message)
    schedule_check = cycle.start_if_needed(p)
    result, stage = (None, None) if _is_failed(p.status) else _run_stages(p)
    requeue = _summarise(p, result, stage)
    _transition_events(p)
    if p.status.get("phase") in triggers.FINISHED_PHASES and (p.status.get("retrain") or {}).get("queued"):
        requeue = 0.5  # a queued retrain starts as soon as this cycle's end is recorded
    if schedule_check is not None:
        requeue = schedule_check if requeue is None else min(requeue, schedule_check)
    return Outcome(p.status, p.events, requeue, blocked=isinstance(result, Blocked),
                   canary_outcomes=tuple(p.canary_outcomes))


def _run_stages(p: Pass) -> tuple[Result | None, Stage | None]:
    """Runs the stages in order until one is not done; returns its result and the stage."""
    for stage in stages_for(p.spec):
        done = cond.get(p.status["conditions"], stage.condition)
        if not stage.repeats and done is not None and done["status"] == cond.TRUE:
            continue
        try:
            result = stage.run(p)
        except Problem as problem:
            result = problem.result
        if not isinstance(result, Done):
            return result, stage
        p.set_condition(stage.condition, cond.TRUE, stage.condition, result.message)
    return None, None


def _summarise(p: Pass, result: Result | None, stage: Stage | None) -> float | None:
    status, model = p.status, p.spec["model"]["name"]
    if result is None and stage is None:
        if _is_failed(status):
            return None
        status["phase"] = lc.PHASE_READY
        served = status.get("serving") or {}
        p.set_condition(cond.READY, cond.TRUE, "Ready", f"Model {model} version {served.get('modelVersion')} "
                                                        f"is serving at {served.get('url') or 'its service'}.")
        return None
    if isinstance(result, Fail):
        status["phase"], status["failedStage"] = lc.PHASE_FAILED, stage.name
        p.set_condition(stage.condition, cond.FALSE, result.reason, result.message)
        if result.reason == ROLLED_BACK:  # the stable version still serves: serving itself is fine
            p.set_condition(cond.SERVING, cond.TRUE, ROLLED_BACK, f"Version {status['serving'].get('modelVersion')} "
                                                                  f"serves all traffic after a rollback: {result.message}")
        p.set_condition(cond.READY, cond.FALSE, result.reason, result.message)
        return None
    if isinstance(result, Blocked):
        p.set_condition(cond.READY, cond.FALSE, result.reason, result.message)
        p.set_condition(stage.condition, cond.UNKNOWN, result.reason, result.message)
        status["phase"] = stage.phase if _cycle_work_started(p) else lc.PHASE_PENDING
        return None
    assert isinstance(result, Wait), result
    p.set_condition(stage.condition, cond.UNKNOWN, result.reason or stage.phase, result.message)
    p.set_condition(cond.READY, cond.FALSE, stage.phase, result.message)
    status["phase"] = result.phase or stage.phase
    return result.after


def _invalid(p: Pass, message: str) -> Outcome:
    """A spec that cannot work: reported once, nothing runs, nothing is retried until it changes."""
    before = cond.get(p.old.get("conditions") or [], cond.READY) or {}
    p.status["phase"] = lc.PHASE_FAILED
    p.set_condition(cond.READY, cond.FALSE, INVALID_SPEC, message)
    if (before.get("reason"), before.get("message")) != (INVALID_SPEC, message):
        p.event("Warning", INVALID_SPEC, message)
    return Outcome(p.status, p.events, None)


def _is_failed(status: dict) -> bool:
    """A failed cycle stays failed until a new one starts (a spec change, a retrain)."""
    return status.get("phase") == lc.PHASE_FAILED and bool(status.get("failedStage"))


def _cycle_work_started(p: Pass) -> bool:
    """Whether this cycle made anything yet; before that, a blocked TrainDeploy is Pending."""
    kept = set(cycle.KEPT_CHILD_KINDS)
    return any(c.get("kind") not in kept for c in p.status.get("children", [])) or bool(
        (p.status.get("pipeline") or {}).get("runId") or (p.status.get("training") or {}).get("mlflowRunId")
        or (p.status.get("model") or {}).get("version") or (p.status.get("serving") or {}).get("targetVersion"))


def _transition_events(p: Pass) -> None:
    """One Event per stage condition that changed status or reason, and one when Ready; none for
    a stage going in progress (its condition says so, the `Created` Event of its child tells
    the step, and its outcome follows as an Event of its own)."""
    before = {c["type"]: c for c in p.old.get("conditions") or []}
    for after in p.status["conditions"]:
        previous = before.get(after["type"])
        if previous and (previous["status"], previous.get("reason")) == (after["status"], after["reason"]):
            continue
        if after["type"] == cond.READY:
            if after["status"] == cond.TRUE:
                p.event("Normal", after["reason"], after["message"])
            continue  # failures and waits are told by the stage conditions
        in_progress = after["status"] == cond.UNKNOWN and after["reason"] in IN_PROGRESS_REASONS
        if in_progress:
            continue
        trouble = after["status"] == cond.FALSE or after["status"] == cond.UNKNOWN
        p.event("Warning" if trouble else "Normal", after["reason"], after["message"])
