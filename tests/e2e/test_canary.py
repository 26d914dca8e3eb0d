"""Continuous delivery: retraining triggers and canary rollouts in KServe's two modes, with the
tests playing KServe (and a local model server and Prometheus for analysis)."""

from __future__ import annotations

import copy
import time

from kubernetes import client
from mlflow import MlflowClient

from e2e import manifests
from e2e.http_stubs import ModelServer, Prometheus
from e2e.kserve_player import KnativePlayer, StandardPlayer
from e2e.players import train_into_run, wait_for
from e2e.test_lifecycle import _condition, _phase, create

INTERVAL = 2


def canary_td(model_name: str, mode: str, **canary) -> dict:
    body = manifests.minimal("churn", model_name)
    body["spec"]["serving"] = {"deploymentMode": mode,
                               "canary": {"steps": [10, 50, 100], "stepIntervalSeconds": INTERVAL,
                                          "readyTimeoutSeconds": 20, **canary}}
    if mode == "Standard":
        body["spec"]["serving"]["gateway"] = {"name": "inference-gateway"}
    return body


def annotate(api_client, namespace: str, name: str, key: str, value: str) -> None:
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "traindeploy.io", "v1alpha1", namespace, "traindeploys", name,
        {"metadata": {"annotations": {key: value}}})


def train(players, job_name: str, accuracy: float = 0.9, group=("kubeflow.org", "v1", "pytorchjobs")) -> None:
    job = players.wait_child(*group, job_name)
    train_into_run(job, {"accuracy": accuracy})
    players.pytorchjob(job_name, "Succeeded")


def serve_first_version(api_client, namespace, players, body) -> dict:
    create(api_client, namespace, body)
    train(players, "churn-g1-train")
    return players.wait_td("churn", _phase("Ready"), timeout=60, what="version 1 serving")


def retrain(api_client, namespace, players, token: str, job: str, accuracy: float = 0.9) -> None:
    annotate(api_client, namespace, "churn", "traindeploy.io/retrain", token)
    train(players, job, accuracy)


def champion(mlflow_server, model_name: str) -> str:
    return MlflowClient(mlflow_server.url).get_model_version_by_alias(model_name, "champion").version


def events(api_client, namespace: str) -> list:
    return client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=churn").items


def test_knative_canary_moves_through_the_steps_and_promotes(api_client, namespace, players, operator,
                                                              mlflow_server, model_name):
    with KnativePlayer(api_client, namespace, "churn") as kserve:
        td = serve_first_version(api_client, namespace, players, canary_td(model_name, "Knative"))
        spec_before = copy.deepcopy(td["spec"])
        assert champion(mlflow_server, model_name) == "1"
        retrain(api_client, namespace, players, "first-retrain", "churn-g1r1-train")

        td = players.wait_td("churn", _phase("Canary"), what="the canary to start")
        assert td["status"]["rollout"]["version"] == "2" and td["status"]["rollout"]["stableVersion"] == "1"
        assert champion(mlflow_server, model_name) == "1"  # aliases move only on promotion
        td = players.wait_td("churn", _phase("Ready"), timeout=60, what="promotion")

    assert kserve.percent_sequence() == [None, 10, 50, 100]
    times = {p: t for t, p in reversed(kserve.percents)}
    # Observed through a watch: allow its delivery jitter, nothing more.
    assert times[50] - times[10] >= INTERVAL - 0.1 and times[100] - times[50] >= INTERVAL - 0.1
    assert champion(mlflow_server, model_name) == "2"
    assert td["status"]["serving"]["modelVersion"] == "2"
    assert td["status"]["serving"]["traffic"] == "v2 100%"
    assert [h["version"] for h in td["status"]["rolloutHistory"]][:2] == ["2", "1"]
    assert td["status"]["cycle"]["trigger"] == "annotation:first-retrain"
    # The user's spec was never touched: Argo CD sees no drift.
    assert td["spec"] == spec_before
    reasons = [e.reason for e in events(api_client, namespace)]
    assert reasons.count("CanaryStep") >= 2 and "Promoted" in reasons


def test_standard_canary_weights_an_httproute_and_promotes(api_client, namespace, players, operator,
                                                            mlflow_server, model_name):
    with ModelServer(200) as model_server, \
            StandardPlayer(api_client, namespace, addresses={"churn-canary": model_server.url}) as kserve:
        body = canary_td(model_name, "Standard",
                         analysis={"probe": {"path": "/v2/models/model/infer", "body": '{"inputs": []}'}})
        serve_first_version(api_client, namespace, players, body)
        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        players.wait_td("churn", _phase("Canary"))
        canary = players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn-canary")
        stable = players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
        assert canary["spec"]["predictor"]["model"]["storageUri"] != stable["spec"]["predictor"]["model"]["storageUri"]
        assert "canaryTrafficPercent" not in canary["spec"]["predictor"]  # KServe ignores it in Standard mode
        route = players.get("gateway.networking.k8s.io", "v1", "httproutes", "churn")
        assert route["spec"]["parentRefs"][0]["name"] == "inference-gateway"
        td = players.wait_td("churn", _phase("Ready"), timeout=60, what="promotion")

    splits = [w for w in kserve.weights if "churn-canary-predictor" in w]
    assert [w["churn-canary-predictor"] for w in splits] == [10, 50]
    assert kserve.weights[-1] == {"churn-predictor": 100}
    seen = dict(zip((w.get("churn-canary-predictor", 0) for w in kserve.weights), kserve.weight_times))
    # Each step lasts at least the interval (watch delivery jitter allowed).
    assert seen[50] - seen[10] >= INTERVAL - 0.1
    assert kserve.weight_times[-1] - seen[50] >= INTERVAL - 0.1
    assert model_server.requests and model_server.requests[0][:2] == ("POST", "/v2/models/model/infer")
    assert players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn-canary") is None
    stable = players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    assert stable["spec"]["predictor"]["model"]["storageUri"] == td["status"]["model"]["storageUri"]
    assert champion(mlflow_server, model_name) == "2"


def _assert_rolled_back(td: dict, mlflow_server, model_name: str, why: str) -> None:
    assert td["status"]["phase"] == "Failed"
    ready = _condition(td, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RolledBack")
    assert why in ready["message"]
    assert _condition(td, "ServingReady")["status"] == "True"  # version 1 still serves
    assert td["status"]["serving"]["modelVersion"] == "1"
    assert td["status"]["serving"]["traffic"] == "v1 100%"
    assert td["status"]["rollout"]["failedVersions"] == ["2"]
    assert td["status"]["rolloutHistory"][0]["result"] == "RolledBack"
    assert champion(mlflow_server, model_name) == "1"


def test_failed_probe_rolls_back(api_client, namespace, players, operator, mlflow_server, model_name):
    with ModelServer(500) as model_server, \
            StandardPlayer(api_client, namespace, addresses={"churn-canary": model_server.url}) as kserve:
        body = canary_td(model_name, "Standard", analysis={"probe": {"path": "/v2/models/model/infer",
                                                                     "body": "{}"}})
        serve_first_version(api_client, namespace, players, body)
        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        td = players.wait_td("churn", _phase("Failed"), timeout=60, what="rollback")
    _assert_rolled_back(td, mlflow_server, model_name, "answered HTTP 500")
    assert kserve.weights[-1] == {"churn-predictor": 100}
    wait_for(lambda: players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn-canary") is None,
             timeout=10, what="the canary InferenceService to be removed")


def test_failed_prometheus_check_rolls_back(api_client, namespace, players, operator, mlflow_server, model_name):
    with Prometheus(0.2) as prometheus, KnativePlayer(api_client, namespace, "churn") as kserve:
        body = canary_td(model_name, "Knative", analysis={"prometheus": {"url": prometheus.url, "queries": [
            {"name": "error-rate", "max": 0.05,
             "query": 'sum(rate(errors{namespace="${namespace}",revision_name="${canary}"}[1m]))'}]}})
        serve_first_version(api_client, namespace, players, body)
        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        td = players.wait_td("churn", _phase("Failed"), timeout=60, what="rollback")
    _assert_rolled_back(td, mlflow_server, model_name, "error-rate=0.2 is above the maximum 0.05")
    assert kserve.percent_sequence()[-2:] == [10, 0]  # KServe's rollback: 0% to the latest revision
    # The canary's own revision (the first version is revision 1), not the Service both share.
    assert prometheus.queries[0] == \
        f'sum(rate(errors{{namespace="{namespace}",revision_name="churn-predictor-00002"}}[1m]))'


def test_canary_not_ready_in_time_rolls_back(api_client, namespace, players, operator, mlflow_server, model_name):
    with StandardPlayer(api_client, namespace, never_ready={"churn-canary"}):
        body = canary_td(model_name, "Standard", readyTimeoutSeconds=2)
        serve_first_version(api_client, namespace, players, body)
        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        td = players.wait_td("churn", _phase("Failed"), timeout=60, what="rollback")
    _assert_rolled_back(td, mlflow_server, model_name, "was not ready within 2s")


def test_manual_approval_waits_for_the_right_version(api_client, namespace, players, operator, mlflow_server,
                                                     model_name):
    with KnativePlayer(api_client, namespace, "churn") as kserve:
        body = canary_td(model_name, "Knative")
        body["spec"]["serving"]["approval"] = "Manual"
        create(api_client, namespace, body)
        train(players, "churn-g1-train")
        td = players.wait_td("churn", _phase("AwaitingApproval"), what="the first rollout to wait")
        assert td["status"]["rollout"]["awaitingApproval"] == "1"
        assert players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn") is None
        annotate(api_client, namespace, "churn", "traindeploy.io/approve", "1")
        players.wait_td("churn", _phase("Ready"))

        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        td = players.wait_td("churn", _phase("AwaitingApproval"), what="the canary to wait")
        assert td["status"]["rollout"]["paused"] is True
        assert kserve.percent_sequence() == [None]  # no traffic moved yet
        annotate(api_client, namespace, "churn", "traindeploy.io/approve", "7")
        wait_for(lambda: [e for e in events(api_client, namespace) if e.reason == "ApprovalIgnored"],
                 timeout=20, what="an ApprovalIgnored event")
        time.sleep(1)
        assert players.td("churn")["status"]["phase"] == "AwaitingApproval"
        annotate(api_client, namespace, "churn", "traindeploy.io/approve", "2")
        td = players.wait_td("churn", _phase("Ready"), timeout=60)
    assert kserve.percent_sequence() == [None, 10, 50, 100]
    assert champion(mlflow_server, model_name) == "2"


def test_restart_mid_rollout_resumes_at_the_same_step(api_client, namespace, players, operator, mlflow_server,
                                                      model_name):
    with KnativePlayer(api_client, namespace, "churn") as kserve:
        body = canary_td(model_name, "Knative", steps=[10, 50, 100])
        # Long enough that a kill, a restart (about 4 s on 2 cores) and the 2 s below stay inside it.
        body["spec"]["serving"]["canary"]["stepIntervalSeconds"] = 12
        serve_first_version(api_client, namespace, players, body)
        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        players.wait_td("churn", lambda td: (td.get("status", {}).get("rollout") or {}).get("weight") == 50,
                        timeout=30, what="step 2")
        operator.kill()
        time.sleep(1)
        operator.start()
        td = players.td("churn")
        assert td["status"]["rollout"]["weight"] == 50
        time.sleep(2)  # within the step interval: the restarted operator must hold the step
        assert kserve.percent_sequence()[-1] == 50
        players.wait_td("churn", _phase("Ready"), timeout=60)
    assert kserve.percent_sequence() == [None, 10, 50, 100]


def test_manual_rollback_returns_traffic_to_a_previous_version(api_client, namespace, players, operator,
                                                              mlflow_server, model_name):
    with KnativePlayer(api_client, namespace, "churn"):
        body = canary_td(model_name, "Knative", steps=[50, 100], stepIntervalSeconds=1)
        serve_first_version(api_client, namespace, players, body)
        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        players.wait_td("churn", lambda td: td.get("status", {}).get("serving", {}).get("modelVersion") == "2"
                        and td["status"]["phase"] == "Ready", timeout=60)
        annotate(api_client, namespace, "churn", "traindeploy.io/rollback", "1")
        td = players.wait_td("churn", lambda td: td["status"]["serving"]["modelVersion"] == "1", timeout=30)
    isvc = players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == td["status"]["rolloutHistory"][-1]["storageUri"]
    assert champion(mlflow_server, model_name) == "1"
    assert td["status"]["rolloutHistory"][0]["result"] == "ManualRollback"
    assert "2" in td["status"]["rollout"]["failedVersions"]


def test_requests_during_a_cycle_are_queued_and_the_newest_wins(api_client, namespace, players, operator,
                                                                model_name):
    create(api_client, namespace, manifests.minimal("churn", model_name))
    players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
    annotate(api_client, namespace, "churn", "traindeploy.io/retrain", "a")
    players.wait_td("churn", lambda td: (td.get("status", {}).get("retrain") or {}).get("queued") == "annotation:a")
    annotate(api_client, namespace, "churn", "traindeploy.io/retrain", "b")
    players.wait_td("churn", lambda td: (td.get("status", {}).get("retrain") or {}).get("queued") == "annotation:b")
    assert len(players.list("kubeflow.org", "v1", "pytorchjobs")) == 1  # nothing interrupted the cycle
    train(players, "churn-g1-train")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.inferenceservice("churn", ready=True)
    td = players.wait_td("churn", lambda td: td.get("status", {}).get("cycle", {}).get("label") == "g1r1", timeout=30)
    assert td["status"]["cycle"]["trigger"] == "annotation:b"
    time.sleep(2)
    assert sorted(j["metadata"]["name"] for j in players.list("kubeflow.org", "v1", "pytorchjobs")) == [
        "churn-g1-train", "churn-g1r1-train"]


def test_schedule_starts_cycles(api_client, namespace, players, operator, model_name):
    body = manifests.minimal("churn", model_name)
    body["spec"]["retrain"] = {"schedule": "* * * * * */3"}  # every 3 seconds (sixth field: seconds)
    create(api_client, namespace, body)
    train(players, "churn-g1-train")
    players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
    players.inferenceservice("churn", ready=True)
    td = players.wait_td("churn", lambda td: td.get("status", {}).get("cycle", {}).get("label") == "g1r1", timeout=30)
    assert td["status"]["cycle"]["trigger"].startswith("schedule:")
    players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1r1-train")


def test_spec_change_retrains_while_the_current_version_keeps_serving(api_client, namespace, players, operator,
                                                                      model_name):
    with KnativePlayer(api_client, namespace, "churn"):
        serve_first_version(api_client, namespace, players, canary_td(model_name, "Knative"))
        before = players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            "traindeploy.io", "v1alpha1", namespace, "traindeploys", "churn",
            {"spec": {"training": {"hyperparameters": {"lr": "0.02", "epochs": "3"}}}})
        players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g2-train")
        td = players.wait_td("churn", _phase("Training"))
        assert td["status"]["serving"]["modelVersion"] == "1"
        after = players.get("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
        assert after["metadata"]["generation"] == before["metadata"]["generation"]  # untouched


def test_manual_approval_before_promotion(api_client, namespace, players, operator, mlflow_server, model_name):
    with KnativePlayer(api_client, namespace, "churn") as kserve:
        body = canary_td(model_name, "Knative", stepIntervalSeconds=1)
        body["spec"]["serving"].update({"approval": "Manual", "approvalPoint": "BeforePromotion"})
        create(api_client, namespace, body)
        train(players, "churn-g1-train")
        players.wait_td("churn", _phase("AwaitingApproval"), what="the first rollout to wait")
        annotate(api_client, namespace, "churn", "traindeploy.io/approve", "1")
        players.wait_td("churn", _phase("Ready"))

        retrain(api_client, namespace, players, "r1", "churn-g1r1-train")
        td = players.wait_td("churn", _phase("AwaitingApproval"), timeout=30, what="the pause before promotion")
        assert td["status"]["rollout"]["weight"] == 50  # the canary steps ran; promotion waits
        assert champion(mlflow_server, model_name) == "1"
        annotate(api_client, namespace, "churn", "traindeploy.io/approve", "2")
        players.wait_td("churn", _phase("Ready"), timeout=30)
    assert kserve.percent_sequence() == [None, 10, 50, 100]
    assert champion(mlflow_server, model_name) == "2"
