"""How the KFP test double answers: validation, filters, pagination and test controls, each as the
real API server would (see the module docstring of harness.kfp_fake for the sources)."""

from __future__ import annotations

import json

import pytest
import requests

from harness.kfp_fake import KfpFake


class Api:
    def __init__(self, fake: KfpFake) -> None:
        self.base = fake.url + "/apis/v2beta1"
        self.http = requests.Session()

    def __call__(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        response = self.http.request(method, self.base + path, timeout=5, **kwargs)
        return response.status_code, response.json()

    def ok(self, method: str, path: str, **kwargs) -> dict:
        status, body = self(method, path, **kwargs)
        assert status == 200, body
        return body


def predicate(operation, key, **value) -> dict:
    return {"operation": operation, "key": key, **value}


def filt(*predicates) -> str:
    return json.dumps({"predicates": list(predicates)})


@pytest.fixture
def api(kfp_fake) -> Api:
    return Api(kfp_fake)


@pytest.fixture
def experiment(api) -> str:
    return api.ok("POST", "/experiments", json={"display_name": "exp"})["experiment_id"]


def new_run(api, experiment, spec, name, **extra) -> dict:
    return api.ok("POST", "/runs", json={"display_name": name, "experiment_id": experiment,
                                         "pipeline_spec": spec, **extra})


# -- request validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "syntax error"),
    (json.dumps({"display_name": "r", "colour": "red"}).encode(), 400, 'unknown field "colour"'),
    (json.dumps({"display_name": 5}).encode(), 400, "invalid value"),
    (json.dumps({"display_name": "r"}).encode(), 400, "empty pipeline spec"),
    (json.dumps({"display_name": "r", "pipeline_spec": {"root": {}}}).encode(), 400, "pipelineInfo"),
    # KFP's converter wraps "Run name cannot be empty" in an internal error: HTTP 500.
    (json.dumps({"pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {}}}).encode(), 500,
     "Run name cannot be empty"),
    (b"", 500, "Run name cannot be empty"),
])
def test_create_run_validation(api, body, status, words):
    got, answer = api("POST", "/runs", data=body, headers={"Content-Type": "application/json"})
    assert got == status
    assert words in answer["message"]
    assert isinstance(answer["code"], int)


def test_create_run_needs_exactly_one_pipeline_source(kfp_fake, api, experiment, pipeline_spec):
    pid, vid = kfp_fake.add_pipeline_version(pipeline_spec)
    status, body = api("POST", "/runs", json={
        "display_name": "r", "experiment_id": experiment, "pipeline_spec": pipeline_spec,
        "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id": vid}})
    assert status == 400 and "oneof" in body["message"]
    status, body = api("POST", "/runs", json={
        "display_name": "r", "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id": "v9"}})
    assert status == 404 and body["code"] == 5


def test_create_run_in_unknown_experiment_is_404(api, pipeline_spec):
    status, body = api("POST", "/runs", json={"display_name": "r", "experiment_id": "e-missing",
                                              "pipeline_spec": pipeline_spec})
    assert status == 404
    assert body["code"] == 5 and "Experiment e-missing not found" in body["message"]
    assert body["details"][0]["message"] == "Experiment e-missing not found"


def test_create_run_accepts_json_names_and_defaults_to_default_experiment(kfp_fake, api, pipeline_spec):
    run = api.ok("POST", "/runs", json={"displayName": "camel", "pipelineSpec": pipeline_spec,
                                        "runtimeConfig": {"parameters": {"rows": 3}, "pipelineRoot": "s3://r"}})
    default = next(e for e in kfp_fake.experiments.values() if e["display_name"] == "Default")
    assert run["experiment_id"] == default["experiment_id"]
    assert run["runtime_config"] == {"parameters": {"rows": 3}, "pipeline_root": "s3://r"}


def test_experiment_validation(api):
    assert api("POST", "/experiments", json={})[0] == 400
    assert api("POST", "/experiments", json={"display_name": "Same"})[0] == 200
    status, body = api("POST", "/experiments", json={"display_name": "same"})  # case-insensitive index
    assert status == 409 and body["code"] == 6


def test_routing_errors(api):
    assert api("GET", "/pipelines/x") == (404, {"code": 5, "message": "Not Found"})
    assert api("PUT", "/runs")[0] == 501
    assert api("POST", "/runs/abc:retire")[0] == 404


# -- filters --------------------------------------------------------------------------------------

def test_filter_operations_and_spellings(kfp_fake, api, experiment, pipeline_spec):
    ids = {name: new_run(api, experiment, pipeline_spec, name)["run_id"]
           for name in ("alpha-1", "alpha-2", "beta-1")}
    kfp_fake.set_run_state(ids["alpha-2"], "SUCCEEDED")

    def names(*predicates) -> list[str]:
        body = api.ok("GET", "/runs", params={"experiment_id": experiment, "filter": filt(*predicates),
                                              "sort_by": "name"})
        return [r["display_name"] for r in body.get("runs", [])]

    assert names(predicate(1, "display_name", stringValue="ALPHA-1")) == ["alpha-1"]  # ignores case
    assert names(predicate("EQUALS", "display_name", string_value="alpha-1")) == ["alpha-1"]
    assert names(predicate(2, "display_name", stringValue="alpha-1")) == ["alpha-2", "beta-1"]
    assert names(predicate(8, "display_name", stringValues={"values": ["beta-1", "alpha-2"]})) == ["alpha-2", "beta-1"]
    assert names(predicate("IS_SUBSTRING", "name", stringValue="pha")) == ["alpha-1", "alpha-2"]
    assert names(predicate(1, "state", stringValue="SUCCEEDED")) == ["alpha-2"]
    assert names(predicate(1, "run_id", stringValue=ids["beta-1"])) == ["beta-1"]
    assert names(predicate(1, "display_name", stringValue="alpha-1"),
                 predicate(1, "state", stringValue="PENDING")) == ["alpha-1"]
    created = kfp_fake.runs[ids["alpha-1"]]["created_at"]
    assert len(names(predicate(5, "created_at", timestampValue=created))) == 3
    assert names(predicate(3, "created_at", timestampValue=created)) == []


@pytest.mark.parametrize("bad", [
    "{not json",
    filt(predicate(0, "display_name", stringValue="x")),
    filt(predicate(1, "colour", stringValue="x")),
    filt(predicate(1, "display_name")),
    filt(predicate(8, "display_name", stringValue="x")),
    filt(predicate(1, "display_name", stringValues={"values": ["x"]})),
    filt(predicate(9, "display_name", intValue=3)),
    filt(predicate(1, "display_name", stringValue="x", intValue=1)),
    json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": "x", "op": 1}]}),
])
def test_bad_filters_are_400(api, bad):
    status, body = api("GET", "/runs", params={"filter": bad})
    assert status == 400 and body["code"] == 3


# -- pagination -----------------------------------------------------------------------------------

def test_keyset_pagination(kfp_fake, api, experiment, pipeline_spec):
    made = []
    for i in range(7):
        made.append(new_run(api, experiment, pipeline_spec, f"page-{i}")["run_id"])
        kfp_fake.advance(1)
    seen, token, pages = [], "", 0
    params = {"experiment_id": experiment, "page_size": 3, "sort_by": "created_at desc",
              "filter": filt(predicate(9, "display_name", stringValue="page-"))}
    while True:
        body = api.ok("GET", "/runs", params={**params, "page_token": token} if token else params)
        pages += 1
        assert body["total_size"] == 7
        seen += [r["run_id"] for r in body["runs"]]
        token = body.get("next_page_token", "")
        if not token:
            break
    assert pages == 3 and seen == made[::-1]
    # Token alone carries the filter and sort; a different sort with it is rejected.
    first = api.ok("GET", "/runs", params=params)
    rest = api.ok("GET", "/runs", params={"experiment_id": experiment, "page_size": 3,
                                          "page_token": first["next_page_token"]})
    assert [r["run_id"] for r in rest["runs"]] == made[::-1][3:6]
    status, _ = api("GET", "/runs", params={**params, "sort_by": "name", "page_token": first["next_page_token"]})
    assert status == 400
    assert api("GET", "/runs", params={"page_token": "%%%"})[0] == 400
    assert api("GET", "/runs", params={"page_size": -1})[0] == 400
    assert api("GET", "/runs", params={"sort_by": "colour"})[0] == 400


# -- run actions and test controls ----------------------------------------------------------------

def test_terminate_archive_delete(kfp_fake, api, experiment, pipeline_spec):
    run = new_run(api, experiment, pipeline_spec, "stop-me")
    rid = run["run_id"]
    assert api.ok("POST", f"/runs/{rid}:terminate") == {}
    assert kfp_fake.runs[rid]["state"] == "CANCELING"
    kfp_fake.set_run_state(rid, "CANCELED")
    status, body = api("POST", f"/runs/{rid}:terminate")  # nothing left to terminate
    assert status == 400 and "Row not found" in body["message"]
    assert api.ok("POST", f"/runs/{rid}:archive") == {}
    assert kfp_fake.runs[rid]["storage_state"] == "ARCHIVED"
    assert api.ok("POST", f"/runs/{rid}:unarchive") == {}
    assert api.ok("DELETE", f"/runs/{rid}") == {}
    assert api("GET", f"/runs/{rid}")[0] == 404


def test_set_run_state(kfp_fake, api, experiment, pipeline_spec):
    rid = new_run(api, experiment, pipeline_spec, "states")["run_id"]
    with pytest.raises(ValueError):
        kfp_fake.set_run_state(rid, "DONE")
    kfp_fake.advance(3)
    shown = kfp_fake.set_run_state(rid, "SUCCEEDED")
    assert shown["finished_at"] != "1970-01-01T00:00:00Z"
    assert [h["state"] for h in shown["state_history"]] == ["PENDING", "SUCCEEDED"]
    assert shown == api.ok("GET", f"/runs/{rid}")


def test_require_token_and_request_log(kfp_fake, api):
    kfp_fake.require_token("t0ken")
    assert api("GET", "/healthz")[0] == 401
    assert api("GET", "/runs", headers={"Authorization": "Bearer other"})[0] == 403
    assert api("GET", "/runs", headers={"Authorization": "Bearer t0ken"})[0] == 200
    logged = kfp_fake.requests[-1]
    assert logged.method == "GET" and logged.path == "/apis/v2beta1/runs"
    assert logged.headers["Authorization"] == "Bearer <redacted>"
    assert "t0ken" not in repr(kfp_fake.requests)
    kfp_fake.require_token(None)
    assert api("GET", "/healthz")[0] == 200


def test_outage(kfp_fake, api):
    kfp_fake.outage(True)
    status, body = api("GET", "/healthz")
    assert status == 503 and body["code"] == 14
    kfp_fake.outage(False)
    assert api("GET", "/healthz")[0] == 200


def test_multi_user_needs_namespaces(pipeline_spec):
    with KfpFake(multi_user=True) as fake:
        api = Api(fake)
        assert api.ok("GET", "/healthz")["multi_user"] is True
        assert not fake.experiments  # no Default experiment in multi-user mode
        assert api("POST", "/experiments", json={"display_name": "e"})[0] == 400
        assert api("GET", "/experiments")[0] == 400
        exp = api.ok("POST", "/experiments", json={"display_name": "e", "namespace": "team-a"})
        assert exp["namespace"] == "team-a"
        assert api.ok("GET", "/experiments", params={"namespace": "team-b"}) == {}
        assert api("POST", "/runs", json={"display_name": "r", "pipeline_spec": pipeline_spec})[0] == 400
        run = new_run(api, exp["experiment_id"], pipeline_spec, "r")
        assert api.ok("GET", "/runs", params={"namespace": "team-a"})["runs"][0]["run_id"] == run["run_id"]
