"""The TrainDeploy CRD on a real apiserver: what it accepts, what it stores, what it rejects and why.

Invalid manifests are table-driven: each case changes one thing in a valid manifest and names the
words the apiserver's answer must contain (the offending field's path and, for CEL rules, the
rule's message), so a rule that stops firing or starts blaming the wrong field fails here.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from api import manifests
from api.manifests import GROUP, PLURAL, VERSION
from harness.assertions import dropped_fields

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "traindeploy.io_traindeploys.yaml"

Mutation = Callable[[dict], None]


# -- helpers ---------------------------------------------------------------------------------------

def _walk(body: dict, path: str) -> tuple[Any, str | int]:
    """The container holding the last step of a dotted path ('spec.tuning.parameters.0.min')."""
    steps: list[str | int] = [int(s) if s.isdigit() else s for s in path.split(".")]
    node: Any = body
    for step in steps[:-1]:
        node = node[step]
    return node, steps[-1]


def put(path: str, value: Any) -> Mutation:
    def mutate(body: dict) -> None:
        node, last = _walk(body, path)
        node[last] = value
    return mutate


def drop(path: str) -> Mutation:
    def mutate(body: dict) -> None:
        node, last = _walk(body, path)
        del node[last]
    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(body: dict) -> None:
        for mutation in mutations:
            mutation(body)
    return mutate


def _api(api_client) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def _create(api_client, namespace: str, body: dict) -> dict:
    return _api(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def _get(api_client, namespace: str, name: str) -> dict:
    return _api(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def _rejection(error: ApiException) -> str:
    """The apiserver's message plus every cause, as one string to search."""
    status = json.loads(error.body)
    causes = (status.get("details") or {}).get("causes") or []
    return "\n".join([status.get("message", "")] +
                     [f"{c.get('field', '')}: {c.get('message', '')}" for c in causes])


@pytest.fixture(scope="module")
def rejection_namespace(api_client):
    """One namespace for all rejected creates: nothing is ever stored in it."""
    core = client.CoreV1Api(api_client)
    name = f"t-reject-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


# -- valid manifests -------------------------------------------------------------------------------

VALID = {
    "minimal": manifests.minimal,
    "full": manifests.full,
    "full-trainjob": manifests.full_trainjob,
}


@pytest.mark.parametrize("variant", sorted(VALID))
def test_a_valid_traindeploy_is_stored_without_pruning(variant, api_client, namespace):
    sent = VALID[variant]()
    stored = _create(api_client, namespace, sent)
    assert dropped_fields(sent["spec"], stored["spec"]) == []
    # The stored copy, read back, is the same as the create's answer.
    assert _get(api_client, namespace, sent["metadata"]["name"])["spec"] == stored["spec"]


def test_the_minimal_traindeploy_gets_its_defaults(api_client, namespace):
    spec = _create(api_client, namespace, manifests.minimal())["spec"]
    training = spec["training"]
    assert training["backend"] == "PyTorchJob"
    assert (training["workers"], training["gpus"]) == (0, 0)
    # Backend-specific defaults are the operator's: a schema default would trip the CEL rules.
    assert "restartPolicy" not in training and "runtimeRef" not in training
    assert spec["gate"]["direction"] == "maximize"
    assert spec["serving"] == {
        "modelFormat": {"name": "mlflow"}, "protocolVersion": "v2",
        "minReplicas": 1, "gpus": 0, "timeoutSeconds": 1800,
        "approval": "Automatic", "approvalPoint": "BeforeFirstStep",
    }


def test_serving_is_defaulted_when_left_out(api_client, namespace):
    body = manifests.minimal()
    del body["spec"]["serving"], body["spec"]["gate"]
    spec = _create(api_client, namespace, body)["spec"]
    assert spec["serving"]["protocolVersion"] == "v2"
    assert spec["serving"]["modelFormat"] == {"name": "mlflow"}
    assert "gate" not in spec


def test_stage_defaults_are_applied_inside_pipeline_and_tuning(api_client, namespace):
    body = manifests.full("stage-defaults")
    for field in ("timeoutSeconds",):
        del body["spec"]["pipeline"][field]
    for field in ("algorithm", "parallelTrials", "timeoutSeconds"):
        del body["spec"]["tuning"][field]
    del body["spec"]["gate"]["direction"]
    spec = _create(api_client, namespace, body)["spec"]
    assert spec["pipeline"]["timeoutSeconds"] == 21600
    assert spec["tuning"]["algorithm"] == "random"
    assert spec["tuning"]["parallelTrials"] == 1
    assert spec["tuning"]["timeoutSeconds"] == 86400
    assert spec["gate"]["direction"] == "maximize"


def test_trainjob_runtime_kind_defaults_to_the_cluster_runtime(api_client, namespace):
    body = manifests.full_trainjob()
    body["spec"]["training"]["runtimeRef"] = {"name": "torch-distributed"}
    training = _create(api_client, namespace, body)["spec"]["training"]
    assert training["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"}
    assert "restartPolicy" not in training


def test_an_unknown_field_is_pruned_so_typos_are_visible(api_client, namespace):
    """The schema is closed: a misspelt field does not silently survive (dropped_fields sees it)."""
    sent = manifests.minimal()
    sent["spec"]["training"]["imagePullPolicy"] = "Always"
    stored = _create(api_client, namespace, sent)
    [dropped] = dropped_fields(sent["spec"], stored["spec"])
    assert dropped.endswith("imagePullPolicy")


# -- invalid manifests -----------------------------------------------------------------------------

PARAM = "spec.tuning.parameters"

# (id, mutation of manifests.full(), substrings the rejection must contain)
INVALID: list[tuple[str, Mutation, tuple[str, ...]]] = [
    # Required fields.
    ("spec-missing", drop("spec"), ("spec: Required value",)),
    ("model-missing", drop("spec.model"), ("spec.model: Required value",)),
    ("model-name-missing", drop("spec.model.name"), ("spec.model.name: Required value",)),
    ("training-image-missing", drop("spec.training.image"), ("spec.training.image: Required value",)),
    ("gate-threshold-missing", drop("spec.gate.threshold"), ("spec.gate.threshold: Required value",)),
    ("tuning-max-trials-missing", drop("spec.tuning.maxTrials"), ("spec.tuning.maxTrials: Required value",)),
    ("objective-direction-missing", drop("spec.tuning.objective.direction"),
     ("spec.tuning.objective.direction: Required value",)),
    ("tuning-parameters-missing", drop("spec.tuning.parameters"), ("spec.tuning.parameters: Required value",)),
    ("parameter-type-missing", drop(f"{PARAM}.0.type"), (f"{PARAM}[0].type: Required value",)),
    ("env-name-missing", put("spec.training.env.0", {"value": "x"}),
     ("spec.training.env[0].name: Required value",)),
    ("configmap-key-missing", drop("spec.pipeline.package.configMapKeyRef.key"),
     ("spec.pipeline.package.configMapKeyRef.key: Required value",)),
    ("runtime-ref-name-missing",
     both(put("spec.training.backend", "TrainJob"), drop("spec.training.restartPolicy"),
          drop("spec.training.backoffLimit"), put("spec.training.runtimeRef", {"kind": "TrainingRuntime"})),
     ("spec.training.runtimeRef.name: Required value",)),
    # Enums.
    ("backend-unknown", put("spec.training.backend", "MPIJob"), ("spec.training.backend: Unsupported value",)),
    ("algorithm-unknown", put("spec.tuning.algorithm", "annealing"), ("spec.tuning.algorithm: Unsupported value",)),
    ("parameter-type-unknown", put(f"{PARAM}.0.type", "float"), (f"{PARAM}[0].type: Unsupported value",)),
    ("distribution-unknown", put(f"{PARAM}.0.distribution", "poisson"),
     (f"{PARAM}[0].distribution: Unsupported value",)),
    ("objective-direction-unknown", put("spec.tuning.objective.direction", "up"),
     ("spec.tuning.objective.direction: Unsupported value",)),
    ("gate-direction-unknown", put("spec.gate.direction", "higher"), ("spec.gate.direction: Unsupported value",)),
    ("restart-policy-unknown", put("spec.training.restartPolicy", "Sometimes"),
     ("spec.training.restartPolicy: Unsupported value",)),
    ("protocol-unknown", put("spec.serving.protocolVersion", "v3"), ("spec.serving.protocolVersion: Unsupported value",)),
    ("toleration-operator-unknown", put("spec.training.tolerations.0.operator", "In"),
     ("spec.training.tolerations[0].operator: Unsupported value",)),
    ("toleration-effect-unknown", put("spec.training.tolerations.0.effect", "NoWay"),
     ("spec.training.tolerations[0].effect: Unsupported value",)),
    # Ranges and sizes.
    ("workers-too-many", put("spec.training.workers", 1025), ("spec.training.workers", "less than or equal to 1024")),
    ("training-gpus-negative", put("spec.training.gpus", -1), ("spec.training.gpus", "greater than or equal to 0")),
    ("serving-gpus-too-many", put("spec.serving.gpus", 65), ("spec.serving.gpus", "less than or equal to 64")),
    ("max-trials-zero", put("spec.tuning.maxTrials", 0), ("spec.tuning.maxTrials", "greater than or equal to 1")),
    ("max-replicas-zero", both(put("spec.serving.minReplicas", 0), put("spec.serving.maxReplicas", 0)),
     ("spec.serving.maxReplicas", "greater than or equal to 1")),
    ("min-replicas-negative", put("spec.serving.minReplicas", -1), ("spec.serving.minReplicas",)),
    ("pipeline-timeout-zero", put("spec.pipeline.timeoutSeconds", 0), ("spec.pipeline.timeoutSeconds",)),
    ("backoff-limit-negative", put("spec.training.backoffLimit", -1), ("spec.training.backoffLimit",)),
    ("clean-pod-policy-unknown", put("spec.training.cleanPodPolicy", "Finished"),
     ("spec.training.cleanPodPolicy: Unsupported value",)),
    ("parameter-step-zero", put(f"{PARAM}.1.step", 0), (f"{PARAM}[1].step",)),
    ("model-name-empty", put("spec.model.name", ""), ("spec.model.name",)),
    ("model-name-too-long", put("spec.model.name", "m" * 257), ("spec.model.name: Too long",)),
    ("parameters-empty", put(f"{PARAM}", []), (PARAM, "at least 1 items")),
    ("parameters-too-many",
     put(f"{PARAM}", [{"name": f"p{i}", "type": "categorical", "values": ["a"]} for i in range(33)]),
     (PARAM, "Too many")),
    ("parameter-values-empty", put(f"{PARAM}.2.values", []), (f"{PARAM}[2].values",)),
    # Patterns and formats.
    ("parameter-name-pattern", put(f"{PARAM}.0.name", "1lr"), (f"{PARAM}[0].name",)),
    ("tracking-uri-not-http", put("spec.mlflow.trackingUri", "ftp://mlflow.example.com"),
     ("spec.mlflow.trackingUri",)),
    ("package-url-not-http", put("spec.pipeline.package", {"url": "file:///etc/passwd"}),
     ("spec.pipeline.package.url",)),
    ("quantity-pattern", put("spec.training.resources.limits.memory", "lots"),
     ("spec.training.resources.limits.memory",)),
    ("serving-quantity-pattern", put("spec.serving.resources.requests.cpu", "-1"),
     ("spec.serving.resources.requests.cpu",)),
    ("service-account-pattern", put("spec.training.serviceAccountName", "Trainer_SA"),
     ("spec.training.serviceAccountName",)),
    ("secret-name-pattern", put("spec.mlflow.credentialsSecretRef.name", "MLflow Creds"),
     ("spec.mlflow.credentialsSecretRef.name",)),
    ("env-name-with-equals", put("spec.training.env.0.name", "A=B"), ("spec.training.env[0].name",)),
    ("threshold-not-a-number", put("spec.gate.threshold", "high"), ("spec.gate.threshold", "must be of type number")),
    # Lists keyed by name.
    ("parameter-names-duplicate", put(f"{PARAM}.1.name", "lr"), (f"{PARAM}[1]: Duplicate value",)),
    ("env-names-duplicate", put("spec.training.env.1.name", "LOG_LEVEL"), ("spec.training.env[1]: Duplicate value",)),
    ("additional-metrics-duplicate", put("spec.tuning.objective.additionalMetricNames", ["val_loss", "val_loss"]),
     ("spec.tuning.objective.additionalMetricNames[1]: Duplicate value",)),
    # CEL: tuning parameters.
    ("cel-min-above-max", both(put(f"{PARAM}.0.min", 0.5), put(f"{PARAM}.0.max", 0.1)),
     (f"{PARAM}[0].min", "min must be less than or equal to max")),
    # Whole numbers in number fields are compared as numbers too.
    ("cel-int-min-above-max", both(put(f"{PARAM}.1.min", 30), put(f"{PARAM}.1.max", 20)),
     (f"{PARAM}[1].min", "min must be less than or equal to max")),
    ("cel-mixed-min-above-max", both(put(f"{PARAM}.0.min", 1), put(f"{PARAM}.0.max", 0.5)),
     (f"{PARAM}[0].min", "min must be less than or equal to max")),
    ("cel-double-without-max", drop(f"{PARAM}.0.max"),
     (f"{PARAM}[0]", "double and int parameters need both min and max")),
    ("cel-int-without-min", drop(f"{PARAM}.1.min"), (f"{PARAM}[1]", "double and int parameters need both min and max")),
    ("cel-categorical-with-min", put(f"{PARAM}.2.min", 1),
     (f"{PARAM}[2]", "categorical and discrete parameters take values, not min, max or step")),
    ("cel-discrete-with-step", put(f"{PARAM}.3.step", 32),
     (f"{PARAM}[3]", "categorical and discrete parameters take values, not min, max or step")),
    ("cel-categorical-without-values", drop(f"{PARAM}.2.values"),
     (f"{PARAM}[2].values", "categorical and discrete parameters need values")),
    ("cel-double-with-values", put(f"{PARAM}.0.values", ["0.1"]),
     (f"{PARAM}[0].values", "values is only for categorical and discrete parameters")),
    # CEL: trial counts and the objective.
    ("cel-parallel-above-max", put("spec.tuning.parallelTrials", 13),
     ("spec.tuning.parallelTrials", "parallelTrials must not exceed maxTrials")),
    ("cel-failed-above-max", put("spec.tuning.maxFailedTrials", 13),
     ("spec.tuning.maxFailedTrials", "maxFailedTrials must not exceed maxTrials")),
    ("cel-objective-among-additional", put("spec.tuning.objective.additionalMetricNames", ["val_loss", "val_accuracy"]),
     ("spec.tuning.objective.additionalMetricNames", "additionalMetricNames must not contain metricName")),
    # CEL: spec-wide.
    ("cel-tuning-without-gate", drop("spec.gate"), ("spec.gate", "gate is required when tuning is set")),
    ("cel-package-both-sources",
     put("spec.pipeline.package.url", "https://artifacts.example.com/p.yaml"),
     ("spec.pipeline.package", "exactly one of configMapKeyRef and url must be set")),
    ("cel-package-no-source", put("spec.pipeline.package", {}),
     ("spec.pipeline.package", "exactly one of configMapKeyRef and url must be set")),
    ("cel-min-replicas-above-max", put("spec.serving.minReplicas", 7),
     ("spec.serving.minReplicas", "minReplicas must not exceed maxReplicas")),
    # CEL: backend-specific training fields.
    ("cel-runtime-ref-with-pytorchjob", put("spec.training.runtimeRef", {"name": "torch-distributed"}),
     ("spec.training.runtimeRef", "runtimeRef is only valid with backend TrainJob")),
    ("cel-restart-policy-with-trainjob", both(put("spec.training.backend", "TrainJob"), drop("spec.training.backoffLimit")),
     ("spec.training.restartPolicy", "restartPolicy is only valid with backend PyTorchJob")),
    ("cel-backoff-limit-with-trainjob", both(put("spec.training.backend", "TrainJob"), drop("spec.training.restartPolicy")),
     ("spec.training.backoffLimit", "backoffLimit is only valid with backend PyTorchJob")),
    ("cel-clean-pod-policy-with-trainjob", both(put("spec.training.backend", "TrainJob"),
                                                drop("spec.training.restartPolicy"), drop("spec.training.backoffLimit"),
                                                put("spec.training.cleanPodPolicy", "All")),
     ("spec.training.cleanPodPolicy", "cleanPodPolicy is only valid with backend PyTorchJob")),
    # CEL: container details.
    ("cel-env-value-and-value-from",
     put("spec.training.env.1.value", "inline"), ("spec.training.env[1]", "set either value or valueFrom, not both")),
    ("cel-toleration-exists-with-value", put("spec.training.tolerations.0.value", "a100"),
     ("spec.training.tolerations[0].value", "a toleration with operator Exists must not set value")),
    ("cel-hyperparameter-name", put("spec.training.hyperparameters", {"lr --evil": "1"}),
     ("spec.training.hyperparameters", "hyperparameter names must start with a letter")),
]


def test_the_invalid_cases_are_distinct():
    ids = [case[0] for case in INVALID]
    assert len(ids) == len(set(ids)) >= 25


@pytest.mark.parametrize(("mutation", "expected"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_an_invalid_traindeploy_is_rejected_naming_the_field(mutation, expected, api_client,
                                                            rejection_namespace):
    body = manifests.full("invalid")
    mutation(body)
    with pytest.raises(ApiException) as rejected:
        _create(api_client, rejection_namespace, body)
    assert rejected.value.status == 422, rejected.value.body
    answer = _rejection(rejected.value)
    for words in expected:
        assert words in answer, answer


def test_each_case_starts_from_a_valid_manifest(api_client, rejection_namespace):
    """Guards the table above: without the mutation the base manifest passes (dry run)."""
    _api(api_client).create_namespaced_custom_object(
        GROUP, VERSION, rejection_namespace, PLURAL, manifests.full("base"), dry_run="All")


def test_the_rules_also_hold_on_update(api_client, namespace):
    _create(api_client, namespace, manifests.full())
    api = _api(api_client)
    with pytest.raises(ApiException) as rejected:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn-full",
                                           {"spec": {"tuning": {"parallelTrials": 20}}})
    assert rejected.value.status == 422
    assert "parallelTrials must not exceed maxTrials" in _rejection(rejected.value)
    # Switching the backend without removing PyTorchJob-only fields is caught too.
    with pytest.raises(ApiException) as rejected:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "churn-full",
                                           {"spec": {"training": {"backend": "TrainJob"}}})
    assert "restartPolicy is only valid with backend PyTorchJob" in _rejection(rejected.value)


# -- the CRD file itself ---------------------------------------------------------------------------

def _schemas(schema: dict, path: str = ""):
    """Every (path, schema) under `schema`, following properties, items and additionalProperties."""
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _schemas(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _schemas(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schemas(schema["additionalProperties"], f"{path}{{}}")


def _crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def test_every_field_has_a_description():
    root = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = [path or "." for path, schema in _schemas(root)
                    if "description" not in schema
                    # List items and map values are described by their list or map; the
                    # apiserver describes metadata itself and refuses a description there.
                    and not path.endswith(("[]", "{}")) and path != ".metadata"]
    assert undocumented == []


def test_every_cel_rule_has_a_message_and_bounded_inputs():
    root = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, schema in _schemas(root):
        for rule in schema.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{path}: {rule['rule']}"
        if schema.get("type") == "array":
            assert "maxItems" in schema, f"{path}: lists need maxItems for the CEL cost estimate"


def test_the_installed_crd_is_structural_and_established(api_client):
    crd = client.ApiextensionsV1Api(api_client).read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions.get("Established") == "True"
    assert conditions.get("NonStructuralSchema") in (None, "False")
    assert crd.spec.names.short_names == ["td"]
    assert crd.spec.names.categories == ["traindeploy", "ml"]
