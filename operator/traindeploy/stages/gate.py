"""The gate stage: the MLflow run's metric against spec.gate.threshold; nothing is registered or
deployed below it."""

from __future__ import annotations

from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy.context import Pass
from traindeploy.results import Done, Fail, Result
from traindeploy.stages.base import Stage


def run(p: Pass) -> Result:
    run_id = p.status["training"]["mlflowRunId"]
    model = p.status.setdefault("model", {"name": p.spec["model"]["name"]})
    gate = p.spec.get("gate")
    if not gate:
        return Done("No gate configured.")
    found = p.mlflow(lambda client: client.get_run(run_id))
    value = (found.get("metrics") or {}).get(gate["metric"])
    if value is None:
        return Fail("GateMetricMissing", f"MLflow run {run_id} has no metric {gate['metric']}.")
    passed = lc.gate_passes(float(value), gate)
    message = lc.gate_message(gate["metric"], float(value), gate, passed)
    model["metric"] = {"name": gate["metric"], "value": float(value), "threshold": float(gate["threshold"]),
                       "passed": passed}
    if not passed:
        return Fail("GateFailed", f"{message}; nothing is registered or deployed.")
    return Done(message)


STAGE = Stage("gate", cond.GATE, "Evaluating", run)
