"""What a written status tells the metrics: stage transitions and durations, cycle and canary-step
durations, canary outcomes, the phase. Read from the status before and after a write that took,
so a pass recomputed after a conflict, or repeated after a restart, counts nothing twice; and the
durations come from the conditions' and records' own times, so a replica that took over after a
failover measures the stages the other one started.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy import metrics
from traindeploy.reconciler import STAGES, Outcome
from traindeploy.serving.state import AWAITING, PROGRESSING, PROMOTED, ROLLED_BACK

FINISHED = (lc.PHASE_READY, lc.PHASE_FAILED)
STEP_OUTCOMES = {PROMOTED: "promoted", ROLLED_BACK: "rolled_back", AWAITING: "awaiting_approval"}


@dataclass(frozen=True)
class Observation:
    metric: str  # stage | cycle | canary_step
    labels: tuple[str, ...]
    seconds: float | None  # None: a transition without a duration (a stage started)


def _seconds(later: str | None, earlier: str | None) -> float:
    end, start = cond.parse_time(later), cond.parse_time(earlier)
    if end is None or start is None:
        return 0.0
    return max(0.0, (end - start).total_seconds())


def observations(old: dict, new: dict, now: dt.datetime) -> list[Observation]:
    """Pure: what changed between the status as read and the status written."""
    found: list[Observation] = []
    before = {c["type"]: c for c in old.get("conditions") or []}
    after = {c["type"]: c for c in new.get("conditions") or []}
    for stage in STAGES:
        current, previous = after.get(stage.condition), before.get(stage.condition)
        if current is None or (previous is not None and previous["status"] == current["status"]):
            continue
        if current["status"] == cond.UNKNOWN:
            found.append(Observation("stage", (stage.name, "started"), None))
            continue
        # A canary rolled back leaves ServingReady True (the stable version serves), yet the stage failed.
        failed = current["status"] == cond.FALSE or (
            new.get("phase") == lc.PHASE_FAILED and new.get("failedStage") == stage.name)
        if previous is None or previous["status"] != cond.UNKNOWN:  # started and ended in one pass
            found.append(Observation("stage", (stage.name, "started"), None))
            started = current["lastTransitionTime"]
        else:
            started = previous["lastTransitionTime"]
        found.append(Observation("stage", (stage.name, "failed" if failed else "succeeded"),
                                 _seconds(current["lastTransitionTime"], started)))
    found += _cycle_end(old, new)
    found += _canary_step_end(old, new, now)
    return found


def _cycle_end(old: dict, new: dict) -> list[Observation]:
    """The first Ready or Failed since the cycle started. Ready turns False in a cycle's first pass
    and stays so until its end; a later serving-only change (Ready True, then False) is not a cycle."""
    cycle = new.get("cycle") or {}
    if new.get("phase") not in FINISHED or old.get("phase") in FINISHED or not cycle.get("startedAt"):
        return []
    ready_before = cond.get(old.get("conditions") or [], cond.READY)
    if ready_before is not None and (ready_before["status"] == cond.TRUE
                                     or _seconds(ready_before["lastTransitionTime"], cycle["startedAt"]) > 0):
        return []
    ready_now = cond.get(new.get("conditions") or [], cond.READY) or {}
    outcome = "ready" if new["phase"] == lc.PHASE_READY else "failed"
    trigger = (cycle.get("trigger") or "spec").partition(":")[0]
    return [Observation("cycle", (outcome, trigger), _seconds(ready_now.get("lastTransitionTime"),
                                                              cycle["startedAt"]))]


def _canary_step_end(old: dict, new: dict, now: dt.datetime) -> list[Observation]:
    was, rollout = old.get("rollout") or {}, new.get("rollout") or {}
    if was.get("state") != PROGRESSING or was.get("step", -1) < 0 or not was.get("stepStartedAt"):
        return []
    if rollout.get("version") == was.get("version") and rollout.get("step") == was.get("step") \
            and rollout.get("state") == PROGRESSING:
        return []
    outcome = STEP_OUTCOMES.get(rollout.get("state"), "advanced")
    if rollout.get("version") != was.get("version"):
        outcome = "rolled_back"  # a newer version replaced the rollout
    seconds = max(0.0, (now - cond.parse_time(was["stepStartedAt"])).total_seconds())
    return [Observation("canary_step", (outcome,), seconds)]


def written(uid: str, old: dict, outcome: Outcome, now: dt.datetime | None = None) -> None:
    """Records what a status write that took changed."""
    now = now or dt.datetime.now(dt.timezone.utc)
    for seen in observations(old, outcome.status, now):
        if seen.metric == "stage":
            metrics.STAGE_TRANSITIONS.labels(*seen.labels).inc()
            if seen.seconds is not None:
                metrics.STAGE_DURATION.labels(*seen.labels).observe(seen.seconds)
        elif seen.metric == "cycle":
            metrics.CYCLE_DURATION.labels(*seen.labels).observe(seen.seconds)
        else:
            metrics.CANARY_STEP_DURATION.labels(*seen.labels).observe(seen.seconds)
    for canary_outcome, reason in outcome.canary_outcomes:
        metrics.CANARY_OUTCOMES.labels(canary_outcome, reason).inc()
    phase(uid, outcome.status)


def phase(uid: str, status: dict) -> None:
    if status.get("phase"):
        metrics.PHASES.set(uid, status["phase"])


def pass_done(outcome: Outcome | None, seconds: float) -> None:
    result = "error" if outcome is None else "blocked" if outcome.blocked else "ok"
    metrics.RECONCILES.labels(result).inc()
    metrics.RECONCILE_DURATION.labels(result).observe(seconds)
