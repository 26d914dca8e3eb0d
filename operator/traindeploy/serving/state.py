"""What the serving modules share in one pass: the pass, spec.serving, status.serving, the
InferenceService's name and the KServe deployment mode in use."""

from __future__ import annotations

from dataclasses import dataclass

from traindeploy import naming
from traindeploy.context import Pass
from traindeploy.results import Done

KNATIVE, STANDARD = "Knative", "Standard"
PROGRESSING, AWAITING, PROMOTED, ROLLED_BACK = "Progressing", "AwaitingApproval", "Promoted", "RolledBack"
PHASE_CANARY, PHASE_AWAITING = "Canary", "AwaitingApproval"
DEFAULT_TIMEOUT = 1800  # as the CRD's default of spec.serving.timeoutSeconds
DEADLINE_REASON = "ServingDeadlineExceeded"


@dataclass
class Serving:
    p: Pass
    spec: dict  # spec.serving
    serving: dict  # status.serving, edited in place
    name: str  # the stable InferenceService
    mode: str
    mode_explicit: bool  # written on the InferenceService only when the user or operator chose it

    @classmethod
    def of(cls, p: Pass) -> "Serving":
        spec = p.spec.get("serving") or {}
        chosen = spec.get("deploymentMode") or p.env.config.deployment_mode
        return cls(p, spec, p.status.setdefault("serving", {}), naming.inference_service_name(p.name),
                   chosen or KNATIVE, bool(chosen))

    @property
    def rollout(self) -> dict:
        return self.p.status.get("rollout") or {}

    @property
    def canary_name(self) -> str:
        return naming.canary_inference_service_name(self.p.name)


def done(s: Serving) -> Done:
    return Done(f"InferenceService {s.serving.get('inferenceServiceName')} is ready with version "
                f"{s.serving.get('modelVersion')}.")
