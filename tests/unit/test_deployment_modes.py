"""KServe's deployment mode across versions (UPSTREAM.md, errata): v0.15 knows only the annotation
values Serverless and RawDeployment and silently uses its default for any other (v0.15.2 reports
the mode it uses in status.deploymentMode, in those names; v0.15.0 reports none); v0.16 and later
know Knative and Standard too, rewrite the legacy values, and report the mode in the new names. With no mode chosen, serving acts on the mode KServe resolved."""

from __future__ import annotations

import pytest

from traindeploy import serving
from traindeploy.children import inferenceservice as isvc_child
from traindeploy.results import Wait
from unit.fakes import FakeKube, FakeMlflow, environment, minimal_spec, run_stage, traindeploy
from unit.test_serving_readiness import _isvc, _status

ANNOTATION = isvc_child.DEPLOYMENT_MODE_ANNOTATION


def _admitted(annotation: str | None = None, status_mode: str | None = None) -> dict:
    obj = {"metadata": {"name": "churn", "annotations": {ANNOTATION: annotation} if annotation else {}},
           "status": {"deploymentMode": status_mode} if status_mode else {}}
    return obj


@pytest.mark.parametrize(("reason", "mode", "evidence", "expected"), [
    ("nothing known yet: the legacy name every version knows", "Knative", None, "Serverless"),
    ("nothing known yet, Standard", "Standard", None, "RawDeployment"),
    ("v0.15 admitted the object and reports no mode", "Standard", _admitted("RawDeployment"), "RawDeployment"),
    ("v0.16+ rewrote the legacy value: keep what it holds", "Knative", _admitted("Knative"), "Knative"),
    ("v0.16+ reports status.deploymentMode: the new names", "Standard", _admitted(None, "Knative"), "Standard"),
    ("v0.15.2 reports status.deploymentMode in the legacy names it alone knows", "Standard",
     _admitted(None, "Serverless"), "RawDeployment"),
    ("held value of another mode is not kept", "Knative", _admitted("RawDeployment"), "Serverless"),
])
def test_mode_annotation(reason, mode, evidence, expected):
    assert isvc_child.mode_annotation(mode, evidence) == expected, reason


@pytest.mark.parametrize(("reason", "obj", "expected"), [
    ("not created yet", None, None),
    ("status.deploymentMode (v0.16+)", _admitted(None, "Standard"), "Standard"),
    ("legacy status value", _admitted(None, "RawDeployment"), "Standard"),
    ("status wins over the annotation", _admitted("Serverless", "Standard"), "Standard"),
    ("v0.15 webhook wrote its Raw default", _admitted("RawDeployment"), "Standard"),
    ("no annotation, no status mode: KServe's Knative default", _admitted(), "Knative"),
    ("ModelMesh is neither", _admitted("ModelMesh"), None),
])
def test_resolved_mode(reason, obj, expected):
    assert isvc_child.resolved_mode(obj) == expected, reason


def test_a_chosen_mode_is_written_as_v015_understands_it():
    kube = FakeKube()
    spec = minimal_spec(serving={"deploymentMode": "Standard"})
    status = {**_status(), "serving": {}}
    run_stage(serving.STAGE, traindeploy(spec, status, generation=2), environment(kube, FakeMlflow()))
    assert kube.object("inferenceservices", "churn")["metadata"]["annotations"][ANNOTATION] == "RawDeployment"


def test_no_mode_chosen_follows_the_mode_kserve_resolved():
    """KServe's default is Standard here: a canary must run as a second InferenceService behind the
    route, not as a canaryTrafficPercent that Standard mode ignores."""
    kube = FakeKube()
    kube.objects[("inferenceservices", "churn")] = _isvc("Standard", "s3://models/m/1")
    kube.predictor_deployment("churn", "s3://models/m/1")
    spec = minimal_spec(serving={"canary": {"steps": [20, 100]}, "gateway": {"name": "gw"}})
    outcome = run_stage(serving.STAGE, traindeploy(spec, _status(), generation=2), environment(kube, FakeMlflow()))
    assert isinstance(outcome.result, Wait)
    assert outcome.status["rollout"]["mode"] == "Standard"
    assert "canaryTrafficPercent" not in kube.object("inferenceservices", "churn")["spec"]["predictor"]
    assert kube.object("inferenceservices", "churn-canary")["spec"]["predictor"]["model"]["storageUri"] == \
        "s3://models/m/2"
    assert ANNOTATION not in kube.object("inferenceservices", "churn-canary")["metadata"]["annotations"], \
        "the mode stays KServe's to choose"
