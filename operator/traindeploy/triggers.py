"""When a training cycle starts: a training-relevant spec change, a retrain annotation, a cron
schedule. Pure: status and clock in, decision out.

A spec change supersedes a running cycle (its jobs are stopped; they train what is no longer
wanted). Annotation and schedule requests never interrupt a cycle: while one runs they are
queued, and a newer request replaces the queued one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from croniter import croniter

from traindeploy import conditions as cond
from traindeploy import lifecycle as lc

ANNOTATION_RETRAIN = "traindeploy.io/retrain"
ANNOTATION_APPROVE = "traindeploy.io/approve"
ANNOTATION_ROLLBACK = "traindeploy.io/rollback"
# What users (and `kubectl traindeploy`) write on a TrainDeploy for the operator to act on.
USER_ANNOTATIONS = frozenset({ANNOTATION_RETRAIN, ANNOTATION_APPROVE, ANNOTATION_ROLLBACK})

FINISHED_PHASES = (lc.PHASE_READY, lc.PHASE_FAILED)


@dataclass
class CycleDecision:
    start: str | None  # the trigger of a cycle to start now: spec, annotation:<token>, schedule:<time>
    supersede: bool  # a running cycle must be stopped first
    retrain: dict  # the new status.retrain
    next_check: float | None  # seconds until the schedule fires next


def cycle_label(generation: int, retrain: int) -> str:
    """The cycle's part of child names and MLflow tags: g3 for a spec change, g3r2 for retrains."""
    return f"g{generation}" + (f"r{retrain}" if retrain else "")


def parse_cycle_label(label: str) -> tuple[int, int]:
    """(generation, retrain) of a cycle label: g3r2 -> (3, 2); orders cycles oldest first."""
    generation, _, retrain = label.removeprefix("g").partition("r")
    return int(generation or 0), int(retrain or 0)


def cycle_record(generation: int, retrain: int, spec_hash: str, started_at: str, trigger: str,
                 retrain_token: str | None) -> dict:
    """status.cycle. `retrain_token`: the retrain token already acted on when the cycle started."""
    record = {"generation": generation, "specHash": spec_hash, "startedAt": started_at, "trigger": trigger,
              "retrain": retrain, "label": cycle_label(generation, retrain)}
    if retrain_token:
        record["retrainToken"] = retrain_token
    return record


def decide(spec: dict, annotations: dict[str, str], status: dict, now: dt.datetime) -> CycleDecision:
    retrain = dict(status.get("retrain") or {})
    cycle = status.get("cycle") or {}
    running = bool(cycle) and status.get("phase") not in FINISHED_PHASES
    requests: list[str] = []

    token = annotations.get(ANNOTATION_RETRAIN)
    if token and token != retrain.get("lastToken"):
        retrain["lastToken"] = token
        requests.append(f"annotation:{token}")

    next_check = None
    schedule = (spec.get("retrain") or {}).get("schedule")
    if schedule:
        fired = croniter(schedule, now).get_prev(dt.datetime)
        last = cond.parse_time(retrain.get("lastScheduledAt"))
        if last is None:
            retrain["lastScheduledAt"] = cond.now_rfc3339(fired)  # a new schedule starts counting now
        elif fired > last:
            retrain["lastScheduledAt"] = cond.now_rfc3339(fired)
            requests.append(f"schedule:{cond.now_rfc3339(fired)}")
        next_check = max(0.5, (croniter(schedule, now).get_next(dt.datetime) - now).total_seconds())

    if not cycle or cycle.get("specHash") != lc.training_spec_hash(spec):
        retrain.pop("queued", None)  # the new spec's cycle retrains anyway
        return CycleDecision("spec", running, retrain, next_check)
    if requests:
        retrain["queued"] = requests[-1]  # the newest request wins
    if not running and retrain.get("queued"):
        return CycleDecision(retrain.pop("queued"), False, retrain, next_check)
    return CycleDecision(None, False, retrain, next_check)
