"""Setting a condition that has not changed changes nothing; transitions keep their time."""

from __future__ import annotations

from traindeploy import conditions as cond


def test_setting_the_same_condition_twice_is_a_no_op():
    first = cond.set_condition([], cond.TRAINING, cond.UNKNOWN, "Training", "running", 1, "2026-01-01T00:00:00Z")
    again = cond.set_condition(first, cond.TRAINING, cond.UNKNOWN, "Training", "running", 1, "2026-01-01T00:05:00Z")
    assert again == first


def test_transition_time_moves_only_when_status_changes():
    first = cond.set_condition([], cond.TRAINING, cond.UNKNOWN, "Training", "pending", 1, "2026-01-01T00:00:00Z")
    reworded = cond.set_condition(first, cond.TRAINING, cond.UNKNOWN, "Training", "running", 1,
                                  "2026-01-01T00:01:00Z")
    assert cond.get(reworded, cond.TRAINING)["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    done = cond.set_condition(reworded, cond.TRAINING, cond.TRUE, "TrainingSucceeded", "ok", 1,
                              "2026-01-01T00:02:00Z")
    assert cond.get(done, cond.TRAINING)["lastTransitionTime"] == "2026-01-01T00:02:00Z"


def test_conditions_are_kept_in_stage_order_with_observed_generation():
    conditions = []
    for condition_type in (cond.READY, cond.SERVING, cond.TRAINING, cond.PIPELINE):
        conditions = cond.set_condition(conditions, condition_type, cond.UNKNOWN, "X", "", 7, "2026-01-01T00:00:00Z")
    assert [c["type"] for c in conditions] == [cond.PIPELINE, cond.TRAINING, cond.SERVING, cond.READY]
    assert {c["observedGeneration"] for c in conditions} == {7}
