"""Ending a canary without promoting it: traffic goes back to the stable version, the canary's
version is remembered as failed (not rolled out again until the spec changes). Also the
`traindeploy.io/rollback=<version>` annotation, which sends all traffic back to a version that
served before."""

from __future__ import annotations

from traindeploy import lifecycle as lc
from traindeploy import triggers
from traindeploy.results import Fail
from traindeploy.serving import history, traffic
from traindeploy.serving.approvals import version_named
from traindeploy.serving.state import AWAITING, KNATIVE, PROGRESSING, ROLLED_BACK, Serving


# Why a canary ended without promotion, a bounded label of traindeploy_canary_outcomes_total.
NOT_READY, ANALYSIS_FAILED, SUPERSEDED, MANUAL = "NotReady", "AnalysisFailed", "Superseded", "ManualRollback"


def roll_back(s: Serving, rollout: dict, reason: str, cause: str) -> Fail:
    abort(s, rollout, reason, cause)
    return Fail(ROLLED_BACK, reason)


def abort(s: Serving, rollout: dict, reason: str, cause: str) -> None:
    p = s.p
    version, stable = rollout["version"], s.serving["modelVersion"]
    if s.mode == KNATIVE:
        if rollout.get("step", -1) >= 0:
            traffic.ensure_isvc(s, s.name, version, p.status.get("model", {}).get("storageUri")
                                or s.serving["storageUri"], canary_percent=0)
    else:
        traffic.set_stable(s, stable, s.serving["storageUri"], wait=False)
    failed = rollout.setdefault("failedVersions", [])
    if version not in failed:
        failed.append(version)
    rollout.update({"state": ROLLED_BACK, "weight": 0, "paused": False, "message": reason})
    rollout.pop("awaitingApproval", None)
    p.status["rollout"] = rollout
    s.serving["traffic"] = lc.serving_traffic(stable)
    history.record(s, version, stable, ROLLED_BACK, reason, p.status.get("model", {}).get("storageUri"))
    p.event("Warning", "RolledBack", f"Rolled back version {version}; version {stable} serves all traffic. {reason}")
    p.canary_ended("rolled_back", cause)


def abort_in_progress(s: Serving, reason: str) -> None:
    """A newer spec supersedes a rollout in progress: traffic returns to the stable version."""
    rollout = s.rollout
    if rollout.get("state") in (PROGRESSING, AWAITING) and s.serving.get("modelVersion"):
        abort(s, rollout, reason, SUPERSEDED)


def manual_rollback(s: Serving) -> None:
    """`traindeploy.io/rollback=<version>` sends all traffic back to that version, once per value."""
    p = s.p
    wanted = (p.meta.get("annotations") or {}).get(triggers.ANNOTATION_ROLLBACK)
    if not wanted or wanted == (p.status.get("retrain") or {}).get("lastRollback"):
        return
    p.status.setdefault("retrain", {})["lastRollback"] = wanted
    version = version_named(wanted)
    current = s.serving.get("modelVersion")
    if current is None or version == current:
        p.event("Normal", "RollbackIgnored", f"Version {version} is already serving; nothing to roll back.")
        return
    storage = history.storage_of(s, version)
    if storage is None:
        p.event("Warning", "RollbackIgnored", f"traindeploy.io/rollback={wanted} names no known version.")
        return
    rollout = s.rollout
    if rollout.get("state") in (PROGRESSING, AWAITING):
        abort(s, rollout, f"Manual rollback to version {version}.", MANUAL)
    traffic.set_stable(s, version, storage, wait=False)
    rollout.setdefault("failedVersions", [])
    if current not in rollout["failedVersions"]:
        rollout["failedVersions"].append(current)  # not rolled out again until the spec changes
    p.status["rollout"] = rollout
    history.record(s, version, current, "ManualRollback", f"Rolled back by annotation from version {current}.",
                   storage)
    history.now_serving(s, version, storage)
    p.event("Warning", "ManualRollback", f"Sent all traffic back to version {version} (was {current}).")
