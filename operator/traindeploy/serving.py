"""The deploying stage: the first rollout, canary rollouts of later versions, manual approval and
manual rollback, in KServe's two deployment modes.

- Knative mode: one InferenceService; KServe splits traffic by `canaryTrafficPercent` between the
  latest revision and the last rolled-out one, and reports it in
  `status.components.predictor.traffic`. Promotion sets 100, rollback sets 0 (UPSTREAM.md 4.5).
- Standard mode: KServe does not weight traffic, so the canary version runs as a second
  InferenceService and a TrainDeploy-owned HTTPRoute weights the two predictor Services. Promotion
  moves the stable InferenceService to the new version and removes the canary; rollback sets the
  canary weight to 0 and removes it.

The rollout's state lives in status.rollout, so a restarted operator resumes at the same step.
Aliases move only on promotion: `champion` always names the version that serves all traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traindeploy import analysis, naming, triggers
from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy.children import FAILED, SUCCEEDED, httproute, inferenceservice
from traindeploy.kube import Kind

if TYPE_CHECKING:
    from traindeploy.reconciler import _Reconciliation

HTTPROUTE = Kind(httproute.GROUP, httproute.VERSION, httproute.PLURAL, httproute.KIND)
DEFAULT_STEPS = [10, 50, 100]
HISTORY_LENGTH = 5
PROGRESSING, AWAITING, PROMOTED, ROLLED_BACK = "Progressing", "AwaitingApproval", "Promoted", "RolledBack"
KNATIVE, STANDARD = "Knative", "Standard"


def version_named(value: str | None) -> str | None:
    """The model version an annotation names: "4" and "v4" both name version 4."""
    return value[1:] if value and value[:1] in "vV" and value[1:].isdigit() else value


class Serving:
    """The deploying stage for one reconciliation pass."""

    def __init__(self, rec: "_Reconciliation") -> None:
        self.rec = rec
        self.spec = rec.spec["serving"]
        self.status = rec.status
        self.serving = rec.status.setdefault("serving", {})
        self.name = naming.inference_service_name(rec.name)
        self.mode = self.spec.get("deploymentMode") or rec.env.config.deployment_mode or KNATIVE
        self.phase: str | None = None  # shown instead of Deploying while paused or in canary

    # -- entry points ----------------------------------------------------------------------------

    def run(self) -> None:
        model = self.status.get("model") or {}
        target, storage = model.get("version"), model.get("storageUri")
        current = self.serving.get("modelVersion")
        rollout = self.status.get("rollout") or {}
        if current is not None and (current == target or target in (rollout.get("failedVersions") or [])
                                    or (rollout.get("version") == target and rollout.get("state") == ROLLED_BACK)):
            self._maintain()
            return
        if current is None:
            self._first_rollout(target, storage)
        elif self.spec.get("canary") is None:
            self._replace(target, storage)
        else:
            self._canary(target, storage, current)

    def manual_rollback(self) -> None:
        """`traindeploy.io/rollback=<version>` sends all traffic back to that version."""
        annotations = self.rec.meta.get("annotations") or {}
        wanted = annotations.get(triggers.ANNOTATION_ROLLBACK)
        if not wanted or wanted == (self.status.get("retrain") or {}).get("lastRollback"):
            return
        self.status.setdefault("retrain", {})["lastRollback"] = wanted
        version = version_named(wanted)
        current = self.serving.get("modelVersion")
        if current is None or version == current:
            self.rec.events.append(self.rec.event("Normal", "RollbackIgnored",
                                                  f"Version {version} is already serving; nothing to roll back."))
            return
        storage = self._storage_of(version)
        if storage is None:
            self.rec.events.append(self.rec.event("Warning", "RollbackIgnored",
                                                  f"traindeploy.io/rollback={wanted} names no known version."))
            return
        rollout = self.status.get("rollout") or {}
        if rollout.get("state") in (PROGRESSING, AWAITING):
            self._abort_canary(rollout, f"Manual rollback to version {version}.")
        self._set_stable(version, storage)
        rollout.setdefault("failedVersions", [])
        if current not in rollout["failedVersions"]:
            rollout["failedVersions"].append(current)  # not rolled out again until the spec changes
        self.status["rollout"] = rollout
        self._promote_alias(version)
        self._record(version, current, "ManualRollback", f"Rolled back by annotation from version {current}.",
                     storage)
        self.serving.update({"modelVersion": version, "storageUri": storage,
                             "traffic": lc.serving_traffic(version)})
        self.rec.events.append(self.rec.event("Warning", "ManualRollback",
                                              f"Sent all traffic back to version {version} (was {current})."))

    def abort(self, reason: str) -> None:
        """A newer spec supersedes a rollout in progress: traffic returns to the stable version."""
        rollout = self.status.get("rollout") or {}
        if rollout.get("state") in (PROGRESSING, AWAITING) and self.serving.get("modelVersion"):
            self._abort_canary(rollout, reason)

    # -- first rollout and plain replacement ---------------------------------------------------------

    def _first_rollout(self, version: str, storage: str) -> None:
        if self.spec.get("approval") == "Manual" and not self._approved(version, self.status.setdefault("rollout", {})):
            self._await(version, "before the first rollout")
        self._replace(version, storage)

    def _replace(self, version: str, storage: str) -> None:
        """Deploys `version` on the stable InferenceService and waits until it is ready."""
        if self.serving.get("targetVersion") != version:
            self.serving.update({"targetVersion": version, "startedAt": self.rec.now, "ready": False})
        isvc = self._ensure_isvc(self.name, version, storage)
        state = inferenceservice.read(isvc)
        self._observe(isvc, state)
        if state.phase == SUCCEEDED:
            self._promote_alias(version)
            previous = self.serving.get("modelVersion")
            self.serving.update({"modelVersion": version, "storageUri": storage,
                                 "traffic": lc.serving_traffic(version)})
            if self.mode == STANDARD and self.spec.get("canary") is not None:
                self._ensure_route(None, 0)
            self._record(version, previous, PROMOTED, "Rolled out.", storage)
            return
        if state.phase == FAILED:
            raise self.rec.fail("ServingFailed", f"InferenceService {self.name} failed ({state.reason}): "
                                                 f"{state.message}")
        self.rec.running("deploying", f"InferenceService {self.name} is not ready yet"
                         f"{': ' + state.message if state.message else '.'}", self.serving["startedAt"],
                         self.spec.get("timeoutSeconds") or self.rec.DEFAULT_TIMEOUTS["deploying"])

    def _maintain(self) -> None:
        """Keeps the serving objects as the spec says (replicas, resources) for the serving version."""
        version, storage = self.serving["modelVersion"], self.serving.get("storageUri")
        if storage is None:
            return
        isvc = self._ensure_isvc(self.name, version, storage)
        self._observe(isvc, inferenceservice.read(isvc))

    # -- canary --------------------------------------------------------------------------------------

    def _canary(self, version: str, storage: str, stable: str) -> None:
        canary = self.spec["canary"]
        steps = canary.get("steps") or DEFAULT_STEPS
        interval = canary.get("stepIntervalSeconds", 300)
        ready_timeout = canary.get("readyTimeoutSeconds", 600)
        rollout = self.status.get("rollout") or {}
        if rollout.get("version") != version:
            rollout = {"version": version, "stableVersion": stable, "mode": self.mode, "state": PROGRESSING,
                       "step": -1, "weight": 0, "startedAt": self.rec.now,
                       "failedVersions": rollout.get("failedVersions") or []}
            self.rec.events.append(self.rec.event("Normal", "RolloutStarted",
                                                  f"Started rolling out version {version} next to version {stable}."))
        self.status["rollout"] = rollout
        manual = self.spec.get("approval") == "Manual"
        point = self.spec.get("approvalPoint", "BeforeFirstStep")
        if rollout["step"] == -1:
            if manual and point == "BeforeFirstStep" and not self._approved(version, rollout):
                self._await(version, "before its first canary step")
            self._enter_step(rollout, 0, steps)
        if rollout["weight"] >= 100:
            self._promote(rollout, version, storage, stable)
            return
        ready, url, message = self._apply(rollout, version, storage, stable)
        if not rollout.get("stepStartedAt"):
            self._step_started(rollout)
        elapsed = (self.rec.now_dt - cond.parse_time(rollout["stepStartedAt"])).total_seconds()
        self.phase = "Canary"
        if not ready:
            if elapsed >= ready_timeout:
                self._roll_back(rollout, f"Canary version {version} was not ready within {ready_timeout}s "
                                         f"at {rollout['weight']}%: {message}")
            self._wait(rollout, f"Canary version {version} at {rollout['weight']}% is not ready yet: {message}",
                       min(ready_timeout - elapsed, self.rec.env.config.poll_interval))
        if elapsed < interval:
            self._wait(rollout, f"Canary version {version} at {rollout['weight']}%; next check in "
                                f"{int(interval - elapsed)}s.", interval - elapsed)
        passed, verdict = self._analyse(url, version)
        rollout["message"] = verdict
        if not passed:
            self._roll_back(rollout, f"Analysis of version {version} at {rollout['weight']}% failed: {verdict}")
        following = rollout["step"] + 1
        if following < len(steps) and steps[following] < 100:
            self._enter_step(rollout, following, steps)
            self._apply(rollout, version, storage, stable)
            self._step_started(rollout)
            self._wait(rollout, f"Canary version {version} moved to {rollout['weight']}%.", interval)
        if manual and point == "BeforePromotion" and not self._approved(version, rollout):
            self._await(version, "before promotion")
        self._promote(rollout, version, storage, stable)

    def _enter_step(self, rollout: dict, step: int, steps: list[int]) -> None:
        rollout.update({"step": step, "weight": steps[step], "state": PROGRESSING, "paused": False})
        rollout.pop("stepStartedAt", None)
        rollout.pop("awaitingApproval", None)
        self.rec.events.append(self.rec.event(
            "Normal", "CanaryStep", f"Sent {steps[step]}% of traffic to version {rollout['version']} "
                                    f"(step {step + 1} of {len(steps)})."))

    def _step_started(self, rollout: dict) -> None:
        """A step's interval counts from when its weight was written, not from when it was decided."""
        rollout["stepStartedAt"] = cond.precise_rfc3339(self.rec.env.clock())

    def _apply(self, rollout: dict, version: str, storage: str, stable: str) -> tuple[bool, str | None, str]:
        """Puts the current weight in place; returns (canary ready, canary URL, why not ready)."""
        weight = rollout["weight"]
        if self.mode == KNATIVE:
            isvc = self._ensure_isvc(self.name, version, storage, canary_percent=weight)
            ready, url, message = _knative_canary_state(isvc, weight)
        else:
            self._ensure_isvc(self.name, stable, self.serving["storageUri"])
            canary_name = naming.canary_inference_service_name(self.rec.name)
            isvc = self._ensure_isvc(canary_name, version, storage)
            self._ensure_route(canary_name, weight)
            state = inferenceservice.read(isvc)
            ready = state.phase == SUCCEEDED
            url = _address(isvc)
            message = state.message or state.reason or state.phase
        self.serving["traffic"] = f"v{stable} {100 - weight}%, v{version} {weight}%"
        return ready, url, message

    def _analyse(self, url: str | None, version: str) -> tuple[bool, str]:
        checks = (self.spec.get("canary") or {}).get("analysis") or {}
        verdicts = ["canary ready"]
        if checks.get("probe"):
            if not url:
                return False, "the canary has no address to probe"
            passed, message = analysis.probe(url, checks["probe"], self.rec.env.http)
            if not passed:
                return False, message
            verdicts.append(message)
        if checks.get("prometheus"):
            base = checks["prometheus"].get("url") or self.rec.env.config.prometheus_url
            if not base:
                raise self.rec.invalid("spec.serving.canary.analysis.prometheus.url is not set and the operator "
                                       "has no default Prometheus URL.")
            variables = {"namespace": self.rec.namespace, "name": self.rec.name, "inferenceService": self.name,
                         "canary": self._canary_predictor(), "version": version}
            passed, message = analysis.prometheus(base, checks["prometheus"]["queries"], variables,
                                                  self.rec.env.http, self.rec.env.config.http_timeout)
            if not passed:
                return False, message
            verdicts.append(message)
        return True, "; ".join(verdicts)

    def _canary_predictor(self) -> str:
        if self.mode == KNATIVE:
            return f"{self.name}-predictor"
        return httproute.predictor_service(naming.canary_inference_service_name(self.rec.name))

    def _promote(self, rollout: dict, version: str, storage: str, stable: str) -> None:
        if self.mode == KNATIVE:
            isvc = self._ensure_isvc(self.name, version, storage, canary_percent=100)
            traffic = _traffic(isvc)
            if not (len(traffic) == 1 and traffic[0].get("latestRevision") and traffic[0].get("percent") == 100):
                rollout["weight"] = 100
                self._wait(rollout, f"Promoting version {version}: waiting for KServe to send it 100%.",
                           self.rec.env.config.poll_interval)
        else:
            self._set_stable(version, storage)
        self._promote_alias(version)
        rollout.update({"state": PROMOTED, "weight": 100, "paused": False, "message": f"Promoted version {version}."})
        self.serving.update({"modelVersion": version, "storageUri": storage, "traffic": lc.serving_traffic(version)})
        self._record(version, stable, PROMOTED, rollout.get("message", ""), storage)
        self.rec.events.append(self.rec.event("Normal", "Promoted",
                                              f"Promoted version {version}; it serves all traffic."))

    def _roll_back(self, rollout: dict, reason: str) -> None:
        self._abort_canary(rollout, reason)
        raise self.rec.fail("RolledBack", reason)

    def _abort_canary(self, rollout: dict, reason: str) -> None:
        version, stable = rollout["version"], self.serving["modelVersion"]
        if self.mode == KNATIVE:
            if rollout.get("step", -1) >= 0:
                self._ensure_isvc(self.name, version, self.status.get("model", {}).get("storageUri")
                                  or self.serving["storageUri"], canary_percent=0)
        else:
            self._set_stable(stable, self.serving["storageUri"])
        failed = rollout.setdefault("failedVersions", [])
        if version not in failed:
            failed.append(version)
        rollout.update({"state": ROLLED_BACK, "weight": 0, "paused": False, "message": reason})
        rollout.pop("awaitingApproval", None)
        self.status["rollout"] = rollout
        self.serving["traffic"] = lc.serving_traffic(stable)
        self._record(version, stable, ROLLED_BACK, reason, self.status.get("model", {}).get("storageUri"))
        self.rec.events.append(self.rec.event("Warning", "RolledBack",
                                              f"Rolled back version {version}; version {stable} serves all traffic. "
                                              f"{reason}"))

    # -- approval ------------------------------------------------------------------------------------

    def _approved(self, version: str, rollout: dict) -> bool:
        given = version_named((self.rec.meta.get("annotations") or {}).get(triggers.ANNOTATION_APPROVE))
        if given == version:
            return True
        if given and rollout.get("ignoredApproval") != given:
            rollout["ignoredApproval"] = given
            self.rec.events.append(self.rec.event(
                "Warning", "ApprovalIgnored",
                f"traindeploy.io/approve={given} does not name version {version}, which awaits approval."))
        return False

    def _await(self, version: str, where: str) -> None:
        rollout = self.status.setdefault("rollout", {})
        if not rollout.get("paused"):
            self.rec.events.append(self.rec.event(
                "Normal", "AwaitingApproval",
                f"Version {version} waits for approval {where}: kubectl annotate traindeploy/{self.rec.name} "
                f"traindeploy.io/approve={version}"))
        rollout.update({"paused": True, "awaitingApproval": version, "state": AWAITING,
                        "version": rollout.get("version") or version})
        self.phase = "AwaitingApproval"
        self.rec.stage_waiting("deploying", f"Version {version} waits for approval {where} "
                                            f"(annotate traindeploy.io/approve={version}).")

    # -- objects -------------------------------------------------------------------------------------

    def _ensure_isvc(self, name: str, version: str, storage: str, canary_percent: int | None = None) -> dict:
        meta = naming.child_metadata(self.rec.td, name, stage="serving",
                                     annotations={"traindeploy.io/model-version": str(version)})
        desired = inferenceservice.build(meta, self.spec, storage_uri=storage,
                                         gpu_resource=self.rec.env.config.gpu_resource,
                                         deployment_mode=self.mode if self._mode_explicit() else None)
        if canary_percent is not None:
            desired["spec"]["predictor"]["canaryTrafficPercent"] = canary_percent
        kind = self.rec.INFERENCESERVICE
        isvc, action = self.rec.kube(lambda: self.rec.env.kube.ensure(kind, desired, owned=("spec",)))
        self.rec.created(kind, name, action)
        return isvc

    def _mode_explicit(self) -> bool:
        return bool(self.spec.get("deploymentMode") or self.rec.env.config.deployment_mode)

    def _ensure_route(self, canary_name: str | None, weight: int) -> None:
        gateway = self.spec.get("gateway") or self.rec.env.config.gateway()
        if not gateway:
            raise self.rec.invalid("Standard mode canaries need a Gateway: set spec.serving.gateway or the "
                                   "operator's TRAINDEPLOY_GATEWAY.")
        gateway = {**gateway, "namespace": gateway.get("namespace") or self.rec.namespace}
        name = naming.http_route_name(self.rec.name)
        meta = naming.child_metadata(self.rec.td, name, stage="serving")
        desired = httproute.build(meta, gateway=gateway, hostnames=self.spec.get("hostnames") or [],
                                  stable_service=httproute.predictor_service(self.name),
                                  canary_service=httproute.predictor_service(canary_name) if canary_name else None,
                                  canary_weight=weight)
        _, action = self.rec.kube(lambda: self.rec.env.kube.ensure(HTTPROUTE, desired, owned=("spec",)))
        self.rec.created(HTTPROUTE, name, action)

    def _set_stable(self, version: str, storage: str) -> None:
        """All traffic to `version` on the stable InferenceService; the canary objects go."""
        if self.mode == KNATIVE:
            self._ensure_isvc(self.name, version, storage, canary_percent=100)
            return
        self._ensure_isvc(self.name, version, storage)
        if self.spec.get("canary") is not None or self._route_exists():
            self._ensure_route(None, 0)
        canary_name = naming.canary_inference_service_name(self.rec.name)
        self.rec.kube(lambda: self.rec.env.kube.delete(self.rec.INFERENCESERVICE, self.rec.namespace, canary_name))
        self.status["children"] = [c for c in self.status.get("children", []) if c.get("name") != canary_name
                                   or c.get("kind") != "InferenceService"]

    def _route_exists(self) -> bool:
        return any(c.get("kind") == HTTPROUTE.kind for c in self.status.get("children", []))

    def _observe(self, isvc: dict, state) -> None:
        self.serving.update({"inferenceServiceName": self.name, "ready": state.phase == SUCCEEDED})
        if state.outputs.get("url"):
            self.serving["url"] = state.outputs["url"]

    def _storage_of(self, version: str) -> str | None:
        for entry in self.status.get("rolloutHistory") or []:
            if entry.get("version") == version and entry.get("storageUri"):
                return entry["storageUri"]
        return None

    def _promote_alias(self, version: str) -> None:
        self.rec.move_alias(self.rec.ALIAS_CHAMPION, version)

    def _record(self, version: str, previous: str | None, result: str, reason: str, storage: str | None) -> None:
        history = [h for h in self.status.get("rolloutHistory") or []
                   if not (h.get("version") == version and h.get("result") == result)]
        entry = {"version": version, "result": result, "reason": reason[:1024], "at": self.rec.now}
        if previous:
            entry["previousVersion"] = previous
        if storage:
            entry["storageUri"] = storage
        self.status["rolloutHistory"] = ([entry] + history)[:HISTORY_LENGTH]

    def _wait(self, rollout: dict, message: str, after: float) -> None:
        rollout["message"] = message
        self.rec.stage_progress("deploying", message, after)


def _traffic(isvc: dict) -> list[dict]:
    return (((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}).get("traffic") or []


def _address(isvc: dict) -> str | None:
    status = isvc.get("status") or {}
    return ((status.get("components") or {}).get("predictor") or {}).get("url") or status.get("url") \
        or (status.get("address") or {}).get("url")


def _knative_canary_state(isvc: dict, weight: int) -> tuple[bool, str | None, str]:
    """Ready when the latest revision is ready and KServe reports the weight on it."""
    state = inferenceservice.read(isvc)
    predictor = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    latest = next((t for t in _traffic(isvc) if t.get("latestRevision")), None)
    if state.phase != SUCCEEDED:
        return False, None, state.message or state.reason or state.phase
    if predictor.get("latestReadyRevision") != predictor.get("latestCreatedRevision"):
        return False, None, f"revision {predictor.get('latestCreatedRevision')} is not ready"
    if latest is None or latest.get("percent") != weight:
        return False, None, f"KServe does not report {weight}% on the latest revision yet"
    return True, latest.get("url") or predictor.get("url") or _address(isvc), "ready"
