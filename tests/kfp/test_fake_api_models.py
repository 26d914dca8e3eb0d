"""The KFP test double against the real API: the `kfp_server_api` 2.17.3 client and models.

If the fake drifted from the v2beta1 API, the operator's tests would pass against a server that
does not exist. These tests hold it to the generated models field by field: the fake's schema
equals the models' attribute maps, every key it emits is a model attribute, and the generated
client (the one `kfp.Client` uses) deserialises its answers with the fields the real server sets.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import kfp_server_api
import pytest
import requests
from kfp_server_api import models

from harness.kfp_fake import ENUMS, MESSAGES

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": float}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
# The real healthz handler is hand-written in the API server's main.go and also writes these two
# keys, which V2beta1GetHealthzResponse does not declare (the client ignores them).
HEALTHZ_EXTRAS = {"commit_sha", "tag_name"}


def kfp_filter(key: str, value: str) -> str:
    """The filter exactly as kfp.Client builds it (kfp/client/client.py)."""
    return json.dumps({"predicates": [{"operation": 1, "key": key, "stringValue": value}]})


def enum_values(klass: type) -> set[str]:
    return {v for k, v in vars(klass).items() if k.isupper() and isinstance(v, str)}


def walk(data, type_name: str, where: str = "$") -> None:
    """Fail unless `data` is exactly something the model type can hold: no unknown keys."""
    if type_name.startswith("list["):
        assert isinstance(data, list), where
        for i, item in enumerate(data):
            walk(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        inner = re.match(r"dict\(([^,]*), (.*)\)", type_name).group(2)
        assert isinstance(data, dict), where
        for key, item in data.items():
            walk(item, inner, f"{where}.{key}")
        return
    if type_name == "object":
        return
    if type_name == "datetime":
        assert isinstance(data, str) and RFC3339.match(data), f"{where}: {data!r} is not RFC 3339"
        return
    if type_name in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[type_name]) and not (
            type_name == "int" and isinstance(data, bool)), f"{where}: {data!r} is not {type_name}"
        return
    klass = getattr(models, type_name)
    if not klass.openapi_types:  # an enum
        assert data in enum_values(klass), f"{where}: {data!r} is not a {type_name}"
        return
    assert isinstance(data, dict), f"{where}: expected an object for {type_name}"
    if klass is models.ProtobufAny:
        # protojson embeds the packed message's own fields next to "@type".
        assert isinstance(data.get("@type"), str) and data["@type"].startswith("type.googleapis.com/"), where
        return
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    for key, value in data.items():
        assert key in by_json, f"{where}: {key!r} is not an attribute of {type_name}"
        walk(value, klass.openapi_types[by_json[key]], f"{where}.{key}")


def model_type(kind: str) -> str:
    """The fake's field type written as the model's openapi type."""
    if kind.startswith("list:"):
        return f"list[{model_type(kind[5:])}]"
    if kind.startswith("map:"):
        return f"dict(str, {model_type(kind[4:])})"
    if kind.startswith(("msg:", "enum:")):
        return kind.split(":", 1)[1]
    return {"string": "str", "int32": "int", "int64": "str", "bool": "bool", "timestamp": "datetime",
            "struct": "object", "value": "object"}[kind]


@pytest.fixture
def api(kfp_fake):
    client = kfp_server_api.ApiClient(kfp_server_api.Configuration(host=kfp_fake.url))
    yield client
    client.close()


@pytest.fixture
def services(api):
    return (kfp_server_api.ExperimentServiceApi(api), kfp_server_api.RunServiceApi(api),
            kfp_server_api.HealthzServiceApi(api))


# -- the schema itself ----------------------------------------------------------------------------

@pytest.mark.parametrize("message", sorted(MESSAGES))
def test_fake_schema_equals_model(message):
    klass = getattr(models, message)
    assert set(MESSAGES[message]) == set(klass.attribute_map.values())
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    for field, kind in MESSAGES[message].items():
        assert model_type(kind) == klass.openapi_types[by_json[field]], f"{message}.{field}"


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_fake_enums_equal_model(enum):
    assert set(ENUMS[enum]) == enum_values(getattr(models, enum))


def test_every_model_reachable_from_run_and_experiment_is_covered():
    seen: set[str] = set()
    todo = ["V2beta1Run", "V2beta1ListRunsResponse", "V2beta1ListExperimentsResponse",
            "V2beta1GetHealthzResponse", "V2beta1Filter"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for type_name in getattr(models, name).openapi_types.values():
            for ref in re.findall(r"[A-Z]\w+", type_name):
                todo.append(ref)
    for name in seen:
        assert name in MESSAGES or name in ENUMS or name == "ProtobufNullValue", name


# -- the generated client against the fake --------------------------------------------------------

def test_healthz(services):
    health = services[2].healthz_service_get_healthz()
    assert health.multi_user is False
    assert health.pipeline_store == "database"


def test_experiment_run_round_trip(kfp_fake, services, pipeline_spec):
    experiments, runs, _ = services
    created = experiments.experiment_service_create_experiment(
        models.V2beta1Experiment(display_name="traindeploy-ns-demo", description="demo"))
    assert created.experiment_id and created.display_name == "traindeploy-ns-demo"
    assert isinstance(created.created_at, datetime)
    assert created.storage_state == "AVAILABLE"
    assert created.namespace is None  # single-user: "" is left out of the JSON
    assert created.last_run_created_at.timestamp() == 0  # set, at the epoch, until a run exists

    found = experiments.experiment_service_list_experiments(
        filter=kfp_filter("display_name", "traindeploy-ns-demo"))
    assert [e.experiment_id for e in found.experiments] == [created.experiment_id]
    assert found.total_size == 1 and found.next_page_token is None

    run = runs.run_service_create_run(models.V2beta1Run(
        display_name="td-demo-gen1", experiment_id=created.experiment_id, pipeline_spec=pipeline_spec,
        runtime_config=models.V2beta1RuntimeConfig(parameters={"rows": 10, "src": "s3://x"})))
    assert run.run_id and run.experiment_id == created.experiment_id
    assert run.state == "PENDING" and run.storage_state == "AVAILABLE"
    assert run.created_at == run.scheduled_at
    assert run.finished_at.timestamp() == 0  # the real server writes the epoch until it finishes
    assert [s.state for s in run.state_history] == ["PENDING"]
    assert run.pipeline_spec == pipeline_spec
    assert run.runtime_config.parameters == {"rows": 10, "src": "s3://x"}
    assert run.service_account == "pipeline-runner"
    assert run.run_details is None and run.error is None

    kfp_fake.advance(5)
    kfp_fake.set_run_state(run.run_id, "RUNNING")
    got = runs.run_service_get_run(run.run_id)
    assert got.state == "RUNNING"
    assert [s.state for s in got.state_history] == ["PENDING", "RUNNING"]
    assert got.run_details.pipeline_run_context_id
    assert got.run_details.task_details[0].display_name == "prep-data"

    kfp_fake.advance(5)
    kfp_fake.set_run_state(run.run_id, "FAILED", error_message="prepare: exit code 1")
    listed = runs.run_service_list_runs(experiment_id=created.experiment_id,
                                        filter=kfp_filter("display_name", "td-demo-gen1"))
    assert listed.total_size == 1
    failed = listed.runs[0]
    assert failed.state == "FAILED" and failed.error.message == "prepare: exit code 1"
    assert failed.finished_at > failed.created_at
    assert failed.state_history[-1].error.message == "prepare: exit code 1"

    again = experiments.experiment_service_get_experiment(created.experiment_id)
    assert again.last_run_created_at == run.created_at


def test_lists_without_matches_leave_out_the_list(kfp_fake, services):
    _, runs, _ = services
    empty = runs.run_service_list_runs(filter=kfp_filter("display_name", "nothing"))
    # Unpopulated fields are not written: kfp.Client callers see None, not [].
    assert empty.runs is None and empty.total_size is None and empty.next_page_token is None


def test_errors_are_google_rpc_status(services):
    _, runs, _ = services
    with pytest.raises(kfp_server_api.ApiException) as caught:
        runs.run_service_get_run("no-such-run")
    assert caught.value.status == 404
    body = json.loads(caught.value.body)
    walk(body, "GoogleRpcStatus")
    assert body["code"] == 5 and "Run no-such-run not found" in body["message"]
    assert body["details"] == [{"@type": "type.googleapis.com/google.rpc.Status", "code": 5,
                                "message": "Run no-such-run not found"}]


# -- every key the fake emits is a model attribute ------------------------------------------------

def test_every_emitted_key_is_a_model_attribute(kfp_fake, pipeline_spec, pipeline_platform_yaml):
    from traindeploy.kfp import load_pipeline_package

    base = kfp_fake.url + "/apis/v2beta1"
    http = requests.Session()

    def call(method: str, path: str, **kwargs) -> dict:
        response = http.request(method, base + path, timeout=5, **kwargs)
        return response.json()

    experiment = call("POST", "/experiments", json={"display_name": "walk", "description": "d"})
    walk(experiment, "V2beta1Experiment")
    platform = load_pipeline_package(pipeline_platform_yaml)
    run_ids = []
    for i, spec in enumerate([pipeline_spec, platform]):
        run = call("POST", "/runs", json={
            "display_name": f"walk-{i}", "experiment_id": experiment["experiment_id"],
            "description": "all fields", "pipeline_spec": spec,
            "runtime_config": {"parameters": {"rows": 1, "nested": {"a": [1, None, "x"]}},
                               "pipeline_root": "s3://bucket/root"}})
        walk(run, "V2beta1Run")
        run_ids.append(run["run_id"])
    version = kfp_fake.add_pipeline_version(pipeline_spec)
    by_ref = call("POST", "/runs", json={"display_name": "walk-ref", "experiment_id": experiment["experiment_id"],
                                         "pipeline_version_reference": {"pipeline_id": version[0],
                                                                        "pipeline_version_id": version[1]}})
    walk(by_ref, "V2beta1Run")
    for state in ("RUNNING", "PAUSED", "CANCELING", "CANCELED"):
        kfp_fake.set_run_state(run_ids[0], state, error_message="stopped" if state == "CANCELED" else None)
    kfp_fake.set_run_state(run_ids[1], "SUCCEEDED")
    call("POST", f"/runs/{by_ref['run_id']}:archive")

    for run_id in run_ids + [by_ref["run_id"]]:
        walk(call("GET", f"/runs/{run_id}"), "V2beta1Run")
    walk(call("GET", "/runs", params={"page_size": 1}), "V2beta1ListRunsResponse")
    walk(call("GET", "/runs", params={"experiment_id": experiment["experiment_id"]}), "V2beta1ListRunsResponse")
    walk(call("GET", "/experiments"), "V2beta1ListExperimentsResponse")
    walk(call("GET", f"/experiments/{experiment['experiment_id']}"), "V2beta1Experiment")
    for record in kfp_fake.runs.values():
        walk(record, "V2beta1Run")
    for record in kfp_fake.experiments.values():
        walk(record, "V2beta1Experiment")
    for path in ("/runs/nope", "/experiments/nope", "/nowhere"):
        walk(call("GET", path), "GoogleRpcStatus")
    walk(call("POST", "/runs", data=b"{not json"), "GoogleRpcStatus")

    health = call("GET", "/healthz")
    assert set(health) - HEALTHZ_EXTRAS == {"multi_user", "pipeline_store"}
    walk({k: v for k, v in health.items() if k not in HEALTHZ_EXTRAS}, "V2beta1GetHealthzResponse")

    # Responses with the ids the real server writes as int64 strings.
    details = kfp_fake.runs[run_ids[0]]["run_details"]
    assert isinstance(details["pipeline_context_id"], str)
    assert isinstance(details["task_details"][0]["execution_id"], str)
