"""Every bad input reaches the object: specs that pass admission but cannot work, each created on
the real apiserver and reconciled once against the real MLflow. Each must end that one pass with
a condition whose reason says what is wrong and whose message names the field, a Warning Event,
and no retry loop. Specs the CRD can reject are refused at admission (the second table).
"""

from __future__ import annotations

import base64
import copy

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e import manifests
from e2e.test_lifecycle import create
from traindeploy.config import OperatorConfig
from traindeploy.kube import Kube
from traindeploy.reconciler import Environment, reconcile

TUNING = {"algorithm": "random", "objective": {"metricName": "accuracy", "direction": "maximize"},
          "maxTrials": 4, "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 0.1}]}
CANARY = {"steps": [10, 100]}


def tuning(**changes) -> dict:
    spec = copy.deepcopy(TUNING)
    spec.update(changes)
    return {"tuning": spec}


def parameter(**fields) -> dict:
    return tuning(parameters=[{"name": "lr", "type": "double", "min": 0.001, "max": 0.1, **fields}])


def training(**changes) -> dict:
    spec = {"image": "t:1", "command": ["python", "train.py"], "gpus": 1}
    spec.update(changes)
    return {"training": spec}


def prometheus(**changes) -> dict:
    analysis = {"prometheus": {"url": "http://127.0.0.1:9", "queries": [
        {"name": "errors", "query": "rate(errors{service=\"$canary\"}[1m])", "max": 0.1}]}}
    analysis["prometheus"].update(changes)
    return {"serving": {"canary": {**CANARY, "analysis": analysis}}}


KFP = {"package": {"configMapKeyRef": {"name": "prep", "key": "pipeline.yaml"}}}

# (id, spec changes, the field the message must name)
INVALID = [
    ("cron out of range", {"retrain": {"schedule": "99 * * * *"}}, "spec.retrain.schedule"),
    ("cron step zero", {"retrain": {"schedule": "*/0 * * * *"}}, "spec.retrain.schedule"),
    ("cron that never fires", {"retrain": {"schedule": "0 0 31 2 *"}}, "spec.retrain.schedule"),
    ("metric name with a slash", tuning(objective={"metricName": "val/acc", "direction": "maximize"}),
     "spec.tuning.objective.metricName"),
    ("additional metric with a space", tuning(objective={"metricName": "acc", "direction": "maximize",
                                                         "additionalMetricNames": ["val loss"]}),
     "spec.tuning.objective.additionalMetricNames[0]"),
    ("an empty range", parameter(min=0.1, max=0.1), "spec.tuning.parameters[0].max"),
    ("int parameter with fractional bounds",
     tuning(parameters=[{"name": "layers", "type": "int", "min": 1.5, "max": 4}]), "spec.tuning.parameters[0].min"),
    ("log-uniform from zero", parameter(min=0, distribution="logUniform"), "spec.tuning.parameters[0].min"),
    ("grid without a step", tuning(algorithm="grid"), "spec.tuning.parameters[0].step"),
    ("grid with more trials than points", {**tuning(algorithm="grid", maxTrials=10, parameters=[
        {"name": "lr", "type": "double", "min": 0.1, "max": 0.3, "step": 0.1}])}, "spec.tuning.maxTrials"),
    ("hyperband without its settings", tuning(algorithm="hyperband"), "spec.tuning.algorithmSettings.r_l"),
    ("tpe setting that is not a number", tuning(algorithm="tpe", algorithmSettings={"n_startup_trials": "many"}),
     "spec.tuning.algorithmSettings.n_startup_trials"),
    ("random with an unknown setting", tuning(algorithmSettings={"seed": "1"}), "spec.tuning.algorithmSettings.seed"),
    ("cmaes restart strategy", tuning(algorithm="cmaes", algorithmSettings={"restart_strategy": "often"}),
     "spec.tuning.algorithmSettings.restart_strategy"),
    ("bayesian estimator", tuning(algorithm="bayesianoptimization", algorithmSettings={"base_estimator": "XGB"}),
     "spec.tuning.algorithmSettings.base_estimator"),
    ("discrete values that are not numbers",
     tuning(parameters=[{"name": "opt", "type": "discrete", "values": ["adam", "sgd"]}]),
     "spec.tuning.parameters[0].values"),
    ("credentials in the tracking URI", {"mlflow": {"trackingUri": "http://user:secret@127.0.0.1:5000"}},
     "spec.mlflow.trackingUri"),
    ("model name with surrounding spaces", {"model": {"name": " churn "}}, "spec.model.name"),
    ("credentials in the KFP endpoint", {"pipeline": {**KFP, "endpoint": "http://admin:pw@127.0.0.1:8888"}},
     "spec.pipeline.endpoint"),
    ("credentials in the package URL", {"pipeline": {"endpoint": "http://127.0.0.1:8888",
                                                     "package": {"url": "https://u:p@example.test/p.yaml"}}},
     "spec.pipeline.package.url"),
    ("no KFP endpoint anywhere", {"pipeline": KFP}, "spec.pipeline.endpoint"),
    ("env the operator sets", training(env=[{"name": "MLFLOW_RUN_ID", "value": "x"}]), "spec.training.env[0].name"),
    ("training requests above limits", training(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
     "spec.training.resources.requests.cpu"),
    ("serving requests above limits", {"serving": {"resources": {"requests": {"memory": "2Gi"},
                                                                 "limits": {"memory": "1Gi"}}}},
     "spec.serving.resources.requests.memory"),
    ("node selector value with a space", training(nodeSelector={"pool": "gpu a100"}),
     "spec.training.nodeSelector[pool]"),
    ("node selector key", training(nodeSelector={"bad key!": "x"}), "spec.training.nodeSelector[bad key!]"),
    ("standard canary without a gateway", {"serving": {"deploymentMode": "Standard", "canary": CANARY}},
     "spec.serving.gateway"),
    ("prometheus without a URL", prometheus(url=None), "spec.serving.canary.analysis.prometheus.url"),
    ("prometheus query with an unknown variable", prometheus(queries=[{"name": "e", "query": "up{pod=\"$pod\"}",
                                                                       "max": 1}]),
     "spec.serving.canary.analysis.prometheus.queries[0].query"),
    ("prometheus min above max", prometheus(queries=[{"name": "e", "query": "up", "min": 2, "max": 1}]),
     "spec.serving.canary.analysis.prometheus.queries[0].min"),
]


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _ready(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


@pytest.fixture
def env(apiserver, mlflow_server):
    return Environment(kube=Kube(apiserver), config=OperatorConfig(
        mlflow_tracking_uri=mlflow_server.url, mlflow_artifacts_destination=mlflow_server.artifacts_dir.as_uri()))


def test_the_table_is_large_enough():
    assert len(INVALID) >= 25 and len({case[0] for case in INVALID}) == len(INVALID)


@pytest.mark.parametrize(("changes", "field"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_a_spec_that_cannot_work_is_reported_in_one_pass_and_not_retried(api_client, namespace, env, model_name,
                                                                         changes, field):
    body = manifests.minimal("churn", model_name)
    for key, value in changes.items():
        merged = {**body["spec"].get(key, {}), **value} if isinstance(value, dict) and key != "tuning" else value
        body["spec"][key] = _drop_none(merged)
    td = create(api_client, namespace, body)  # admission lets it through

    outcome = reconcile(td, env)
    ready = _ready(outcome.status)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert field in ready["message"]
    assert outcome.status["phase"] == "Failed"
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "InvalidSpec")]
    assert field in outcome.events[0].message
    assert outcome.requeue_after is None and not outcome.blocked, "nothing to retry until the spec changes"
    assert not client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs")["items"], "no work starts"

    td["status"] = outcome.status
    again = reconcile(td, env)
    assert again.status == outcome.status and not again.events, "a second pass changes and posts nothing"


def _secret(api_client, namespace: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(api_client).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name),
        data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()}))


@pytest.mark.parametrize(("spec", "secret_name", "data", "field"), [
    ({"mlflow": {"credentialsSecretRef": {"name": "mlflow-creds"}}}, "mlflow-creds",
     {"MLFLOW_TRACKING_TOKEN": "s3cr3t-token\n"}, "spec.mlflow.credentialsSecretRef"),
    ({"mlflow": {"credentialsSecretRef": {"name": "mlflow-creds"}}}, "mlflow-creds",
     {"MLFLOW_TRACKING_USERNAME": "ci", "MLFLOW_TRACKING_PASSWORD": " pass"}, "spec.mlflow.credentialsSecretRef"),
    ({"pipeline": {**KFP, "endpoint": "http://127.0.0.1:9", "tokenSecretRef": {"name": "kfp", "key": "token"}}}, "kfp",
     {"token": "abc\n"}, "spec.pipeline.tokenSecretRef"),
], ids=["mlflow token with a newline", "mlflow password with a space", "kfp token with a newline"])
def test_a_secret_value_with_whitespace_holds_the_cycle_naming_the_key_not_the_value(
        api_client, namespace, env, model_name, all_logs, spec, secret_name, data, field):
    _secret(api_client, namespace, secret_name, data)
    body = manifests.minimal("churn", model_name)
    body["spec"].update(spec)
    td = create(api_client, namespace, body)
    outcome = reconcile(td, env)
    ready = _ready(outcome.status)
    assert (ready["status"], ready["reason"]) == ("False", "SecretInvalid")
    assert field in ready["message"] and next(iter(k for k in data if data[k] != data[k].strip())) in ready["message"]
    assert outcome.blocked, "a fixed Secret is picked up by the next try"
    assert outcome.status["phase"] == "Pending", "blocked before the cycle's first child"
    for value in data.values():
        if len(value.strip()) > 3:
            assert value.strip() not in str(outcome.status) and value.strip() not in all_logs.text
            assert all(value.strip() not in e.message for e in outcome.events)


REJECTED = [
    ("a name longer than a label", {"metadata": {"name": "a" * 64}}, "at most 63 characters"),
    ("a model name with a slash", {"spec": {"model": {"name": "team/churn"}}}, "cannot contain"),
    ("a model name with a colon", {"spec": {"model": {"name": "churn:v2"}}}, "cannot contain"),
    ("min above max", {"spec": parameter(min=0.5, max=0.1)}, "spec.tuning.parameters[0].min"),
    ("a step of zero", {"spec": parameter(step=0)}, "spec.tuning.parameters[0].step"),
    ("more failed trials than trials", {"spec": tuning(maxFailedTrials=9)}, "spec.tuning.maxFailedTrials"),
    ("a parameter tuned twice", {"spec": tuning(parameters=[TUNING["parameters"][0], TUNING["parameters"][0]])},
     "spec.tuning.parameters[1]"),
    ("a schedule that is not cron", {"spec": {"retrain": {"schedule": "every day"}}}, "spec.retrain.schedule"),
    ("a resource name", {"spec": {"training": {"resources": {"limits": {"cpu!!": "1"}}}}}, "qualified names"),
    ("a serving resource name", {"spec": {"serving": {"resources": {"requests": {"my mem": "1Gi"}}}}},
     "qualified names"),
]


@pytest.mark.parametrize(("changes", "message"), [case[1:] for case in REJECTED], ids=[case[0] for case in REJECTED])
def test_what_the_crd_can_express_is_refused_at_admission(api_client, namespace, model_name, changes, message):
    body = manifests.minimal("churn", model_name)
    for part, values in changes.items():
        for key, value in values.items():
            body[part][key] = {**body[part].get(key, {}), **value} if isinstance(value, dict) else value
    with pytest.raises(ApiException) as refused:
        create(api_client, namespace, body)
    assert refused.value.status == 422
    assert message in refused.value.body
