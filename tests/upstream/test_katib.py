"""The Experiments our builder makes (traindeploy.children.katib) against the real Katib v0.19.0
controller and webhooks (harness.upstream_katib).

- Admission: for every algorithm the TrainDeploy CRD accepts and both training backends, the
  Experiment the tuning stage would create is admitted by Katib's validating webhook after its
  mutating webhook ran, and the defaulter changes nothing (the builder writes every default
  itself, because a cluster may lack the webhook). Stripped of those fields, the defaulter fills
  in what the builder writes, except `parallelTrialCount` (Katib: 3, the operator: its own).
- The controller: for each algorithm it creates the Suggestion we expect and the suggestion
  Deployment and Service, with the image the module's katib-config names for the algorithm.
  The suggestion services are container images (gRPC servers in Python and Go) and cannot run
  here: their pods ask for more CPU than a fake node has (harness.upstream_katib), so the
  suggestion Deployment never becomes available, the Suggestion stays `DeploymentReady=False`, no Trial is created, and the Experiment stays in
  the state it reaches first. That state is compared with the fast stand-in's
  (traindeploy.dev.status.katib.created), field by field and by our reader's verdict. The pod
  webhook is registered too but acts only on the pods of Trials' jobs, so nothing here reaches it.
- Refusals: what the operator refuses before creating an Experiment, sent to the real webhook
  anyway: those Katib's webhook refuses too, and those only Katib's suggestion services would
  refuse (the webhook admits them; the user would only see "Suggestion has failed"), which is
  why the operator checks them up front (traindeploy.validation).
"""

from __future__ import annotations

import copy
import json
import secrets

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from children.samples import GPU, meta
from harness.paths import OUR_CRDS
from harness.upstream import wait_for
from harness.upstream_katib import INJECTION_LABEL, VALIDATING_WEBHOOK
from traindeploy import kube, lifecycle, naming, validation
from traindeploy.apiserver import ApiError
from traindeploy.children import katib as experiment_builder
from traindeploy.config import OperatorConfig
from traindeploy.dev.status import katib as katib_status
from traindeploy.diff import drift
from traindeploy.stages.tuning import EXPERIMENT

pytestmark = pytest.mark.slow

# The trial kinds the builder can make, with their job modules.
BACKENDS = {name: backend["module"] for name, backend in experiment_builder.BACKENDS.items()}


def crd_algorithms() -> list[str]:
    """spec.tuning.algorithm's enum in our CRD."""
    crd = yaml.safe_load((OUR_CRDS / "traindeploy.io_traindeploys.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    tuning = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tuning"]
    return list(tuning["properties"]["algorithm"]["enum"])


ALGORITHMS = crd_algorithms()

# Settings the operator accepts for each algorithm (validation.ALGORITHM_SETTINGS), so that each
# Experiment carries some. Hyperband's resource is the tuned `epochs`; with r_l 3 and eta 3 its
# service wants at least 3 parallel trials.
SETTINGS = {
    "random": {"random_state": "7"},
    "grid": {"random_state": "7"},
    "tpe": {"n_EI_candidates": "24", "gamma": "0.25", "random_state": "7"},
    "cmaes": {"sigma": "0.3", "restart_strategy": "ipop"},
    "bayesianoptimization": {"base_estimator": "GP", "n_initial_points": "3", "acq_func": "EI"},
    "hyperband": {"r_l": "3", "eta": "3", "resource_name": "epochs"},
}


def traindeploy_spec(algorithm: str, backend: str) -> dict:
    """A TrainDeploy spec the operator accepts, tuned with `algorithm` on `backend`."""
    training = {"backend": backend, "image": "ghcr.io/example/train:1.2", "command": ["python3", "train.py"],
                "args": ["--data=s3://bucket/train.csv"], "hyperparameters": {"batch_size": "64"},
                "gpus": 1, "workers": 1}
    if backend == "TrainJob":
        training["runtimeRef"] = {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"}
    parameters = [
        # Exact binary fractions: the grid has 4 x 4 x 2 combinations with no rounding doubt.
        {"name": "lr", "type": "double", "min": 0.125, "max": 0.5, "step": 0.125, "distribution": "uniform"},
        {"name": "layers", "type": "int", "min": 2, "max": 8, "step": 2},
        {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]},
    ]
    if algorithm == "hyperband":
        parameters.append({"name": "epochs", "type": "int", "min": 1, "max": 9})
    tuning = {"algorithm": algorithm, "algorithmSettings": SETTINGS[algorithm],
              "objective": {"metricName": "accuracy", "direction": "maximize", "goal": 0.95,
                            "additionalMetricNames": ["loss"]},
              "maxTrials": 12, "parallelTrials": 3, "maxFailedTrials": 3, "parameters": parameters}
    return {"model": {"name": "churn-model"}, "training": training, "tuning": tuning,
            "gate": {"metric": "accuracy", "threshold": 0.8}, "serving": {}}


def build(spec: dict, name: str, namespace: str) -> dict:
    """The Experiment as the tuning stage builds it (stages/tuning.py), MLflow's env and a credentials
    Secret's reference included; a TrainJob's trainer step is `node`, as in the torch-distributed
    runtime."""
    training = spec["training"]
    env = lifecycle.mlflow_env("http://mlflow.mlflow.svc:5000", "churn", None, "mlflow-credentials",
                               ["MLFLOW_TRACKING_TOKEN"])
    return experiment_builder.build(meta(name, namespace), spec["tuning"], training, env=env,
                                    hyperparameters=lifecycle.effective_hyperparameters(training, None),
                                    gpu_resource=GPU)


def operator_problems(spec: dict) -> list[str]:
    config = OperatorConfig(mlflow_tracking_uri="http://127.0.0.1:5000")
    return [str(problem) for problem in validation.check(spec, config)]


@pytest.fixture(scope="module")
def custom(api_client):
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def katib_namespace(api_client, katib):
    """A namespace labelled for Katib, as its validating webhook requires of every Experiment's."""
    core = client.CoreV1Api(api_client)
    name = f"t-{secrets.token_hex(4)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={INJECTION_LABEL: "enabled"})))
    yield name
    core.delete_namespace(name)


def dry_run(custom, experiment: dict) -> dict:
    """Created with a server-side dry run: both webhooks run, nothing is stored."""
    return custom.create_namespaced_custom_object(
        experiment_builder.GROUP, experiment_builder.VERSION, experiment["metadata"]["namespace"],
        experiment_builder.PLURAL, copy.deepcopy(experiment), dry_run="All")


def refusal(custom, experiment: dict) -> str:
    """The validating webhook's message for an Experiment it refuses."""
    with pytest.raises(ApiException) as refused:
        dry_run(custom, experiment)
    message = json.loads(refused.value.body)["message"]
    assert VALIDATING_WEBHOOK in message, message
    return message


def changes(sent: dict, returned: dict) -> list[str]:
    """Paths the webhooks changed or added, and paths they removed."""
    return sorted(set(drift(sent, returned)) | set(drift(returned, sent)))


# --- admission ----------------------------------------------------------------------------------


def test_katib_is_told_about_both_trial_kinds(katib):
    for module in BACKENDS.values():
        version, group = module.API_VERSION.split("/")[1], module.API_VERSION.split("/")[0]
        assert f"{module.KIND}.{version}.{group}" in katib.trial_resources


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_built_experiment_is_admitted_and_nothing_is_defaulted(custom, katib_namespace, algorithm, backend):
    spec = traindeploy_spec(algorithm, backend)
    assert operator_problems(spec) == []
    sent = build(spec, naming.experiment_name("churn", "g1"), katib_namespace)
    returned = dry_run(custom, sent)
    assert changes(sent["spec"], returned["spec"]) == []
    assert returned["spec"]["trialTemplate"]["trialSpec"]["kind"] == backend


# What the builder writes that Katib's defaulter would otherwise fill in
# (experiment_defaults.go, SetDefault).
DEFAULTED = ("parallelTrialCount", "resumePolicy", "metricsCollectorSpec", "objective.metricStrategies",
             "trialTemplate.successCondition", "trialTemplate.failureCondition",
             "trialTemplate.primaryPodLabels", "parameters[].feasibleSpace.distribution")


def _strip(spec: dict, path: str) -> None:
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        for item in spec[head[:-2]]:
            _strip(item, rest)
    elif rest:
        _strip(spec[head], rest)
    else:
        del spec[head]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_katibs_defaults_are_what_the_builder_writes(custom, katib_namespace, backend):
    sent = build(traindeploy_spec("random", backend), "churn-defaults", katib_namespace)
    bare = copy.deepcopy(sent)
    for path in DEFAULTED:
        _strip(bare["spec"], path)
    defaulted = dry_run(custom, bare)["spec"]
    # The one default the operator does not follow: it runs its own number of trials at once.
    assert defaulted.pop("parallelTrialCount") == 3
    expected = {key: value for key, value in sent["spec"].items() if key != "parallelTrialCount"}
    assert changes(expected, defaulted) == []


# --- the controller -----------------------------------------------------------------------------


def _get(custom, plural: str, namespace: str, name: str) -> dict | None:
    try:
        return custom.get_namespaced_custom_object(experiment_builder.GROUP, experiment_builder.VERSION,
                                                   namespace, plural, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _condition(obj: dict | None, kind: str) -> dict | None:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


@pytest.fixture(scope="module")
def reconciled(api_client, custom, katib_namespace) -> dict[str, dict]:
    """Per algorithm: the Experiment (created for real, with the longest name the operator makes),
    its Suggestion, and the suggestion Deployment and Service, once the Suggestion says its
    Deployment is not ready (the experiment controller has then reconciled past creation)."""
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    sent = {}
    for algorithm in ALGORITHMS:
        name = naming.experiment_name(f"customer-churn-prediction-with-{algorithm}", "g12")
        assert len(name) == experiment_builder.MAX_NAME_LENGTH
        sent[algorithm] = build(traindeploy_spec(algorithm, "PyTorchJob"), name, katib_namespace)
        custom.create_namespaced_custom_object(experiment_builder.GROUP, experiment_builder.VERSION,
                                               katib_namespace, experiment_builder.PLURAL,
                                               copy.deepcopy(sent[algorithm]))
    found = {}
    for algorithm, experiment in sent.items():
        name = experiment["metadata"]["name"]
        suggestion = wait_for(lambda: _get(custom, "suggestions", katib_namespace, name),
                              lambda s: _condition(s, "DeploymentReady") is not None, timeout=60,
                              what=f"Suggestion {name} to report its Deployment")
        child = f"{name}-{algorithm}"
        found[algorithm] = {
            "sent": experiment,
            "experiment": _get(custom, experiment_builder.PLURAL, katib_namespace, name),
            "suggestion": suggestion,
            "deployment": apps.read_namespaced_deployment(child, katib_namespace).to_dict(),
            "service": core.read_namespaced_service(child, katib_namespace).to_dict(),
        }
    return found


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_controller_makes_the_suggestion_we_expect(reconciled, algorithm):
    sent, suggestion = reconciled[algorithm]["sent"], reconciled[algorithm]["suggestion"]
    assert suggestion["metadata"]["name"] == sent["metadata"]["name"]
    assert suggestion["spec"]["algorithm"] == sent["spec"]["algorithm"]
    assert {item["name"]: item["value"] for item in suggestion["spec"]["algorithm"]["algorithmSettings"]} == \
        SETTINGS[algorithm]
    # No trials yet: it asks for as many as may run at once.
    assert suggestion["spec"]["requests"] == sent["spec"]["parallelTrialCount"]
    assert suggestion["spec"]["resumePolicy"] == "Never"
    owner = suggestion["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Experiment", sent["metadata"]["name"], True)
    conditions = [(c["type"], c["status"], c["reason"]) for c in suggestion["status"]["conditions"]]
    assert conditions == [("Created", "True", "SuggestionCreated"),
                          ("DeploymentReady", "False", "DeploymentNotReady")]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_suggestion_runs_the_image_katib_config_names(reconciled, katib, algorithm):
    deployment, service = reconciled[algorithm]["deployment"], reconciled[algorithm]["service"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == katib.suggestion_image(algorithm)
    assert container["image"].endswith(":v0.19.0")
    assert [(port["name"], port["port"]) for port in service["spec"]["ports"]] == [("suggestion-api", 6789)]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["match_labels"]
    # Its pod cannot be scheduled: nothing ever reports the Deployment available.
    assert not (deployment.get("status") or {}).get("available_replicas")


def _shape(status: dict) -> dict:
    return {"fields": sorted(status),
            "conditions": [(c["type"], c["status"], c["reason"], c["message"], sorted(c))
                           for c in status.get("conditions") or []]}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_status_before_any_trial_is_what_the_stand_in_writes(reconciled, algorithm):
    real = reconciled[algorithm]["experiment"]["status"]
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in real["conditions"]] == [
        ("Created", "True", "ExperimentCreated", "Experiment is created")]
    stand_in = katib_status.created(katib_status.now())
    assert _shape(stand_in) == _shape(real)
    assert real["completionTime"] is None and real["startTime"]
    sent = reconciled[algorithm]["sent"]
    assert experiment_builder.read({**sent, "status": stand_in}) == \
        experiment_builder.read({**sent, "status": real})
    assert experiment_builder.unfinished_trials({"status": real}) == []


# --- refusals -----------------------------------------------------------------------------------


def _tuned(algorithm: str = "random", **changes_to_tuning) -> dict:
    spec = traindeploy_spec(algorithm, "PyTorchJob")
    spec["tuning"].update(changes_to_tuning)
    return spec


# Experiment fields set past what the CRD or the operator lets through, each with Katib's words.
AT_MOST_MAX_TRIALS = "should be less than or equal to spec.maxTrialCount"
KATIB_REFUSES = [
    ("more parallel trials than trials", {"parallelTrialCount": 13}, AT_MOST_MAX_TRIALS),
    ("more failed trials than trials", {"maxFailedTrialCount": 13}, AT_MOST_MAX_TRIALS),
    ("no trials", {"maxTrialCount": 0}, "must be greater than 0"),
]


@pytest.mark.parametrize(("reason", "spec_changes", "message"), KATIB_REFUSES, ids=[c[0] for c in KATIB_REFUSES])
def test_what_the_crd_refuses_katib_refuses_too(custom, katib_namespace, reason, spec_changes, message):
    experiment = build(_tuned(), "churn-refused", katib_namespace)
    experiment["spec"].update(spec_changes)
    assert message in refusal(custom, experiment), reason


def test_a_namespace_without_katibs_label_is_refused_and_the_operator_keeps_katibs_words(apiserver, namespace):
    """The validating webhook answers 400, which the operator reads as a refusal that retrying
    cannot change (traindeploy.kube): the cycle fails with Katib's message, naming the label."""
    with pytest.raises(ApiError) as refused:  # a server-side dry run, sent the operator's way
        apiserver.request("POST", EXPERIMENT.path(namespace), query={"dryRun": "All"},
                          body=build(_tuned(), "churn-unlabelled", namespace), timeout=30)
    error = kube.classify("Experiment churn-unlabelled", refused.value)
    assert isinstance(error, kube.Refused) and error.status == 400
    assert f'lacks label "{INJECTION_LABEL}: enabled"' in error.message


def test_a_name_longer_than_katib_takes_is_refused_by_both(custom, katib_namespace):
    name = "x" * (experiment_builder.MAX_NAME_LENGTH + 1)
    with pytest.raises(ValueError, match="longer than 40"):
        build(_tuned(), name, katib_namespace)
    experiment = build(_tuned(), "x" * experiment_builder.MAX_NAME_LENGTH, katib_namespace)
    dry_run(custom, experiment)
    experiment["metadata"]["name"] = name
    assert "may not be longer than 40 characters" in refusal(custom, experiment)


def test_objective_also_an_additional_metric_is_refused_by_both(custom, katib_namespace):
    spec = _tuned()
    spec["tuning"]["objective"]["additionalMetricNames"] = ["loss", "accuracy"]
    with pytest.raises(ValueError, match="also an additional metric"):
        build(spec, "churn-metrics", katib_namespace)
    experiment = build(_tuned(), "churn-metrics", katib_namespace)
    experiment["spec"]["objective"]["additionalMetricNames"].append("accuracy")
    assert "should not contain spec.objective.objectiveMetricName" in refusal(custom, experiment)


@pytest.mark.parametrize("td_name", ["1churn", "churn.v2", "Churn-Model"])
def test_experiment_names_of_any_traindeploy_name_are_admitted(custom, katib_namespace, td_name):
    """Katib wants a leading letter and no dots; TrainDeploy names may have both."""
    dry_run(custom, build(_tuned(), naming.experiment_name(td_name, "g1"), katib_namespace))


def test_a_trial_parameter_in_the_env_that_is_not_tuned_is_refused_by_both(custom, katib_namespace):
    """Katib substitutes `${trialParameters.<name>}` anywhere in the trial template and refuses
    a placeholder it has no parameter for; the operator refuses it in env values up front."""
    spec = _tuned()
    spec["training"]["env"] = [{"name": "SEED", "value": "${trialParameters.seed}"}]
    assert any("spec.training.env[0].value" in problem for problem in operator_problems(spec))
    experiment = build(spec, "churn-env", katib_namespace)
    assert "not found in spec.trialParameters" in refusal(custom, experiment)


# Refused by the operator up front, admitted by Katib's webhook: Katib's suggestion service
# would refuse each when it starts (ValidateAlgorithmSettings), and the Experiment would fail
# with "Suggestion has failed".
ONLY_THE_SUGGESTION_SERVICE_REFUSES = [
    ("hyperband without r_l and resource_name", _tuned("hyperband", algorithmSettings={}),
     "spec.tuning.algorithmSettings.r_l"),
    ("hyperband resource that is not tuned", _tuned("hyperband", algorithmSettings={
        "r_l": "3", "eta": "3", "resource_name": "steps"}), "spec.tuning.algorithmSettings.resource_name"),
    ("hyperband with fewer parallel trials than its first bracket", _tuned("hyperband", algorithmSettings={
        "r_l": "9", "eta": "3", "resource_name": "epochs"}), "spec.tuning.parallelTrials"),
    ("grid with a double parameter without a step", _tuned("grid", parameters=[
        {"name": "lr", "type": "double", "min": 0.1, "max": 0.5}]), "spec.tuning.parameters[0].step"),
    ("grid with more trials than combinations", _tuned("grid", maxTrials=12, parameters=[
        {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]}]), "spec.tuning.maxTrials"),
    ("a setting the algorithm does not have", _tuned("random", algorithmSettings={"seed": "1"}),
     "spec.tuning.algorithmSettings.seed"),
    ("tpe with a setting of another tpe implementation", _tuned("tpe", algorithmSettings={"n_startup_trials": "5"}),
     "spec.tuning.algorithmSettings.n_startup_trials"),
    ("a negative random state", _tuned("random", algorithmSettings={"random_state": "-1"}),
     "spec.tuning.algorithmSettings.random_state"),
    ("cmaes with one continuous parameter", _tuned("cmaes", algorithmSettings={}, parameters=[
        {"name": "lr", "type": "double", "min": 0.1, "max": 0.5},
        {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]}]), "spec.tuning.parameters"),
]


@pytest.mark.parametrize(("reason", "spec", "field"), ONLY_THE_SUGGESTION_SERVICE_REFUSES,
                         ids=[c[0] for c in ONLY_THE_SUGGESTION_SERVICE_REFUSES])
def test_what_only_the_suggestion_service_checks_is_refused_by_the_operator(custom, katib_namespace, reason,
                                                                           spec, field):
    assert any(problem.startswith(field + ":") for problem in operator_problems(spec)), reason
    dry_run(custom, build(spec, "churn-suggestion-checks", katib_namespace))
