"""The canary step machine without a cluster: a fake clock, fake clients, and the test writing the
InferenceService status as KServe would (Knative: `components.predictor.traffic`; Standard: a
second InferenceService and the HTTPRoute's weights). Each table row is a rollout's situation and
what the next pass must do."""

from __future__ import annotations

import pytest

from traindeploy import serving
from traindeploy.results import Done, Fail, Wait
from unit.fakes import Clock, FakeKube, FakeMlflow, ProbedUrls, environment, minimal_spec, run_stage, traindeploy

STABLE, CANARY = "1", "2"


def _status() -> dict:
    """Version 1 serves everything; version 2 has just been registered."""
    return {"cycle": {"generation": 2, "label": "g2", "specHash": "x", "startedAt": "2026-12-01T12:00:00Z"},
            "serving": {"modelVersion": STABLE, "storageUri": "s3://models/m/1", "inferenceServiceName": "churn",
                        "traffic": "v1 100%"},
            "model": {"name": "churn-model", "version": CANARY, "storageUri": "s3://models/m/2"},
            "conditions": []}


def _knative_status(isvc: dict, ready: bool = True) -> dict:
    """What KServe reports in Knative mode for the percent the spec asks."""
    percent = isvc["spec"]["predictor"].get("canaryTrafficPercent")
    latest = "churn-predictor-00002"
    if percent is None or percent >= 100:
        traffic = [{"revisionName": latest, "latestRevision": True, "percent": 100}]
    else:
        # Knative gives only tagged targets a URL; KServe tags `latest` only with tag routing
        # (reconcilers/knative/ksvc_reconciler.go @ v0.20.0).
        traffic = [{"revisionName": latest, "latestRevision": True, "percent": percent},
                   {"revisionName": "churn-predictor-00001", "latestRevision": False, "tag": "prev",
                    "percent": 100 - percent, "url": "http://prev-churn-predictor.ml.example.com"}]
        if (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/enable-tag-routing") == "true":
            traffic[0].update({"tag": "latest", "url": "http://latest-churn-predictor.ml.example.com"})
    return {"url": "http://churn.ml.example.com",
            "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}],
            "components": {"predictor": {"latestCreatedRevision": latest,
                                         "latestReadyRevision": latest if ready else "churn-predictor-00001",
                                         "traffic": traffic}}}


def _failed_load(status: dict) -> dict:
    """The newest revision's model failed to load, as KServe reports it (Ready copied from the
    ksvc, modelStatus BlockedByFailedLoad; UPSTREAM.md 4.4)."""
    return {**status, "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed",
                                      "message": "model failed to load"}],
            "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                            "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "model failed to load"}}}


class Rollout:
    """One TrainDeploy's rollout, pass after pass, with KServe played by `answer`."""

    def __init__(self, canary: dict, mode: str = "Knative", approval: str | None = None,
                 point: str | None = None, ready: bool = True, gateway: bool = True,
                 failed_load: bool = False) -> None:
        self.failed_load = failed_load
        self.kube, self.mlflow, self.clock = FakeKube(), FakeMlflow(), Clock()
        serving_spec = {"deploymentMode": mode, "canary": canary}
        if approval:
            serving_spec["approval"] = approval
        if point:
            serving_spec["approvalPoint"] = point
        if gateway:
            serving_spec["gateway"] = {"name": "gw", "namespace": "gateways"}
        self.spec = minimal_spec(serving=serving_spec)
        self.status = _status()
        self.annotations: dict[str, str] = {}
        self.ready = ready
        self.env = environment(self.kube, self.mlflow, self.clock)
        self.events: list = []

    def step(self):
        outcome = run_stage(serving.STAGE, traindeploy(self.spec, self.status, annotations=self.annotations,
                                                       generation=2), self.env)
        self.status, self.events = outcome.status, outcome.events
        self.canary_outcomes = outcome.canary_outcomes
        self.answer()
        return outcome.result

    def answer(self) -> None:
        for (plural, name), obj in list(self.kube.objects.items()):
            if plural == "inferenceservices":
                if name == "churn" and self.spec["serving"]["deploymentMode"] == "Knative":
                    obj["status"] = _knative_status(obj, self.ready)
                    if self.failed_load and obj["status"]["components"]["predictor"]["latestReadyRevision"] != \
                            obj["status"]["components"]["predictor"]["latestCreatedRevision"]:
                        obj["status"] = _failed_load(obj["status"])
                elif self.failed_load and name == "churn-canary":
                    obj["status"] = _failed_load({"address": {"url": "http://churn-canary-predictor.ml.svc"}})
                else:
                    ready = self.ready or name == "churn"
                    if ready:
                        self.kube.predictor_deployment(name, obj["spec"]["predictor"]["model"]["storageUri"])
                    obj["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                                     "reason": "" if ready else "MinimumReplicasUnavailable"}],
                                     "address": {"url": f"http://{name}-predictor.ml.svc.cluster.local"}}

    def isvc(self, name: str = "churn") -> dict | None:
        return self.kube.object("inferenceservices", name)

    def route_weights(self) -> list[int]:
        route = self.kube.object("httproutes", "churn")
        return [ref.get("weight") for ref in route["spec"]["rules"][0]["backendRefs"]]

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


PROBE = {"path": "/v2/models/churn/infer", "body": "{}"}


def test_knative_analysis_probes_the_canary_revision_alone():
    rollout = Rollout({"steps": [10, 100], "stepIntervalSeconds": 60, "analysis": {"probe": PROBE}})
    rollout.env.http = probed = ProbedUrls()
    rollout.step()
    annotations = rollout.isvc()["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-tag-routing"] == "true", "KServe tags revisions only when asked"
    rollout.step()
    rollout.clock.advance(61)
    rollout.step()
    assert probed.urls == ["http://latest-churn-predictor.ml.example.com/v2/models/churn/infer"], \
        "the latest revision's tagged URL, not the service URL that splits traffic"


def test_knative_analysis_without_a_tagged_url_does_not_probe_the_split():
    rollout = Rollout({"steps": [10, 100], "stepIntervalSeconds": 60, "readyTimeoutSeconds": 3600,
                       "analysis": {"probe": PROBE}})
    rollout.env.http = probed = ProbedUrls()
    real_answer = rollout.answer

    def untagged_answer():  # a KServe that does not tag (the annotation dropped)
        real_answer()
        isvc = rollout.isvc()
        if isvc is not None and isvc.get("status"):
            for target in isvc["status"]["components"]["predictor"]["traffic"]:
                if target.get("latestRevision"):
                    target.pop("tag", None)
                    target.pop("url", None)

    rollout.answer = untagged_answer
    rollout.step()
    rollout.clock.advance(61)
    result = rollout.step()
    assert isinstance(result, Wait) and "tagged URL" in result.message
    assert probed.urls == []


def test_standard_analysis_probes_the_canary_in_cluster():
    rollout = Rollout({"steps": [10, 100], "stepIntervalSeconds": 60, "analysis": {"probe": PROBE}},
                      mode="Standard")
    rollout.env.http = probed = ProbedUrls()
    rollout.step()
    canary = rollout.isvc("churn-canary")
    canary["status"]["components"] = {"predictor": {"url": "http://churn-canary-predictor-ml.example.com"}}
    rollout.clock.advance(61)
    outcome = run_stage(serving.STAGE, traindeploy(rollout.spec, rollout.status, generation=2), rollout.env)
    assert isinstance(outcome.result, Wait)
    assert probed.urls == ["http://churn-canary-predictor.ml.svc.cluster.local/v2/models/churn/infer"], \
        "status.address.url, not the ingress host"


def test_knative_rollout_walks_every_step_on_the_clock():
    rollout = Rollout({"steps": [10, 50, 100], "stepIntervalSeconds": 60})
    first = rollout.step()
    assert isinstance(first, Wait) and first.phase == "Canary"
    assert rollout.isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert {"RolloutStarted", "CanaryStep"} <= set(rollout.reasons())
    waiting = rollout.step()  # KServe reports 10% now: the interval counts
    assert isinstance(waiting, Wait) and 59 <= waiting.after <= 60
    assert rollout.status["serving"]["traffic"] == "v1 90%, v2 10%"
    rollout.clock.advance(60)
    moved = rollout.step()
    assert isinstance(moved, Wait) and rollout.isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert rollout.status["rollout"]["step"] == 1
    rollout.clock.advance(30)
    early = rollout.step()
    assert isinstance(early, Wait) and rollout.status["rollout"]["weight"] == 50, "not before the interval"
    rollout.clock.advance(30)
    promoting = rollout.step()  # the last step is 100: promotion sets 100 and waits for KServe
    assert isinstance(promoting, Wait) and rollout.isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 100
    done = rollout.step()
    assert isinstance(done, Done)
    assert rollout.status["serving"]["modelVersion"] == CANARY
    assert rollout.status["rollout"]["state"] == "Promoted"
    assert rollout.mlflow.aliases[("churn-model", "champion")] == CANARY
    assert rollout.status["rolloutHistory"][0]["result"] == "Promoted"
    assert rollout.canary_outcomes == [("promoted", "Promoted")]  # for traindeploy_canary_outcomes_total


@pytest.mark.parametrize(("reason", "mode"), [("Knative", "Knative"), ("Standard", "Standard")])
def test_a_canary_not_ready_in_time_is_rolled_back(reason, mode):
    rollout = Rollout({"steps": [20, 100], "stepIntervalSeconds": 60, "readyTimeoutSeconds": 120}, mode=mode,
                      ready=False)
    assert isinstance(rollout.step(), Wait)
    not_ready = rollout.step()
    assert isinstance(not_ready, Wait) and "not ready" in not_ready.message
    rollout.clock.advance(121)
    result = rollout.step()
    assert isinstance(result, Fail) and result.reason == "RolledBack", reason
    assert rollout.status["rollout"]["failedVersions"] == [CANARY]
    assert rollout.status["serving"]["traffic"] == "v1 100%"
    assert "RolledBack" in rollout.reasons()
    assert rollout.canary_outcomes == [("rolled_back", "NotReady")]
    if mode == "Knative":
        assert rollout.isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 0
    else:
        assert rollout.isvc("churn-canary") is None, "the canary InferenceService goes"
        assert rollout.route_weights() == [100]
    assert ("churn-model", "champion") not in rollout.mlflow.aliases, "champion moves only on promotion"


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_a_canary_whose_model_fails_to_load_is_rolled_back_at_once(mode):
    rollout = Rollout({"steps": [20, 100], "stepIntervalSeconds": 60, "readyTimeoutSeconds": 3600}, mode=mode,
                      ready=False, failed_load=True)
    results, outcomes = [], []
    for _ in range(3):  # the clock never moves: no waiting for readyTimeoutSeconds
        results.append(rollout.step())
        outcomes += rollout.canary_outcomes
    failed = [r for r in results if isinstance(r, Fail)]
    assert failed and failed[0].reason == "RolledBack" and "failed" in failed[0].message, results
    assert rollout.status["rollout"]["failedVersions"] == [CANARY]
    assert rollout.status["serving"]["traffic"] == "v1 100%"
    assert outcomes == [("rolled_back", "NotReady")]


def test_a_failure_from_before_the_canarys_revision_does_not_roll_it_back():
    """The object a patch returns can still carry an earlier version's failed load: until KServe
    reports a revision of the canary's own, that is no reason to roll back."""
    rollout = Rollout({"steps": [20, 100], "stepIntervalSeconds": 60, "readyTimeoutSeconds": 3600}, ready=False)
    rollout.step()
    isvc = rollout.isvc()
    replaced = rollout.status["serving"].get("replacedRevision", {}).get("revision")
    isvc["status"] = _failed_load({**isvc["status"], "components": {"predictor": {
        "latestCreatedRevision": replaced, "latestReadyRevision": replaced, "traffic": []}}})
    result = run_stage(serving.STAGE, traindeploy(rollout.spec, rollout.status, generation=2), rollout.env).result
    assert isinstance(result, Wait), result


def test_standard_rollout_weights_the_route_and_promotes_onto_the_stable_service():
    rollout = Rollout({"steps": [25, 100], "stepIntervalSeconds": 10}, mode="Standard")
    assert isinstance(rollout.step(), Wait)
    assert rollout.route_weights() == [75, 25]
    assert rollout.isvc("churn-canary")["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/2"
    rollout.clock.advance(10)
    promoting = rollout.step()  # the stable variant gets version 2; its Deployment still runs version 1
    assert isinstance(promoting, Wait) and "churn-predictor does not run s3://models/m/2" in promoting.message
    assert rollout.isvc("churn-canary") is not None, "the canary serves until the stable variant does"
    assert rollout.route_weights() == [75, 25]
    assert rollout.status["serving"]["modelVersion"] == STABLE
    assert ("churn-model", "champion") not in rollout.mlflow.aliases
    assert isinstance(rollout.step(), Done)  # KServe rolled the stable Deployment out
    assert rollout.isvc()["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/2"
    assert rollout.isvc("churn-canary") is None
    assert rollout.route_weights() == [100]
    assert rollout.mlflow.aliases[("churn-model", "champion")] == CANARY


def test_standard_canary_without_a_gateway_names_the_field():
    rollout = Rollout({"steps": [25, 100]}, mode="Standard", gateway=False)
    result = rollout.step()
    assert isinstance(result, Fail) and result.reason == "InvalidSpec"
    assert result.message.startswith("spec.serving.gateway")


@pytest.mark.parametrize(("reason", "point", "annotation_steps"), [
    ("approval before the first step", "BeforeFirstStep", 0),
    ("approval before promotion", "BeforePromotion", 2),
])
def test_manual_approval_pauses_until_the_right_version_is_named(reason, point, annotation_steps):
    rollout = Rollout({"steps": [50, 100], "stepIntervalSeconds": 10}, approval="Manual", point=point)
    result = None
    for _ in range(annotation_steps):
        result = rollout.step()
        rollout.clock.advance(10)
    result = rollout.step()
    assert isinstance(result, Wait) and result.phase == "AwaitingApproval" and result.after is None, reason
    assert rollout.status["rollout"]["awaitingApproval"] == CANARY
    rollout.annotations["traindeploy.io/approve"] = "7"
    ignored = rollout.step()
    assert isinstance(ignored, Wait) and "ApprovalIgnored" in rollout.reasons()
    rollout.annotations["traindeploy.io/approve"] = "v2"
    results = [rollout.step() for _ in range(3)]
    rollout.clock.advance(10)
    results += [rollout.step() for _ in range(3)]
    assert any(isinstance(r, Done) for r in results)
    assert rollout.status["serving"]["modelVersion"] == CANARY


def test_manual_rollback_annotation_sends_traffic_back_once():
    rollout = Rollout({"steps": [10, 100], "stepIntervalSeconds": 10})
    rollout.status["rolloutHistory"] = [{"version": STABLE, "result": "Promoted", "storageUri": "s3://models/m/1",
                                         "at": "2026-12-01T11:00:00Z", "reason": "Rolled out."}]
    rollout.status["serving"].update({"modelVersion": CANARY, "storageUri": "s3://models/m/2"})
    rollout.status["model"]["version"] = CANARY
    assert isinstance(rollout.step(), Done)  # version 2 serves
    rollout.annotations["traindeploy.io/rollback"] = "1"
    from traindeploy.context import Pass
    from traindeploy.serving import rollback
    from traindeploy.serving.state import Serving

    p = Pass(traindeploy(rollout.spec, rollout.status, annotations=rollout.annotations, generation=2), rollout.env)
    rollback.manual_rollback(Serving.of(p))
    assert p.status["serving"]["modelVersion"] == STABLE
    assert p.status["rollout"]["failedVersions"] == [CANARY]
    assert [e.reason for e in p.events][-1] == "ManualRollback"
    again = Pass(traindeploy(rollout.spec, p.status, annotations=rollout.annotations, generation=2), rollout.env)
    rollback.manual_rollback(Serving.of(again))
    assert not again.events, "the same annotation value acts once"


def test_a_knative_rollback_leaves_no_zero_percent_behind_for_the_next_version():
    rollout = Rollout({"steps": [20, 100], "stepIntervalSeconds": 60, "readyTimeoutSeconds": 10}, ready=False)
    rollout.step()
    rollout.clock.advance(11)
    assert isinstance(rollout.step(), Fail)
    assert rollout.isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 0
    rollout.ready = True
    assert isinstance(rollout.step(), Done)  # version 1 keeps serving, the object follows the spec
    assert "canaryTrafficPercent" not in rollout.isvc()["spec"]["predictor"]
    assert rollout.isvc()["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/1"


def test_a_standard_canary_answers_under_the_stable_model_name():
    """KServe's MLServer serves a model under the InferenceService's name unless MLSERVER_MODEL_NAME
    says otherwise (UPSTREAM.md, errata): the canary must answer /v2/models/churn/..., the path the
    HTTPRoute sends part of the traffic of."""
    rollout = Rollout({"steps": [25, 100], "stepIntervalSeconds": 10}, mode="Standard")
    rollout.step()
    canary = rollout.isvc("churn-canary")["spec"]["predictor"]["model"]
    assert canary["env"] == [{"name": "MLSERVER_MODEL_NAME", "value": "churn"}]
    assert "env" not in rollout.isvc()["spec"]["predictor"]["model"], "the stable variant keeps its default"
