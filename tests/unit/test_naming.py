"""Child names are deterministic, valid DNS labels within each kind's limit, and distinct."""

from __future__ import annotations

import re

import pytest

from traindeploy import naming

LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(("name", "cycle", "expected"), [
    ("churn", "g1", "churn-g1-train"),
    ("fraud-model", "g12r3", "fraud-model-g12r3-train"),
])
def test_short_names_are_kept_readable(name, cycle, expected):
    assert naming.training_job_name(name, cycle) == expected


@pytest.mark.parametrize("name", [
    "a" * 253,
    "model.v2.example.com",
    "9lives",
    "x" * 40 + "-" + "y" * 40,
])
@pytest.mark.parametrize(("builder", "limit"), [
    (lambda n: naming.training_job_name(n, "g123r45"), naming.JOB_NAME_MAX),
    (lambda n: naming.experiment_name(n, "g123r45"), naming.EXPERIMENT_NAME_MAX),
    (naming.canary_inference_service_name, naming.INFERENCESERVICE_NAME_MAX),
    (naming.inference_service_name, naming.INFERENCESERVICE_NAME_MAX),
])
def test_any_traindeploy_name_gives_a_valid_label_within_the_limit(name, builder, limit):
    result = builder(name)
    assert len(result) <= limit
    assert LABEL.match(result), result
    assert builder(name) == result  # deterministic


def test_names_cut_to_the_same_prefix_stay_distinct():
    first = naming.experiment_name("a" * 60 + "-one", "g1")
    second = naming.experiment_name("a" * 60 + "-two", "g1")
    assert first != second


def test_altered_name_does_not_collide_with_a_literal_one():
    # "td-9lives" could be a real TrainDeploy name; "9lives" must not map onto it.
    assert naming.inference_service_name("9lives") != naming.inference_service_name("td-9lives")


def test_children_carry_owner_reference_and_labels():
    td = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u-1"}}
    meta = naming.child_metadata(td, "churn-g2-train", "g2", "training")
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "traindeploy", "traindeploy.io/name": "churn",
                              "traindeploy.io/cycle": "g2", "traindeploy.io/stage": "training"}
    assert meta["ownerReferences"] == [{"apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy",
                                        "name": "churn", "uid": "u-1", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert naming.owner_uid({"metadata": meta}) == "u-1"
    assert naming.owner_uid({"metadata": {"ownerReferences": [{**meta["ownerReferences"][0],
                                                                 "controller": False}]}}) is None
