"""Every manifest under examples/ is accepted by the real control plane, whole.

Each YAML document with an apiVersion and a kind is server-side applied into a fresh namespace,
the way a user (or Argo CD with ServerSideApply=true) would, and what the apiserver stored is
compared with what was sent: a field the schema does not know would be pruned silently, so a
dropped field fails the test. Documents without apiVersion and kind are not Kubernetes objects
(the compiled KFP pipeline IR under examples/pipelines/) and are skipped.

A kind whose CRD is not installed here cannot be applied. That is Argo CD's Application: its CRD
is not among the upstream CRDs the test control plane installs (shared/crds/upstream/ holds Katib,
Training Operator, Trainer, KServe and Gateway API). Such a document is checked instead against
the fields of its type, written down below; a kind with neither a CRD nor a checker fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from examples import argocd_cm
from harness.assertions import dropped_fields
from harness.paths import OUR_CRDS, REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
TRAINDEPLOYS = EXAMPLES / "traindeploys"


def manifest_files() -> list[Path]:
    return sorted(p for pattern in ("*.yaml", "*.yml") for p in EXAMPLES.rglob(pattern))


def objects(path: Path) -> list[dict]:
    """The Kubernetes objects in a file: documents with both apiVersion and kind."""
    return [doc for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")]


FILES_WITH_OBJECTS = [p for p in manifest_files() if objects(p)]


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


# -- Argo CD Application: its fields, as in argoproj.io/v1alpha1 (pkg/apis/application/v1alpha1) ----

ANY_MAP, ANY_LIST = dict, list
SOURCE_FIELDS = {
    "repoURL": str, "path": str, "targetRevision": str, "chart": str, "ref": str, "name": str,
    "directory": {"recurse": bool, "include": str, "exclude": str, "jsonnet": ANY_MAP},
    "helm": ANY_MAP, "kustomize": ANY_MAP, "plugin": ANY_MAP,
}
APPLICATION_FIELDS = {
    "apiVersion": str,
    "kind": str,
    "metadata": {"name": str, "namespace": str, "labels": ANY_MAP, "annotations": ANY_MAP,
                 "finalizers": [str]},
    "spec": {
        "project": str,
        "source": SOURCE_FIELDS,
        "sources": [SOURCE_FIELDS],
        "destination": {"server": str, "name": str, "namespace": str},
        "syncPolicy": {
            "automated": {"prune": bool, "selfHeal": bool, "allowEmpty": bool, "enabled": bool},
            "syncOptions": [str],
            "retry": {"limit": int, "backoff": {"duration": str, "factor": int, "maxDuration": str}},
            "managedNamespaceMetadata": {"labels": ANY_MAP, "annotations": ANY_MAP},
        },
        "ignoreDifferences": ANY_LIST,
        "info": ANY_LIST,
        "revisionHistoryLimit": int,
    },
}
# Application-level sync options Argo CD understands (each written Key=value).
SYNC_OPTIONS = {"Validate", "CreateNamespace", "PrunePropagationPolicy", "PruneLast", "ApplyOutOfSyncOnly",
                "Replace", "ServerSideApply", "RespectIgnoreDifferences", "FailOnSharedResource",
                "SkipDryRunOnMissingResource"}


def _shape_problems(value: Any, shape: Any, path: str) -> list[str]:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path} must be an object"]
        problems = []
        for key, item in value.items():
            if key not in shape:
                problems.append(f"{path}.{key} is not a field of an Argo CD Application")
            else:
                problems += _shape_problems(item, shape[key], f"{path}.{key}")
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{path} must be a list"]
        return [p for i, item in enumerate(value) for p in _shape_problems(item, shape[0], f"{path}[{i}]")]
    if shape is int and isinstance(value, bool) or not isinstance(value, shape):
        return [f"{path} must be of type {shape.__name__}"]
    return []


def argocd_application_problems(app: dict) -> list[str]:
    """What Argo CD would refuse, or silently ignore, in an Application; empty when it is sound."""
    problems = _shape_problems(app, APPLICATION_FIELDS, "")
    if app.get("apiVersion") != "argoproj.io/v1alpha1" or app.get("kind") != "Application":
        problems.append("must be apiVersion argoproj.io/v1alpha1, kind Application")
    if not (app.get("metadata") or {}).get("name"):
        problems.append(".metadata.name is required")
    spec = app.get("spec") or {}
    if not spec.get("project"):
        problems.append(".spec.project is required")
    if ("source" in spec) == ("sources" in spec):
        problems.append("exactly one of .spec.source and .spec.sources is required")
    for i, source in enumerate(spec.get("sources") or [spec.get("source") or {}]):
        where = f".spec.sources[{i}]" if "sources" in spec else ".spec.source"
        if not isinstance(source, dict):
            continue
        if not source.get("repoURL"):
            problems.append(f"{where}.repoURL is required")
        if not source.get("chart") and not source.get("path"):
            problems.append(f"{where}.path is required for a Git source")
        if not source.get("targetRevision"):
            problems.append(f"{where}.targetRevision should name the branch, tag or commit to follow")
    destination = spec.get("destination") or {}
    if bool(destination.get("server")) == bool(destination.get("name")):
        problems.append("exactly one of .spec.destination.server and .spec.destination.name is required")
    if not destination.get("namespace"):
        problems.append(".spec.destination.namespace is required for namespaced objects")
    sync = spec.get("syncPolicy")
    if not isinstance(sync, dict):
        problems.append(".spec.syncPolicy is required")
    else:
        for option in sync.get("syncOptions") or []:
            key, sep, value = str(option).partition("=")
            if not sep or not value or key not in SYNC_OPTIONS:
                problems.append(f"sync option {option!r} is not Key=value with a key Argo CD knows")
    return problems


NOT_SERVED_CHECKERS: dict[tuple[str, str], Callable[[dict], list[str]]] = {
    ("argoproj.io/v1alpha1", "Application"): argocd_application_problems,
}


# -- applying ---------------------------------------------------------------------------------------------


def served(control_plane, api_version: str, kind: str) -> bool:
    """Whether the control plane serves this kind (discovery, as kubectl itself would find it)."""
    path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    result = control_plane.kubectl_run("get", "--raw", path, check=False)
    if result.returncode != 0:
        return False
    return any(r.get("kind") == kind for r in json.loads(result.stdout).get("resources", []))


def stored_objects(output: str) -> dict[tuple[str, str], dict]:
    data = json.loads(output)
    items = data["items"] if data.get("kind") == "List" else [data]
    return {(item["kind"], item["metadata"]["name"]): item for item in items}


@pytest.mark.parametrize("path", FILES_WITH_OBJECTS, ids=_rel)
def test_example_is_accepted_without_pruning(path: Path, control_plane, namespace, tmp_path):
    """Server-side applied as it is; the apiserver keeps every field that was sent."""
    docs = objects(path)
    to_apply, checked = [], []
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if served(control_plane, *key):
            to_apply.append(doc)
        elif key in NOT_SERVED_CHECKERS:
            assert NOT_SERVED_CHECKERS[key](doc) == [], f"{_rel(path)}: {doc['kind']} {doc['metadata']['name']}"
            checked.append(doc)
        else:
            pytest.fail(f"{_rel(path)}: {doc['apiVersion']} {doc['kind']} is neither served by the test control "
                        "plane nor checked by this test; add its CRD or a checker to NOT_SERVED_CHECKERS")
    if not to_apply:
        return
    source = path
    if len(to_apply) != len(docs):  # apply the servable documents of a mixed file, as they are
        source = tmp_path / path.name
        source.write_text(yaml.safe_dump_all(to_apply, sort_keys=False))
    result = control_plane.kubectl_run("apply", "--server-side", "-n", namespace, "-f", str(source), "-o", "json",
                                       check=False)
    assert result.returncode == 0, f"{_rel(path)} was refused:\n{result.stderr}"
    stored = stored_objects(result.stdout)
    for doc in to_apply:
        name = doc["metadata"]["name"]
        got = stored[(doc["kind"], name)]
        assert got["metadata"]["namespace"] == namespace
        assert dropped_fields(doc, got) == [], f"{_rel(path)}: {doc['kind']} {name} lost fields"


def test_the_examples_cover_what_the_docs_promise():
    kinds = {(p.name, doc["kind"]) for p in FILES_WITH_OBJECTS for doc in objects(p)}
    assert {("minimal.yaml", "TrainDeploy"), ("full.yaml", "TrainDeploy"), ("trainjob.yaml", "TrainDeploy"),
            ("application.yaml", "Application"), ("argocd-cm-health.yaml", "ConfigMap")} <= kinds
    full = objects(TRAINDEPLOYS / "full.yaml")[0]["spec"]
    assert {"pipeline", "tuning", "training", "gate", "serving"} <= set(full)
    assert full["pipeline"]["package"] == {"configMapKeyRef": {"name": "prep-pipeline", "key": "pipeline.yaml"}}
    assert "--from-file=pipeline.yaml=examples/pipelines/prep_pipeline.yaml" in (TRAINDEPLOYS / "full.yaml").read_text()
    assert full["training"]["workers"] >= 1 and full["training"]["gpus"] >= 1
    assert len({p["type"] for p in full["tuning"]["parameters"]}) >= 3
    trainjob = objects(TRAINDEPLOYS / "trainjob.yaml")[0]["spec"]["training"]
    assert trainjob["backend"] == "TrainJob"


def _serving_schema() -> dict:
    crd = yaml.safe_load((OUR_CRDS / "traindeploy.io_traindeploys.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["serving"]["properties"]


def test_full_example_uses_the_canary_fields_exactly_when_the_crd_has_them():
    """serving.canary and serving.approval appear in full.yaml only if the CRD defines them;
    otherwise they wait there as a commented block."""
    serving = objects(TRAINDEPLOYS / "full.yaml")[0]["spec"]["serving"]
    schema = _serving_schema()
    for field_name in ("canary", "approval"):
        assert (field_name in serving) == (field_name in schema), field_name
    if "canary" in serving:
        assert serving["canary"] == {"steps": [10, 50, 100], "stepIntervalSeconds": 300}
        assert serving["approval"] == "Manual"
    else:
        assert "# canary:" in (TRAINDEPLOYS / "full.yaml").read_text()


def test_traindeploy_examples_can_live_in_one_namespace():
    """The Application syncs the whole folder into one namespace: names and models must differ."""
    docs = [doc for p in sorted(TRAINDEPLOYS.glob("*.yaml")) for doc in objects(p)]
    assert docs and {doc["kind"] for doc in docs} == {"TrainDeploy"}
    assert all("namespace" not in doc["metadata"] for doc in docs)
    assert len({doc["metadata"]["name"] for doc in docs}) == len(docs)
    assert len({doc["spec"]["model"]["name"] for doc in docs}) == len(docs)


# -- the Argo CD files --------------------------------------------------------------------------------------


def test_application_syncs_the_traindeploy_examples_with_server_side_apply():
    (app,) = objects(EXAMPLES / "argocd" / "application.yaml")
    assert argocd_application_problems(app) == []
    spec = app["spec"]
    assert spec["source"]["path"] == _rel(TRAINDEPLOYS)
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"]
    assert spec["destination"]["namespace"]


@pytest.mark.parametrize(("change", "problem"), [
    (lambda a: a["spec"].pop("project"), ".spec.project is required"),
    (lambda a: a["spec"]["destination"].update(name="in-cluster"), "exactly one of .spec.destination.server"),
    (lambda a: a["spec"]["source"].pop("repoURL"), ".spec.source.repoURL is required"),
    (lambda a: a["spec"]["syncPolicy"]["automated"].update(selfheal=True),
     ".spec.syncPolicy.automated.selfheal is not a field"),
    (lambda a: a["spec"]["syncPolicy"]["automated"].update(prune="true"), "prune must be of type bool"),
    (lambda a: a["spec"]["syncPolicy"]["syncOptions"].append("ServerSideApply"), "is not Key=value"),
    (lambda a: a["spec"].update(sources=[a["spec"]["source"]]), "exactly one of .spec.source and .spec.sources"),
], ids=["no-project", "server-and-name", "no-repo", "misspelt-field", "string-bool", "bare-option", "two-sources"])
def test_the_application_checker_catches_mistakes(change, problem):
    """The structural check is not vacuous: each mistake Argo CD would refuse or ignore is found."""
    (app,) = objects(EXAMPLES / "argocd" / "application.yaml")
    change(app)
    assert any(problem in p for p in argocd_application_problems(app)), argocd_application_problems(app)


def test_argocd_cm_snippet_is_generated_from_the_chart_scripts():
    expected = argocd_cm.render()
    assert argocd_cm.OUTPUT.read_text() == expected, (
        "examples/argocd/argocd-cm-health.yaml is out of date; run "
        "`PYTHONPATH=tests .venv/bin/python -m examples.argocd_cm`")
    (configmap,) = objects(argocd_cm.OUTPUT)
    assert configmap["metadata"]["name"] == "argocd-cm"
    assert configmap["data"] == {key: path.read_text() for key, path in argocd_cm.scripts().items()}
    assert set(configmap["data"]) == {"resource.customizations.health.traindeploy.io_TrainDeploy",
                                      "resource.customizations.health.kubeflow.org_Experiment",
                                      "resource.customizations.health.kubeflow.org_PyTorchJob"}
