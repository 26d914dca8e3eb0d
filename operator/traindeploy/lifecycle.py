"""Pure decisions of the lifecycle: which cycle, which phase, does the gate pass, what the
trainer is given. No API calls here; the stages orchestrate around these."""

from __future__ import annotations

import hashlib
import json

from traindeploy.secrets import MLFLOW_SECRET_KEYS

# Changing any of these starts a new training cycle; serving changes apply to the running service.
TRAINING_SPEC_KEYS = ("model", "mlflow", "pipeline", "tuning", "training", "gate")

CYCLE_STATUS_KEYS = ("pipeline", "tuning", "training", "model", "phase", "failedStage")

PHASE_PENDING, PHASE_READY, PHASE_FAILED = "Pending", "Ready", "Failed"


def training_spec_hash(spec: dict) -> str:
    relevant = {key: spec.get(key) for key in TRAINING_SPEC_KEYS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def gate_passes(value: float, gate: dict) -> bool:
    threshold = float(gate["threshold"])
    if gate.get("direction", "maximize") == "minimize":
        return value <= threshold
    return value >= threshold


def gate_message(metric: str, value: float, gate: dict, passed: bool) -> str:
    direction = gate.get("direction", "maximize")
    relation = ("at or above" if passed else "below") if direction == "maximize" else \
        ("at or below" if passed else "above")
    return f"{metric}={value:g} is {relation} the threshold {float(gate['threshold']):g}"


def effective_hyperparameters(training: dict, best_parameters: dict[str, str] | None) -> dict[str, str]:
    """The spec's hyperparameters, with the best trial's values taking precedence."""
    merged = {str(k): str(v) for k, v in (training.get("hyperparameters") or {}).items()}
    merged.update(best_parameters or {})
    return merged


def mlflow_env(tracking_uri: str, experiment_name: str, run_id: str | None,
               secret_name: str | None, secret_keys: list[str]) -> list[dict]:
    """Environment for training containers. Credentials are references to the Secret, never values."""
    env = [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
           {"name": "MLFLOW_EXPERIMENT_NAME", "value": experiment_name}]
    if run_id:
        env.append({"name": "MLFLOW_RUN_ID", "value": run_id})
    for key in sorted(secret_keys):
        if key in MLFLOW_SECRET_KEYS:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
    return env


def serving_traffic(version: str | None) -> str:
    return f"v{version} 100%" if version else ""
