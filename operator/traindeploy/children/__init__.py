"""One module per child kind: a pure builder of the desired object and a pure reader of its state.

Builders take the TrainDeploy's spec pieces and pre-built `metadata` (name, namespace, labels,
owner references come from `traindeploy.naming`) and return the full object as a dict. Readers
take the object as the apiserver returned it and say where it stands, in the upstream
controller's own terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"


@dataclass(frozen=True)
class ChildState:
    """Where a child stands. `phase` is one of PENDING, RUNNING, SUCCEEDED, FAILED; `reason` and
    `message` are the upstream controller's own words when it gave any; `outputs` carries what
    later stages need (best trial, URL, ...)."""

    phase: str
    reason: str = ""
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.phase in (SUCCEEDED, FAILED)


def condition(obj: dict, condition_type: str) -> dict | None:
    """The status condition of that type, or None."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == condition_type:
            return item
    return None


def is_true(obj: dict, condition_type: str) -> bool:
    found = condition(obj, condition_type)
    return found is not None and found.get("status") == "True"


def unschedulable(pods: list[dict]) -> str | None:
    """Why a job's pods do not start, in the scheduler's words: the first pod whose PodScheduled
    condition is False with reason Unschedulable ("0/2 nodes are available: 2 Insufficient
    nvidia.com/gpu."), or None."""
    for pod in sorted(pods, key=lambda item: (item.get("metadata") or {}).get("name") or ""):
        scheduled = condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            return f"pod {pod['metadata']['name']} cannot be scheduled: {scheduled.get('message') or 'Unschedulable'}"
    return None
