"""What the serving modules share in one pass: the pass, spec.serving, status.serving, the
InferenceService's name and the KServe deployment mode in use."""

from __future__ import annotations

from dataclasses import dataclass

from traindeploy import naming
from traindeploy.children import inferenceservice
from traindeploy.context import Pass
from traindeploy.kube import Kind
from traindeploy.results import Done

INFERENCESERVICE = Kind(inferenceservice.GROUP, inferenceservice.VERSION, inferenceservice.PLURAL,
                        inferenceservice.KIND)

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
    mode: str | None  # None until KServe has admitted the stable InferenceService (no mode chosen)
    mode_explicit: bool  # written on the InferenceService only when the user or operator chose it
    stable: dict | None  # the stable InferenceService as last read or written in this pass

    @classmethod
    def of(cls, p: Pass) -> "Serving":
        """With no mode chosen (spec or operator setting), the mode KServe resolved for the stable
        InferenceService: its default may be Standard, where canaryTrafficPercent means nothing."""
        spec = p.spec.get("serving") or {}
        name = naming.inference_service_name(p.name)
        chosen = spec.get("deploymentMode") or p.env.config.deployment_mode
        stable = p.kube(lambda: p.env.kube.get(INFERENCESERVICE, p.namespace, name))
        return cls(p, spec, p.status.setdefault("serving", {}), name,
                   chosen or inferenceservice.resolved_mode(stable), bool(chosen), stable)

    def mode_annotation(self) -> str | None:
        """The deployment-mode annotation value to write, when a mode was chosen."""
        if not self.mode_explicit or self.mode is None:
            return None
        return inferenceservice.mode_annotation(self.mode, self.stable)

    @property
    def rollout(self) -> dict:
        return self.p.status.get("rollout") or {}

    @property
    def canary_name(self) -> str:
        return naming.canary_inference_service_name(self.p.name)


def done(s: Serving) -> Done:
    return Done(f"InferenceService {s.serving.get('inferenceServiceName')} is ready with version "
                f"{s.serving.get('modelVersion')}.")
