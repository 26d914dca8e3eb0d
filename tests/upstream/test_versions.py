"""The version differences the operator copes with, checked against each supported release's own
CRDs and sources, as the Go module proxy serves the tags (harness.upstream_versions).

- Kubeflow Trainer: v2.0/v2.1 have neither `runtimePatches` nor `activeDeadlineSeconds`, and an
  apiserver prunes unknown fields silently: the operator reads the served CRD, writes only what it
  has, and holds a cycle that needs a missing field (TrainerCapabilityMissing).
- KServe: the deployment-mode names each release knows (v0.15 only the legacy ones, which it
  also reports in `status.deploymentMode` from v0.15.2), and the annotation the operator writes
  after seeing what each release admitted.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from children.samples import GPU, INJECTED_ENV, TRAINING_TRAINJOB, meta
from harness.upstream_versions import KSERVE, RELEASES, TRAINER, release_dir
from traindeploy.children import inferenceservice, trainjob

TRAINJOB_CRD = "manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml"
ISVC_CRD = "config/crd/full/serving.kserve.io_inferenceservices.yaml"
KSERVE_CONSTANTS = "pkg/constants/constants.go"

# What the README's support matrix says about each release.
TRAINJOB_FIELDS = {"v2.0.0": set(), "v2.1.0": set(), "v2.2.0": {"runtimePatches", "activeDeadlineSeconds"},
                   "v2.3.0": {"runtimePatches", "activeDeadlineSeconds"}}
KNOWS_NEW_MODE_NAMES = {"v0.15.0": False, "v0.15.2": False, "v0.16.0": True, "v0.20.0": True}
REPORTS_STATUS_MODE = {"v0.15.0": False, "v0.15.2": True, "v0.16.0": True, "v0.20.0": True}


@functools.cache
def _crd(module: str, version: str, path: str) -> dict:
    # libyaml's loader: KServe's InferenceService CRD is a megabyte of YAML.
    text = (release_dir(module, version) / path).read_text()
    (crd,) = [doc for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if doc]
    return crd


def _schema(crd: dict, version: str) -> dict:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict, path: str = "") -> list[str]:
    """Paths in `value` that `schema` does not know, which the apiserver would prune silently."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        found = []
        for key, item in value.items():
            if properties is not None and key in properties:
                found += unknown_fields(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, f"{path}.{key}")
            elif properties is not None or extra is False:
                found.append(f"{path}.{key}")
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [field for index, item in enumerate(value)
                for field in unknown_fields(item, schema["items"], f"{path}[{index}]")]
    return []


def test_the_release_table_covers_the_supported_versions():
    assert set(TRAINJOB_FIELDS) == set(RELEASES[TRAINER])
    assert set(KNOWS_NEW_MODE_NAMES) == set(REPORTS_STATUS_MODE) == set(RELEASES[KSERVE])


@pytest.mark.parametrize("version", RELEASES[TRAINER])
def test_each_trainer_release_gets_a_trainjob_its_apiserver_keeps_whole(version):
    """The fields the operator detects are the release's; the TrainJob it builds with them has no
    field that release's schema would prune; a spec needing a missing field is refused up front."""
    crd = _crd(TRAINER, version, TRAINJOB_CRD)
    fields = trainjob.served_fields(crd)
    assert fields == TRAINJOB_FIELDS[version]
    built = trainjob.build(meta("churn-g3"), TRAINING_TRAINJOB, env=INJECTED_ENV, hyperparameters={"lr": "0.01"},
                           gpu_resource=GPU, fields=fields)
    assert unknown_fields(built["spec"], _schema(crd, trainjob.VERSION)["properties"]["spec"], "spec") == []
    # TRAINING_TRAINJOB sets activeDeadlineSeconds and pod scheduling: both need a field.
    missing = set(trainjob.needed_fields(TRAINING_TRAINJOB)) - fields
    assert missing == {"runtimePatches", "activeDeadlineSeconds"} - TRAINJOB_FIELDS[version]


def test_the_schema_walk_finds_what_an_older_release_would_prune():
    """The check above can fail: v2.0.0's schema does not know what the full builder writes."""
    crd = _crd(TRAINER, "v2.0.0", TRAINJOB_CRD)
    built = trainjob.build(meta("churn-g3"), TRAINING_TRAINJOB, env=INJECTED_ENV, hyperparameters={},
                           gpu_resource=GPU)
    assert set(unknown_fields(built["spec"], _schema(crd, trainjob.VERSION)["properties"]["spec"], "spec")) == {
        "spec.runtimePatches", "spec.activeDeadlineSeconds"}


def _mode_names(root: Path) -> set[str]:
    """The DeploymentModeType values a KServe release defines."""
    source = (root / KSERVE_CONSTANTS).read_text()
    return set(re.findall(r'^\s*\w+\s+DeploymentModeType\s*=\s*"(\w+)"', source, re.MULTILINE))


@pytest.mark.parametrize("version", RELEASES[KSERVE])
def test_each_kserve_release_is_written_a_mode_name_it_knows(version):
    """For a mode the user chose, the annotation the operator writes is one this release knows
    and maps to that mode, first with no evidence, then after the release admitted the stable
    InferenceService (its webhook's annotation, and status.deploymentMode where it reports one)."""
    root = release_dir(KSERVE, version)
    known = _mode_names(root) - {"ModelMesh"}
    new_names = set(inferenceservice.DEPLOYMENT_MODES)
    assert (new_names <= known) is KNOWS_NEW_MODE_NAMES[version]
    assert set(inferenceservice.LEGACY_MODE_VALUES.values()) <= known
    status_properties = _schema(_crd(KSERVE, version, ISVC_CRD), "v1beta1")["properties"]["status"]["properties"]
    assert ("deploymentMode" in status_properties) is REPORTS_STATUS_MODE[version]
    for mode in inferenceservice.DEPLOYMENT_MODES:
        first = inferenceservice.mode_annotation(mode, None)
        assert first in known and inferenceservice.normal_mode(first) == mode
        # What this release makes of it: v0.16+ rewrite a legacy name and report the new one.
        held = mode if KNOWS_NEW_MODE_NAMES[version] else first
        admitted = {"metadata": {"annotations": {inferenceservice.DEPLOYMENT_MODE_ANNOTATION: held}},
                    "status": {"deploymentMode": held} if REPORTS_STATUS_MODE[version] else {}}
        for other in inferenceservice.DEPLOYMENT_MODES:
            written = inferenceservice.mode_annotation(other, admitted)
            assert written in known and inferenceservice.normal_mode(written) == other, (mode, other, written)
        # An object another tool created without the annotation: only the status tells the version.
        reported = {"metadata": {}, "status": {"deploymentMode": held} if REPORTS_STATUS_MODE[version] else {}}
        written = inferenceservice.mode_annotation(mode, reported)
        assert written in known and inferenceservice.normal_mode(written) == mode
