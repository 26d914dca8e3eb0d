"""What wakes a TrainDeploy's loop and what makes a conflicting status write be recomputed: the
spec, the status and the annotations the operator acts on, not kopf's bookkeeping or other tools'
marks."""

from __future__ import annotations

import copy

from traindeploy import handlers, triggers


def _td(**annotations: str) -> dict:
    return {"metadata": {"name": "churn", "generation": 1, "annotations": dict(annotations)},
            "spec": {"model": {"name": "m"}}, "status": {"phase": "Training"}}


def test_kopf_and_other_tools_annotations_change_nothing():
    before = _td()
    after = _td(**{"traindeploy.io/kopf-managed": "yes", "traindeploy.io/last-handled-configuration": "{}",
                   "traindeploy.io/stop_outside_work": "{}", "argocd.argoproj.io/tracking-id": "app:x"})
    assert handlers._interesting(after) == handlers._interesting(before)
    assert handlers._same_inputs(before, after), "a conflict from kopf's patch writes the same status again"


def test_what_the_operator_reads_makes_it_look_again():
    before = _td()
    for annotation in triggers.USER_ANNOTATIONS:
        assert handlers._interesting(_td(**{annotation: "2"})) != handlers._interesting(before), annotation
    changed_spec, changed_status = copy.deepcopy(before), copy.deepcopy(before)
    changed_spec["spec"]["model"]["name"] = "other"
    changed_status["status"]["phase"] = "Ready"
    assert not handlers._same_inputs(before, changed_spec)
    assert not handlers._same_inputs(before, changed_status), "someone else wrote status: recompute"
