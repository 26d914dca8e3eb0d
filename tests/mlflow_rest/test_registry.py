"""Registration, version lookup by tags, download URIs, aliases and version tags on the real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from traindeploy.mlflow_rest import MlflowApiError, mlflow_artifacts_to_storage

from .conftest import unique

CYCLE = "traindeploy.io/cycle"


def _register(rest, trained, name: str, cycle: str) -> dict:
    """The operator's registration step: find the cycle's version, or create it."""
    tags = {CYCLE: cycle, "traindeploy.io/run-id": trained.run_id}
    rest.ensure_registered_model(name, description="managed by TrainDeploy")
    return rest.find_model_version(name, tags) or rest.create_model_version(
        name, f"models:/{trained.model_id}", trained.run_id, model_id=trained.model_id, tags=tags)


def test_ensure_registered_model_is_idempotent(rest):
    name = unique("td-model")
    rest.ensure_registered_model(name, description="first")
    rest.ensure_registered_model(name, description="second")
    assert MlflowClient(rest.base_url).get_registered_model(name).description == "first"


def test_registration_is_found_again_and_not_duplicated(rest, trained):
    name = unique("td-model")
    first = _register(rest, trained, name, "3")
    assert first["version"] == "1"
    again = _register(rest, trained, name, "3")
    assert again["version"] == "1"
    assert [v.version for v in MlflowClient(rest.base_url).search_model_versions(f"name='{name}'")] == ["1"]
    assert _register(rest, trained, name, "4")["version"] == "2"


def test_model_version_is_normalised(rest, trained):
    name = unique("td-model")
    created = _register(rest, trained, name, "1")
    version = rest.get_model_version(name, created["version"])
    assert version["name"] == name
    assert version["status"] == "READY"
    assert version["source"] == f"models:/{trained.model_id}"
    assert version["run_id"] == trained.run_id
    assert version["model_id"] == trained.model_id
    assert version["tags"] == {CYCLE: "1", "traindeploy.io/run-id": trained.run_id}
    assert version["aliases"] == []


def test_download_uri_is_the_logged_model_location(rest, trained, mlflow_server):
    name = unique("td-model")
    version = _register(rest, trained, name, "1")["version"]
    uri = rest.download_uri(name, version)
    model = rest.logged_model_for_run(rest.get_run(trained.run_id))
    assert uri == model["artifact_location"]
    local = Path(mlflow_artifacts_to_storage(uri, str(mlflow_server.artifacts_dir)))
    assert (local / "MLmodel").is_file()


def test_aliases_are_set_moved_and_read(rest, trained):
    name = unique("td-model")
    one = _register(rest, trained, name, "1")["version"]
    two = _register(rest, trained, name, "2")["version"]
    assert rest.alias_version(name, "challenger") is None
    rest.set_alias(name, "challenger", one)
    rest.set_alias(name, "champion", one)
    assert rest.alias_version(name, "challenger") == one
    rest.set_alias(name, "challenger", two)
    assert rest.alias_version(name, "challenger") == two
    assert rest.alias_version(name, "champion") == one
    assert rest.get_model_version(name, one)["aliases"] == ["champion"]
    assert rest.get_model_version(name, two)["aliases"] == ["challenger"]
    # find_model_version fills in aliases, which the search endpoint leaves out.
    assert rest.find_model_version(name, {CYCLE: "2"})["aliases"] == ["challenger"]


def test_alias_of_a_missing_model_is_none(rest):
    assert rest.alias_version(unique("td-missing"), "champion") is None


def test_version_tags_are_written(rest, trained):
    name = unique("td-model")
    version = _register(rest, trained, name, "1")["version"]
    rest.set_model_version_tag(name, version, "traindeploy.io/gate", "passed")
    assert rest.get_model_version(name, version)["tags"]["traindeploy.io/gate"] == "passed"
    assert rest.find_model_version(name, {"traindeploy.io/gate": "passed"})["version"] == version


@pytest.mark.parametrize("value", [
    "it's", 'say "hi"', "it's \"both\"", "ends with \\", "50%_x", "a.b/c d", "héllo", "",
], ids=["single-quote", "double-quote", "both-quotes", "trailing-backslash", "like-wildcards",
        "punctuation", "non-ascii", "empty"])
def test_find_model_version_quotes_names_and_values_safely(rest, trained, value):
    name = unique("td-model's")
    rest.ensure_registered_model(name)
    key = "team/note: x-1"
    decoy = rest.create_model_version(name, f"models:/{trained.model_id}", trained.run_id,
                                      model_id=trained.model_id, tags={key: value + "-decoy"})
    wanted = rest.create_model_version(name, f"models:/{trained.model_id}", trained.run_id,
                                       model_id=trained.model_id, tags={key: value})
    assert decoy["version"] != wanted["version"]
    assert rest.find_model_version(name, {key: value})["version"] == wanted["version"]


def test_models_source_needs_the_model_id(rest, trained):
    name = unique("td-model")
    rest.ensure_registered_model(name)
    with pytest.raises(MlflowApiError) as caught:
        rest.create_model_version(name, f"models:/{trained.model_id}", trained.run_id, model_id=None, tags={})
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert caught.value.status == 400


def test_missing_version_and_model_are_api_errors(rest):
    with pytest.raises(MlflowApiError) as caught:
        rest.get_model_version(unique("td-missing"), "1")
    assert (caught.value.error_code, caught.value.status) == ("RESOURCE_DOES_NOT_EXIST", 404)
    assert rest.find_model_version(unique("td-missing"), {CYCLE: "1"}) is None
