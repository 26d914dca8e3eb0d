"""Status conditions as the API: setting one that has not changed changes nothing.

Shapes follow metav1.Condition: type, status, reason, message, lastTransitionTime and
observedGeneration. lastTransitionTime moves only when status changes.
"""

from __future__ import annotations

import datetime as dt

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# The condition types, in the order they are shown.
PIPELINE = "PipelineSucceeded"
TUNING = "TuningSucceeded"
TRAINING = "TrainingSucceeded"
GATE = "GatePassed"
REGISTERED = "ModelRegistered"
SERVING = "ServingReady"
READY = "Ready"
ORDER = (PIPELINE, TUNING, TRAINING, GATE, REGISTERED, SERVING, READY)


def now_rfc3339(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def precise_rfc3339(now: dt.datetime) -> str:
    """With microseconds: for timing steps and intervals, where whole seconds would cut them short."""
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def get(conditions: list[dict], condition_type: str) -> dict | None:
    return next((c for c in conditions if c.get("type") == condition_type), None)


def set_condition(conditions: list[dict], condition_type: str, status: str, reason: str, message: str,
                  generation: int, now: str) -> list[dict]:
    """A new list with the condition set; the same content when nothing changed."""
    previous = get(conditions, condition_type)
    transition = now
    if previous is not None and previous.get("status") == status:
        transition = previous.get("lastTransitionTime") or now
    updated = {"type": condition_type, "status": status, "reason": reason, "message": message[:32768],
               "lastTransitionTime": transition, "observedGeneration": generation}
    others = [c for c in conditions if c.get("type") != condition_type]
    return _sorted(others + [updated])


def _sorted(conditions: list[dict]) -> list[dict]:
    rank = {name: index for index, name in enumerate(ORDER)}
    return sorted(conditions, key=lambda c: (rank.get(c["type"], len(ORDER)), c["type"]))


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
