"""Reconciles one TrainDeploy: observe its children and the outside systems, act, compute status.

Level-triggered: every call recomputes from the spec, the status written last time and what
exists now, so an operator restarted at any point resumes without creating anything twice.
Children have deterministic names; the MLflow run, the model version and the KFP run are found
again by their tags or display names before anything is created.

`reconcile()` is synchronous (it runs in a worker thread) and returns the desired status, the
Events to post and when to look again; the handler writes the status only if it changed.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable

import requests

from traindeploy import GROUP, KIND, PLURAL, VERSION, kfp, naming, triggers
from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy.children import FAILED, SUCCEEDED, ChildState, inferenceservice, katib, pytorchjob, trainjob
from traindeploy.config import OperatorConfig
from traindeploy.kube import Kind, Kube, KubeError, KubeUnavailable
from traindeploy.serving import Serving
from traindeploy.mlflow_rest import (Credentials, MlflowApiError, MlflowRest, MlflowUnavailable,
                                    mlflow_artifacts_to_storage)

log = logging.getLogger(__name__)

TRAINDEPLOY = Kind(GROUP, VERSION, PLURAL, KIND)
PYTORCHJOB = Kind(pytorchjob.GROUP, pytorchjob.VERSION, pytorchjob.PLURAL, pytorchjob.KIND)
TRAINJOB = Kind(trainjob.GROUP, trainjob.VERSION, trainjob.PLURAL, trainjob.KIND)
EXPERIMENT = Kind(katib.GROUP, katib.VERSION, katib.PLURAL, katib.KIND)
INFERENCESERVICE = Kind(inferenceservice.GROUP, inferenceservice.VERSION, inferenceservice.PLURAL,
                        inferenceservice.KIND)
CHILD_KINDS = (PYTORCHJOB, TRAINJOB, EXPERIMENT, INFERENCESERVICE)

TRAINING_BACKENDS = {"PyTorchJob": (PYTORCHJOB, pytorchjob), "TrainJob": (TRAINJOB, trainjob)}

ALIAS_CHALLENGER = "challenger"
ALIAS_CHAMPION = "champion"  # moved by serving.py on promotion
TAG_PREFIX = "traindeploy.io/"
REGISTRATION_POLL = 5.0

DEFAULT_TIMEOUTS = {"pipeline": 21600, "tuning": 86400, "deploying": 1800}  # as the CRD defaults


@dataclass
class Environment:
    """What a reconciliation may use: the cluster, the configuration, shared HTTP sessions."""

    kube: Kube
    config: OperatorConfig
    http: requests.Session = field(default_factory=requests.Session)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict
    events: list[Event]
    requeue_after: float | None  # seconds; None: only watch events (and the resync) wake it
    blocked: bool = False  # waiting on an unavailable dependency: retry with backoff


class _Wait(Exception):
    """The current stage is in progress; look again after `after` seconds (None: on a watch event)."""

    def __init__(self, after: float | None = None) -> None:
        self.after = after


class _Fail(Exception):
    """The training cycle failed for good (until the spec changes)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class _Blocked(Exception):
    """An outside dependency is unavailable; retry with backoff."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class _InvalidSpec(_Fail):
    def __init__(self, message: str) -> None:
        super().__init__("InvalidSpec", message)


def reconcile(td: dict, env: Environment) -> Outcome:
    return _Reconciliation(td, env).run()


class _Reconciliation:
    def __init__(self, td: dict, env: Environment) -> None:
        self.td = td
        self.env = env
        self.meta = td["metadata"]
        self.name, self.namespace = self.meta["name"], self.meta["namespace"]
        self.spec = td.get("spec") or {}
        self.old = td.get("status") or {}
        self.status = copy.deepcopy(self.old)
        self.now_dt = env.clock()
        self.now = cond.now_rfc3339(self.now_dt)
        self.now_precise = cond.precise_rfc3339(self.now_dt)
        self.events: list[Event] = []
        self._mlflow_rest: MlflowRest | None = None
        self._secret_cache: dict[str, dict[str, str] | None] = {}
        self.schedule_check: float | None = None

    # -- driver --------------------------------------------------------------------------------

    def run(self) -> Outcome:
        status = self.status
        status["observedGeneration"] = self.meta.get("generation", 0)
        status.setdefault("conditions", [])
        self._serving: Serving | None = None
        if (status.get("serving") or {}).get("modelVersion"):
            try:
                Serving(self).manual_rollback()
            except (_Blocked, _Fail) as problem:
                self.events.append(Event("Warning", problem.reason, problem.message))
        self._start_cycle_if_needed()
        stages = lc.stages_for(self.spec)
        requeue: float | None = None
        blocked = False
        current: str | None = None
        failed = False
        try:
            if _is_failed(status):  # a failed cycle stays failed until the spec changes
                failed = True
                current = status.get("failedStage")
            else:
                for stage in stages:
                    current = stage
                    if self._stage_done(stage):
                        continue
                    getattr(self, f"_stage_{stage}")()
                    self._set_stage(stage, cond.TRUE, lc.STAGES[stage][0], self._stage_message(stage))
                current = None
        except _Wait as wait:
            requeue = wait.after
        except _Fail as failure:
            failed = True
            self._fail(current, failure.reason, failure.message)
        except _Blocked as block:
            blocked = True
            self._set_ready(cond.FALSE, block.reason, block.message)
            if current:
                self._set_stage(current, cond.UNKNOWN, block.reason, block.message)
        if not failed and not blocked:
            self._summarise(current)
        elif blocked:
            status["phase"] = lc.phase_of(current, False) if self._started(current) else lc.PHASE_PENDING
        self._transition_events()
        if status.get("phase") in triggers.FINISHED_PHASES and (status.get("retrain") or {}).get("queued"):
            requeue = 0.5  # a queued retrain starts as soon as this cycle's end is recorded
        if self.schedule_check is not None:
            requeue = self.schedule_check if requeue is None else min(requeue, self.schedule_check)
        return Outcome(status=status, events=self.events, requeue_after=requeue, blocked=blocked)

    def _start_cycle_if_needed(self) -> None:
        decision = triggers.decide(self.spec, self.meta.get("annotations") or {}, self.status, self.now_dt)
        self.schedule_check = decision.next_check
        if decision.retrain:
            self.status["retrain"] = decision.retrain
        if decision.start is None:
            return
        previous = self.status.get("cycle") or {}
        if decision.supersede:
            self._supersede_previous_cycle()
        generation = self.meta.get("generation", 1)
        retrain = 0
        if decision.start != "spec":
            retrain = previous.get("retrain", 0) + 1 if previous.get("generation") == generation else 1
        label = triggers.cycle_label(generation, retrain)
        self.status["cycle"] = {"generation": generation, "specHash": lc.training_spec_hash(self.spec),
                                "startedAt": self.now, "trigger": decision.start, "retrain": retrain,
                                "label": label}
        for key in lc.CYCLE_STATUS_KEYS:
            self.status.pop(key, None)
        kept = {cond.SERVING, cond.READY}
        self.status["conditions"] = [c for c in self.status.get("conditions", []) if c["type"] in kept]
        self.status["children"] = [c for c in self.status.get("children", [])
                                   if c.get("kind") == INFERENCESERVICE.kind or c.get("kind") == "HTTPRoute"]
        why = {"spec": f"generation {generation}"}.get(decision.start, decision.start)
        self.events.append(Event("Normal", "CycleStarted", f"Started training cycle {label} ({why})."))

    def _supersede_previous_cycle(self) -> None:
        """A newer spec supersedes a cycle still running: stop its jobs, they hold GPUs, and send
        the traffic of a rollout in progress back to the stable version."""
        if self.spec.get("serving") and (self.status.get("serving") or {}).get("modelVersion"):
            Serving(self).abort("A newer spec superseded this rollout.")
        training = self.status.get("training") or {}
        if training.get("name") and training.get("state") not in (SUCCEEDED, FAILED):
            kind, _ = TRAINING_BACKENDS.get(training.get("kind"), TRAINING_BACKENDS["PyTorchJob"])
            self._kube(lambda: self.env.kube.delete(kind, self.namespace, training["name"]))
        tuning = self.status.get("tuning") or {}
        if tuning.get("experimentName") and tuning.get("state") not in (SUCCEEDED, FAILED):
            self._kube(lambda: self.env.kube.delete(EXPERIMENT, self.namespace, tuning["experimentName"]))

    @property
    def generation(self) -> int:
        return self.status["cycle"]["generation"]

    @property
    def cycle(self) -> str:
        return self.status["cycle"].get("label") or triggers.cycle_label(self.generation, 0)

    def _stage_done(self, stage: str) -> bool:
        if stage == "deploying":  # serving is reconciled every time: its spec may change
            return False
        found = cond.get(self.status["conditions"], lc.STAGES[stage][0])
        return found is not None and found["status"] == cond.TRUE

    def _started(self, stage: str | None) -> bool:
        return stage is not None and cond.get(self.status["conditions"], lc.STAGES[stage][0]) is not None

    def _summarise(self, current: str | None) -> None:
        status = self.status
        status["phase"] = lc.phase_of(current, False)
        if current == "deploying" and self._serving is not None and self._serving.phase:
            status["phase"] = self._serving.phase
        if current is None:
            serving = status.get("serving") or {}
            self._set_ready(cond.TRUE, "Ready", f"Model {self.spec['model']['name']} version "
                            f"{serving.get('modelVersion')} is serving at {serving.get('url') or 'its service'}.")
        else:
            stage_condition = cond.get(status["conditions"], lc.STAGES[current][0])
            message = stage_condition["message"] if stage_condition else ""
            self._set_ready(cond.FALSE, lc.STAGES[current][1], message)

    def _fail(self, stage: str | None, reason: str, message: str) -> None:
        self.status["phase"] = lc.PHASE_FAILED
        if stage:
            self.status["failedStage"] = stage
            self._set_stage(stage, cond.FALSE, reason, message)
        if reason == "RolledBack":  # the stable version still serves: serving itself is fine
            stable = self.status["serving"].get("modelVersion")
            self._set_stage("deploying", cond.TRUE, "RolledBack",
                            f"Version {stable} serves all traffic after a rollback: {message}")
        self._set_ready(cond.FALSE, reason, message)

    # -- conditions and events -------------------------------------------------------------------

    def _set_stage(self, stage: str, status: str, reason: str, message: str) -> None:
        self._set(lc.STAGES[stage][0], status, reason, message)

    def _set_ready(self, status: str, reason: str, message: str) -> None:
        self._set(cond.READY, status, reason, message)

    def _set(self, condition_type: str, status: str, reason: str, message: str) -> None:
        self.status["conditions"] = cond.set_condition(
            self.status["conditions"], condition_type, status, reason, message,
            self.meta.get("generation", 0), self.now)

    def _transition_events(self) -> None:
        """One Event per stage condition that changed status or reason, and one when Ready."""
        before = {c["type"]: c for c in self.old.get("conditions") or []}
        for after in self.status["conditions"]:
            previous = before.get(after["type"])
            if previous and (previous["status"], previous.get("reason")) == (after["status"], after["reason"]):
                continue
            if after["type"] == cond.READY:
                if after["status"] == cond.TRUE:
                    self.events.append(Event("Normal", after["reason"], after["message"]))
                continue  # failures and waits are told by the stage conditions
            trouble = after["status"] == cond.FALSE or (
                after["status"] == cond.UNKNOWN and after["reason"] not in lc.IN_PROGRESS_REASONS)
            self.events.append(Event("Warning" if trouble else "Normal", after["reason"], after["message"]))

    def _created(self, kind: Kind, name: str, action: str) -> None:
        ref = {"apiVersion": kind.api_version, "kind": kind.kind, "name": name}
        children = self.status.setdefault("children", [])
        if ref not in children:
            children.append(ref)
        if action == "created":
            self.events.append(Event("Normal", "Created", f"Created {kind.kind} {self.namespace}/{name}."))

    def _stage_message(self, stage: str) -> str:
        s = self.status
        return {
            "pipeline": lambda: f"KFP run {s['pipeline'].get('runId')} succeeded.",
            "tuning": lambda: f"Best trial {s['tuning'].get('bestTrialName')} with "
                              f"{self.spec['tuning']['objective']['metricName']}="
                              f"{s['tuning'].get('bestObjectiveValue')}.",
            "training": lambda: f"{s['training'].get('kind')} {s['training'].get('name')} succeeded.",
            "gate": lambda: lc.gate_message(s["model"]["metric"]["name"], s["model"]["metric"]["value"],
                                            self.spec["gate"], True) if self.spec.get("gate")
            else "No gate configured.",
            "registering": lambda: f"Registered {s['model'].get('name')} version {s['model'].get('version')}.",
            "deploying": lambda: f"InferenceService {s['serving'].get('inferenceServiceName')} is ready "
                                 f"with version {s['serving'].get('modelVersion')}.",
        }[stage]()

    def _running(self, stage: str, message: str, started_at: str, timeout: float | None,
                 on_timeout: Callable[[], None] | None = None, poll: float | None = None) -> None:
        """Marks a stage in progress; fails it past its deadline; otherwise waits."""
        self._set_stage(stage, cond.UNKNOWN, lc.STAGES[stage][1], message)
        remaining = None
        if timeout:
            started = cond.parse_time(started_at) or self.now_dt
            remaining = timeout - (self.now_dt - started).total_seconds()
            if remaining <= 0:
                if on_timeout is not None:
                    on_timeout()
                raise _Fail(lc.DEADLINE_REASONS[stage], f"{message} Deadline of {int(timeout)}s exceeded.")
        waits = [w for w in (poll, remaining) if w is not None]
        raise _Wait(max(1.0, min(waits)) if waits else None)

    # -- outside systems -------------------------------------------------------------------------

    def _kube(self, call):
        try:
            return call()
        except KubeUnavailable as error:
            raise _Blocked("KubernetesUnavailable", str(error)) from None
        except KubeError as error:
            message = str(error)
            if "is not served by this cluster" in message:
                raise _Blocked("ChildKindNotInstalled", message) from None
            raise _InvalidSpec(message) from None

    def _secret(self, name: str) -> dict[str, str]:
        if name not in self._secret_cache:
            self._secret_cache[name] = self._kube(lambda: self.env.kube.secret_data(self.namespace, name))
        data = self._secret_cache[name]
        if data is None:
            raise _Blocked("SecretNotFound", f"Secret {self.namespace}/{name} does not exist.")
        return data

    def _mlflow_settings(self) -> tuple[str, str, str | None]:
        mlflow_spec = self.spec.get("mlflow") or {}
        uri = mlflow_spec.get("trackingUri") or self.env.config.mlflow_tracking_uri
        if not uri:
            raise _InvalidSpec("spec.mlflow.trackingUri is not set and the operator has no default MLflow URI.")
        experiment = mlflow_spec.get("experimentName") or f"traindeploy/{self.namespace}/{self.name}"
        secret = (mlflow_spec.get("credentialsSecretRef") or {}).get("name")
        return uri, experiment, secret

    def _mlflow_client(self) -> MlflowRest:
        if self._mlflow_rest is None:
            uri, _, secret_name = self._mlflow_settings()
            credentials = None
            if secret_name:
                data = self._secret(secret_name)
                credentials = Credentials(token=data.get("MLFLOW_TRACKING_TOKEN"),
                                          username=data.get("MLFLOW_TRACKING_USERNAME"),
                                          password=data.get("MLFLOW_TRACKING_PASSWORD"))
            self._mlflow_rest = MlflowRest(uri, credentials, timeout=self.env.config.http_timeout,
                                           session=self.env.http)
        return self._mlflow_rest

    def _mlflow(self, call):
        try:
            return call(self._mlflow_client())
        except MlflowUnavailable as error:
            uri = self._mlflow_settings()[0]
            raise _Blocked("MLflowUnavailable", f"MLflow at {uri} is unavailable: {error}") from None
        except MlflowApiError as error:
            raise _Fail("MLflowError", f"MLflow refused a request: {error}") from None

    def _training_env(self, with_run: bool) -> list[dict]:
        uri, experiment, secret_name = self._mlflow_settings()
        keys = sorted(self._secret(secret_name)) if secret_name else []
        run_id = (self.status.get("training") or {}).get("mlflowRunId") if with_run else None
        return lc.mlflow_env(uri, experiment, run_id, secret_name, keys)

    def _lineage_tags(self) -> dict[str, str]:
        tags = {
            f"{TAG_PREFIX}namespace": self.namespace,
            f"{TAG_PREFIX}name": self.name,
            f"{TAG_PREFIX}uid": self.meta["uid"],
            f"{TAG_PREFIX}generation": str(self.generation),
            f"{TAG_PREFIX}cycle": self.cycle,
        }
        if (self.status.get("pipeline") or {}).get("runId"):
            tags[f"{TAG_PREFIX}kfp-run-id"] = self.status["pipeline"]["runId"]
        if (self.status.get("tuning") or {}).get("bestTrialName"):
            tags[f"{TAG_PREFIX}katib-best-trial"] = self.status["tuning"]["bestTrialName"]
        if (self.status.get("training") or {}).get("name"):
            tags[f"{TAG_PREFIX}training-job"] = self.status["training"]["name"]
        return tags

    def _identity_tags(self) -> dict[str, str]:
        return {f"{TAG_PREFIX}uid": self.meta["uid"], f"{TAG_PREFIX}cycle": self.cycle}

    # -- stages ------------------------------------------------------------------------------------

    def _stage_pipeline(self) -> None:
        spec = self.spec["pipeline"]
        record = self.status.setdefault("pipeline", {})
        record.setdefault("startedAt", self.now)
        endpoint = spec.get("endpoint") or self.env.config.kfp_endpoint
        if not endpoint:
            raise _InvalidSpec("spec.pipeline.endpoint is not set and the operator has no default KFP endpoint.")
        token = None
        if spec.get("tokenSecretRef"):
            ref = spec["tokenSecretRef"]
            token = self._secret(ref["name"]).get(ref.get("key", "token"))
            if token is None:
                raise _Blocked("SecretNotFound", f"Secret {self.namespace}/{ref['name']} has no key "
                                                 f"{ref.get('key', 'token')}.")
        client = kfp.KfpClient(endpoint, token=token, timeout=self.env.config.http_timeout, session=self.env.http)
        display_name = naming.pipeline_run_name(self.namespace, self.name, self.cycle)
        try:
            if record.get("runId"):
                run = client.get_run(record["runId"])
            else:
                experiment_id = client.ensure_experiment(
                    spec.get("experimentName") or f"traindeploy-{self.namespace}-{self.name}")
                record["experimentId"] = experiment_id
                run = client.find_run(experiment_id, display_name)
                if run is None:
                    package = self._pipeline_package(spec)
                    run = client.create_run(experiment_id, display_name, package, spec.get("parameters") or {},
                                            description=f"TrainDeploy {self.namespace}/{self.name} "
                                                        f"cycle {self.cycle}")
                    self.events.append(Event("Normal", "PipelineSubmitted",
                                             f"Submitted KFP run {run.get('run_id')} ({display_name})."))
        except kfp.KfpUnavailable as error:
            raise _Blocked("KFPUnavailable", f"KFP at {endpoint} is unavailable: {error}") from None
        except kfp.KfpError as error:
            raise _Fail("PipelineSubmissionFailed", f"KFP refused the run: {error}") from None
        state = kfp.run_state(run)
        record.update({"runId": run.get("run_id"), "state": run.get("state") or "PENDING"})
        if self.env.config.kfp_ui_endpoint or endpoint:
            record["url"] = kfp.run_url(self.env.config.kfp_ui_endpoint or endpoint, run["run_id"])
        if state.phase == SUCCEEDED:
            return
        if state.phase == FAILED:
            raise _Fail("PipelineFailed", f"KFP run {record['runId']} ended {record['state']}: "
                                          f"{state.message or 'no error given'}")

        def terminate() -> None:
            try:
                client.terminate_run(record["runId"])
            except (kfp.KfpUnavailable, kfp.KfpError) as error:
                log.warning("could not terminate KFP run %s: %s", record["runId"], error)

        self._running("pipeline", f"KFP run {record['runId']} is {record['state']}.", record["startedAt"],
                      spec.get("timeoutSeconds") or DEFAULT_TIMEOUTS["pipeline"], terminate,
                      poll=self.env.config.poll_interval)

    def _pipeline_package(self, spec: dict) -> dict:
        source = spec.get("package") or {}
        if source.get("configMapKeyRef"):
            ref = source["configMapKeyRef"]
            data = self._kube(lambda: self.env.kube.config_map_data(self.namespace, ref["name"]))
            if data is None or ref["key"] not in data:
                raise _Blocked("PipelinePackageNotFound",
                               f"ConfigMap {self.namespace}/{ref['name']} has no key {ref['key']}.")
            text = data[ref["key"]]
        elif source.get("url"):
            try:
                response = self.env.http.get(source["url"], timeout=self.env.config.http_timeout)
            except requests.RequestException as error:
                raise _Blocked("PipelinePackageUnavailable", f"Could not fetch {source['url']}: "
                                                             f"{type(error).__name__}") from None
            if response.status_code != 200:
                raise _Blocked("PipelinePackageUnavailable",
                               f"Fetching {source['url']} answered HTTP {response.status_code}.")
            text = response.text
        else:
            raise _InvalidSpec("spec.pipeline.package needs configMapKeyRef or url.")
        try:
            return kfp.load_pipeline_package(text)
        except ValueError as error:
            raise _InvalidSpec(f"spec.pipeline.package is not a compiled KFP pipeline: {error}") from None

    def _stage_tuning(self) -> None:
        tuning, training = self.spec["tuning"], self.spec["training"]
        record = self.status.setdefault("tuning", {})
        record.setdefault("startedAt", self.now)
        name = naming.experiment_name(self.name, self.cycle)
        meta = naming.child_metadata(self.td, name, self.cycle, "tuning")
        desired = katib.build(meta, tuning, training, env=self._training_env(with_run=False),
                              hyperparameters=lc.effective_hyperparameters(training, None),
                              gpu_resource=self.env.config.gpu_resource)
        # Katib forbids most spec changes after creation; a new spec is a new cycle and name.
        experiment, action = self._kube(lambda: self.env.kube.ensure(EXPERIMENT, desired, owned=()))
        self._created(EXPERIMENT, name, action)
        state = katib.read(experiment)
        record.update({"experimentName": name, "state": state.phase})
        for key in ("bestTrialName", "bestParameters", "bestObjectiveValue"):
            if state.outputs.get(key) not in (None, {}, ""):
                record[key] = state.outputs[key]
        if state.phase == SUCCEEDED:
            if not record.get("bestParameters"):
                raise _Fail("NoBestTrial", f"Experiment {name} succeeded without a best trial.")
            return
        if state.phase == FAILED:
            raise _Fail("TuningFailed", f"Experiment {name} failed ({state.reason}): {state.message}")
        trials = state.outputs.get("trials")
        progress = f" {trials} trials so far." if trials else ""
        self._running("tuning", f"Experiment {name} is {state.phase.lower()}.{progress}", record["startedAt"],
                      tuning.get("timeoutSeconds") or DEFAULT_TIMEOUTS["tuning"],
                      lambda: self._kube(lambda: self.env.kube.delete(EXPERIMENT, self.namespace, name)))

    def _stage_training(self) -> None:
        training = self.spec["training"]
        record = self.status.setdefault("training", {})
        record.setdefault("startedAt", self.now)
        if not record.get("mlflowRunId"):
            _, experiment_name, _ = self._mlflow_settings()

            def find_or_create_run(client: MlflowRest) -> tuple[str, dict]:
                experiment_id = client.get_or_create_experiment(experiment_name)
                run = client.find_run(experiment_id, self._identity_tags())
                if run is None:
                    run = client.create_run(experiment_id, f"{self.name}-{self.cycle}", self._lineage_tags())
                return experiment_id, run

            experiment_id, run = self._mlflow(find_or_create_run)
            record.update({"mlflowRunId": _run_id(run), "mlflowExperimentId": experiment_id})
        backend = training.get("backend", "PyTorchJob")
        kind, module = TRAINING_BACKENDS[backend]
        name = naming.training_job_name(self.name, self.cycle)
        record.update({"kind": kind.kind, "name": name})
        meta = naming.child_metadata(self.td, name, self.cycle, "training")
        best = (self.status.get("tuning") or {}).get("bestParameters")
        desired = module.build(meta, training, env=self._training_env(with_run=True),
                               hyperparameters=lc.effective_hyperparameters(training, best),
                               gpu_resource=self.env.config.gpu_resource)
        job, action = self._kube(lambda: self.env.kube.ensure(kind, desired, owned=()))
        self._created(kind, name, action)
        state: ChildState = module.read(job)
        record["state"] = state.phase
        if state.phase == SUCCEEDED:
            return
        if state.phase == FAILED:
            raise _Fail("TrainingFailed", f"{kind.kind} {name} failed ({state.reason}): {state.message}")
        deadline = training.get("activeDeadlineSeconds")
        timeout = deadline + self.env.config.deadline_grace if deadline else None
        self._running("training", f"{kind.kind} {name} is {state.phase.lower()}.", record["startedAt"], timeout,
                      lambda: self._kube(lambda: self.env.kube.delete(kind, self.namespace, name)))

    def _stage_gate(self) -> None:
        run_id = self.status["training"]["mlflowRunId"]
        model = self.status.setdefault("model", {"name": self.spec["model"]["name"]})
        gate = self.spec.get("gate")
        if not gate:
            return
        run = self._mlflow(lambda client: client.get_run(run_id))
        value = (run.get("metrics") or {}).get(gate["metric"])
        if value is None:
            raise _Fail("GateMetricMissing", f"MLflow run {run_id} has no metric {gate['metric']}.")
        passed = lc.gate_passes(float(value), gate)
        message = lc.gate_message(gate["metric"], float(value), gate, passed)
        model["metric"] = {"name": gate["metric"], "value": float(value), "threshold": float(gate["threshold"]),
                           "passed": passed}
        if not passed:
            raise _Fail("GateFailed", f"{message}; nothing is registered or deployed.")

    def _stage_registering(self) -> None:
        model_name = self.spec["model"]["name"]
        run_id = self.status["training"]["mlflowRunId"]
        model = self.status.setdefault("model", {"name": model_name})

        def register(client: MlflowRest) -> dict | None:
            client.ensure_registered_model(model_name)
            version = client.find_model_version(model_name, self._identity_tags())
            if version is None:
                run = client.get_run(run_id)
                logged = client.logged_model_for_run(run)
                if logged is None:
                    return None
                version = client.create_model_version(
                    model_name, f"models:/{logged['model_id']}", run_id, model_id=logged["model_id"],
                    tags=self._lineage_tags(),
                    description=f"Trained by TrainDeploy {self.namespace}/{self.name}, cycle {self.cycle}.")
                self.events.append(Event("Normal", "ModelVersionCreated",
                                         f"Created {model_name} version {version['version']} from run {run_id}."))
            return version

        version = self._mlflow(register)
        if version is None:
            raise _Fail("NoLoggedModel", f"MLflow run {run_id} logged no model to register.")
        model.update({"version": version["version"], "source": version.get("source")})
        if version.get("status") == "FAILED_REGISTRATION":
            raise _Fail("RegistrationFailed", f"MLflow could not register {model_name} version {version['version']}.")
        if version.get("status") != "READY":
            self._set_stage("registering", cond.UNKNOWN, lc.STAGES["registering"][1],
                            f"{model_name} version {version['version']} is {version.get('status')}.")
            raise _Wait(REGISTRATION_POLL)

        def finish(client: MlflowRest) -> str:
            if client.alias_version(model_name, ALIAS_CHALLENGER) != version["version"]:
                client.set_alias(model_name, ALIAS_CHALLENGER, version["version"])
            return client.download_uri(model_name, version["version"])

        storage = self._mlflow(finish)
        destination = self.env.config.mlflow_artifacts_destination
        if destination:
            storage = mlflow_artifacts_to_storage(storage, destination)
        if storage.startswith("mlflow-artifacts:"):
            raise _Fail("StorageNotResolvable",
                        f"MLflow stores version {version['version']} at {storage}, which KServe cannot read: "
                        "set the operator's TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION to the server's "
                        "--artifacts-destination.")
        model["storageUri"] = storage

    def _stage_deploying(self) -> None:
        self._serving = Serving(self)
        self._serving.run()

    # -- what the serving stage uses -----------------------------------------------------------------

    INFERENCESERVICE = INFERENCESERVICE
    ALIAS_CHAMPION = ALIAS_CHAMPION
    DEFAULT_TIMEOUTS = DEFAULT_TIMEOUTS

    def event(self, type_: str, reason: str, message: str) -> Event:
        return Event(type_, reason, message)

    def fail(self, reason: str, message: str) -> _Fail:
        return _Fail(reason, message)

    def invalid(self, message: str) -> _Fail:
        return _InvalidSpec(message)

    def running(self, stage: str, message: str, started_at: str, timeout: float | None) -> None:
        self._running(stage, message, started_at, timeout)

    def stage_waiting(self, stage: str, message: str) -> None:
        """Paused until a person acts (an annotation wakes the loop)."""
        self._set_stage(stage, cond.UNKNOWN, "AwaitingApproval", message)
        raise _Wait(None)

    def stage_progress(self, stage: str, message: str, after: float) -> None:
        self._set_stage(stage, cond.UNKNOWN, "Canary", message)
        raise _Wait(max(0.5, after))

    def kube(self, call):
        return self._kube(call)

    def created(self, kind: Kind, name: str, action: str) -> None:
        self._created(kind, name, action)

    def move_alias(self, alias: str, version: str) -> None:
        model_name = self.spec["model"]["name"]

        def move(client: MlflowRest) -> None:
            if client.alias_version(model_name, alias) != version:
                client.set_alias(model_name, alias, version)
                self.events.append(Event("Normal", "AliasMoved",
                                         f"Moved alias {alias} of {model_name} to version {version}."))

        self._mlflow(move)


def _is_failed(status: dict) -> bool:
    return status.get("phase") == lc.PHASE_FAILED


def _run_id(run: dict) -> str:
    return run.get("run_id") or (run.get("info") or {}).get("run_id")
