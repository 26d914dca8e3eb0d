"""Reading compiled KFP v2 packages the way kfp.Client does before it inlines them in a run."""

from __future__ import annotations

import json

import pytest

from traindeploy.kfp import load_pipeline_package


def test_single_document_is_the_pipeline_spec(pipeline_yaml):
    spec = load_pipeline_package(pipeline_yaml)
    assert spec["pipelineInfo"]["name"] == "prep-data"
    assert spec["schemaVersion"] == "2.1.0" and spec["sdkVersion"] == "kfp-2.16.1"
    assert set(spec["root"]["dag"]["tasks"]) == {"prepare"}
    assert "exec-prepare" in spec["deploymentSpec"]["executors"]
    assert spec["components"]["comp-prepare"]["executorLabel"] == "exec-prepare"
    json.dumps(spec)  # goes into a JSON request body as it is


def test_json_package_reads_the_same(pipeline_yaml):
    spec = load_pipeline_package(pipeline_yaml)
    assert load_pipeline_package(json.dumps(spec, indent=2)) == spec


def test_platform_spec_document(pipeline_platform_yaml, pipeline_yaml):
    package = load_pipeline_package(pipeline_platform_yaml)
    assert set(package) == {"pipeline_spec", "platform_spec"}
    assert package["pipeline_spec"] == load_pipeline_package(pipeline_yaml)
    executors = package["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-prepare"]["secretAsEnv"][0]["secretName"] == "s3-creds"


def test_run_body_form_is_accepted(pipeline_platform_yaml):
    package = load_pipeline_package(pipeline_platform_yaml)
    assert load_pipeline_package(json.dumps(package)) == package


def test_timestamps_stay_strings():
    text = "pipelineInfo: {name: p}\nroot: {dag: {tasks: {}}}\nschemaVersion: 2.1.0\n" \
           "defaultDate: 2026-11-23\nwhen: 2026-11-23T10:00:00Z\n"
    spec = load_pipeline_package(text)
    assert spec["defaultDate"] == "2026-11-23" and spec["when"] == "2026-11-23T10:00:00Z"
    json.dumps(spec)


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("---\n---\n", "empty"),
    ("a: [1, 2\n", "not valid YAML or JSON"),
    ("- 1\n- 2\n", "expected a mapping, got list"),
    ("just text", "expected a mapping, got str"),
    ("root: {dag: {}}\n", "pipelineInfo.name is missing"),
    ("pipelineInfo: {name: ''}\nroot: {dag: {}}\n", "pipelineInfo.name is missing"),
    ("pipelineInfo: {name: p}\n", "root is missing"),
    ("pipelineInfo: {name: p}\nroot: {}\nschemaVersion: 1.0.0\n", "schemaVersion"),
    ("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: p-}\n", "Argo Workflow"),
    ("pipelineInfo: {name: p}\nroot: {}\n---\nkubernetes: {}\n", "not a PlatformSpec"),
    ("pipelineInfo: {name: p}\nroot: {}\n---\nplatforms: {}\n---\nplatforms: {}\n", "has 3 YAML documents"),
    ('{"pipeline_spec": {"root": {}}}', "pipelineInfo.name is missing"),
    ('{"pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {}}, "extra": 1}', "unknown keys"),
])
def test_invalid_packages(text, words):
    with pytest.raises(ValueError) as caught:
        load_pipeline_package(text)
    assert words in str(caught.value)
