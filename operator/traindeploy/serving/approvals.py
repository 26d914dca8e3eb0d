"""Manual approval: `traindeploy.io/approve=<version>` lets a paused rollout go on (the rollback
annotation is read in rollback.py)."""

from __future__ import annotations

from traindeploy import triggers
from traindeploy.results import Wait
from traindeploy.serving.state import AWAITING, PHASE_AWAITING, Serving


def version_named(value: str | None) -> str | None:
    """The model version an annotation names: "4" and "v4" both name version 4."""
    return value[1:] if value and value[:1] in "vV" and value[1:].isdigit() else value


def approved(s: Serving, version: str, rollout: dict) -> bool:
    given = version_named((s.p.meta.get("annotations") or {}).get(triggers.ANNOTATION_APPROVE))
    if given == version:
        return True
    if given and rollout.get("ignoredApproval") != given:
        rollout["ignoredApproval"] = given
        s.p.event("Warning", "ApprovalIgnored",
                  f"traindeploy.io/approve={given} does not name version {version}, which awaits approval.")
    return False


def await_approval(s: Serving, version: str, where: str) -> Wait:
    """Paused until a person annotates; the annotation wakes the loop, so no timer is set."""
    rollout = s.p.status.setdefault("rollout", {})
    if not rollout.get("paused"):
        s.p.event("Normal", "AwaitingApproval",
                  f"Version {version} waits for approval {where}: kubectl annotate traindeploy/{s.p.name} "
                  f"traindeploy.io/approve={version}")
    rollout.update({"paused": True, "awaitingApproval": version, "state": AWAITING,
                    "version": rollout.get("version") or version})
    return Wait(f"Version {version} waits for approval {where} (annotate traindeploy.io/approve={version}).",
                None, reason=PHASE_AWAITING, phase=PHASE_AWAITING)
