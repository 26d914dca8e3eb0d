"""The serving stage (`deploying`): the first rollout, canary rollouts of later versions, manual
approval and manual rollback, in KServe's two deployment modes.

  state.py          what the modules share in a pass
  first_rollout.py  the first version; plain replacement; keeping the objects as the spec says
  canary.py         the canary step machine
  traffic.py        InferenceServices, the HTTPRoute and weights, Knative and Standard
  approvals.py      the approve annotation
  rollback.py       ending a canary without promotion; the rollback annotation
  analysis.py       the probe and Prometheus checks between steps
  history.py        status.rolloutHistory and the `champion` alias

Aliases move only on promotion: `champion` always names the version that serves all traffic.
"""

from __future__ import annotations

from traindeploy import conditions as cond
from traindeploy.context import Pass
from traindeploy.results import Result
from traindeploy.serving import canary, first_rollout
from traindeploy.serving.state import DEADLINE_REASON, ROLLED_BACK, Serving
from traindeploy.stages.base import Stage


def run(p: Pass) -> Result:
    s = Serving.of(p)
    model = p.status.get("model") or {}
    target, storage = model.get("version"), model.get("storageUri")
    current = s.serving.get("modelVersion")
    rollout = s.rollout
    if current is not None and (current == target or target in (rollout.get("failedVersions") or [])
                                or (rollout.get("version") == target and rollout.get("state") == ROLLED_BACK)):
        return first_rollout.maintain(s)
    if current is None:
        return first_rollout.first_rollout(s, target, storage)
    if s.spec.get("canary") is None:
        return first_rollout.replace(s, target, storage)
    return canary.run(s, target, storage, current)


STAGE = Stage("deploying", cond.SERVING, "Deploying", run, deadline_reason=DEADLINE_REASON, repeats=True)
