"""The canary step machine for a version after the first (spec.serving.canary).

  (approval BeforeFirstStep) → step 1 weight → ready? → interval → analysis → step 2 … → (approval
  BeforePromotion) → promote
  not ready within readyTimeoutSeconds, or analysis failed → roll back

The rollout's state lives in status.rollout, so a restarted operator resumes at the same step. A
step's interval counts from when its weight was written, not from when it was decided.
"""

from __future__ import annotations

from traindeploy import conditions as cond
from traindeploy.results import Result, Wait
from traindeploy.serving import analysis, approvals, history, rollback, traffic
from traindeploy.serving.state import KNATIVE, PHASE_CANARY, PROGRESSING, PROMOTED, Serving, done

DEFAULT_STEPS = [10, 50, 100]


def run(s: Serving, version: str, storage: str, stable: str) -> Result:
    p, canary = s.p, s.spec["canary"]
    steps = canary.get("steps") or DEFAULT_STEPS
    interval = canary.get("stepIntervalSeconds", 300)
    ready_timeout = canary.get("readyTimeoutSeconds", 600)
    rollout = s.rollout
    if s.mode is None:
        return _wait(rollout, f"Waiting for KServe to report the deployment mode of InferenceService {s.name}.",
                     p.env.config.poll_interval)
    if rollout.get("version") != version:
        rollout = {"version": version, "stableVersion": stable, "mode": s.mode, "state": PROGRESSING,
                   "step": -1, "weight": 0, "startedAt": p.now, "failedVersions": rollout.get("failedVersions") or []}
        p.event("Normal", "RolloutStarted", f"Started rolling out version {version} next to version {stable}.")
    p.status["rollout"] = rollout
    manual = s.spec.get("approval") == "Manual"
    point = s.spec.get("approvalPoint", "BeforeFirstStep")
    if rollout["step"] == -1:
        if manual and point == "BeforeFirstStep" and not approvals.approved(s, version, rollout):
            return approvals.await_approval(s, version, "before its first canary step")
        _enter_step(s, rollout, 0, steps)
    if rollout["weight"] >= 100:  # resumed while KServe was moving all traffic
        return promote(s, rollout, version, storage, stable, phase=None)
    ready, failed, url, message = traffic.apply_weight(s, version, storage, stable, rollout["weight"])
    if not rollout.get("stepStartedAt"):
        _step_started(s, rollout)
    elapsed = (p.now_dt - cond.parse_time(rollout["stepStartedAt"])).total_seconds()
    if not ready:
        if failed:
            return rollback.roll_back(s, rollout, f"Canary version {version} failed at {rollout['weight']}%: "
                                                  f"{message}", rollback.NOT_READY)
        if elapsed >= ready_timeout:
            return rollback.roll_back(s, rollout, f"Canary version {version} was not ready within {ready_timeout}s "
                                                  f"at {rollout['weight']}%: {message}", rollback.NOT_READY)
        return _wait(rollout, f"Canary version {version} at {rollout['weight']}% is not ready yet: {message}",
                     min(ready_timeout - elapsed, p.env.config.poll_interval))
    if elapsed < interval:
        return _wait(rollout, f"Canary version {version} at {rollout['weight']}%; next check in "
                              f"{int(interval - elapsed)}s.", interval - elapsed)
    passed, verdict = analysis.analyse(s, url, version)
    rollout["message"] = verdict
    if not passed:
        return rollback.roll_back(s, rollout, f"Analysis of version {version} at {rollout['weight']}% failed: "
                                              f"{verdict}", rollback.ANALYSIS_FAILED)
    following = rollout["step"] + 1
    if following < len(steps) and steps[following] < 100:
        _enter_step(s, rollout, following, steps)
        traffic.apply_weight(s, version, storage, stable, rollout["weight"])
        _step_started(s, rollout)
        return _wait(rollout, f"Canary version {version} moved to {rollout['weight']}%.", interval)
    if manual and point == "BeforePromotion" and not approvals.approved(s, version, rollout):
        return approvals.await_approval(s, version, "before promotion")
    return promote(s, rollout, version, storage, stable, phase=PHASE_CANARY)


def promote(s: Serving, rollout: dict, version: str, storage: str, stable: str, phase: str | None) -> Result:
    if s.mode == KNATIVE:
        isvc = traffic.ensure_isvc(s, s.name, version, storage, canary_percent=100)
        if not traffic.knative_fully_promoted(isvc):
            rollout["weight"] = 100
            return _wait(rollout, f"Promoting version {version}: waiting for KServe to send it 100%.",
                         s.p.env.config.poll_interval, phase)
    else:
        moved, why = traffic.set_stable(s, version, storage)
        if not moved:
            rollout["weight"] = 100
            return _wait(rollout, f"Promoting version {version}: waiting for the stable InferenceService to "
                                  f"serve it ({why}).", s.p.env.config.poll_interval, phase)
    rollout.update({"state": PROMOTED, "weight": 100, "paused": False, "message": f"Promoted version {version}."})
    history.now_serving(s, version, storage)
    history.record(s, version, stable, PROMOTED, rollout.get("message", ""), storage)
    s.p.event("Normal", "Promoted", f"Promoted version {version}; it serves all traffic.")
    s.p.canary_ended("promoted", "Promoted")
    return done(s)


def _enter_step(s: Serving, rollout: dict, step: int, steps: list[int]) -> None:
    rollout.update({"step": step, "weight": steps[step], "state": PROGRESSING, "paused": False})
    rollout.pop("stepStartedAt", None)
    rollout.pop("awaitingApproval", None)
    s.p.event("Normal", "CanaryStep", f"Sent {steps[step]}% of traffic to version {rollout['version']} "
                                      f"(step {step + 1} of {len(steps)}).")


def _step_started(s: Serving, rollout: dict) -> None:
    rollout["stepStartedAt"] = cond.precise_rfc3339(s.p.env.clock())


def _wait(rollout: dict, message: str, after: float, phase: str | None = PHASE_CANARY) -> Wait:
    rollout["message"] = message
    return Wait(message, max(0.5, after), reason=PHASE_CANARY, phase=phase)
