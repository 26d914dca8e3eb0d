"""When cycles start: spec changes, retrain annotations, schedules, and the queue (pure, table-driven)."""

from __future__ import annotations

import datetime as dt

from traindeploy import lifecycle as lc
from traindeploy import triggers

NOW = dt.datetime(2026, 11, 23, 10, 0, 30, tzinfo=dt.timezone.utc)
SPEC = {"model": {"name": "m"}, "training": {"image": "a"}}


def status(phase: str, **extra) -> dict:
    return {"phase": phase, "cycle": {"generation": 1, "specHash": lc.training_spec_hash(SPEC)}, **extra}


def test_the_first_cycle_starts_from_the_spec():
    decision = triggers.decide(SPEC, {}, {}, NOW)
    assert (decision.start, decision.supersede) == ("spec", False)


def test_a_spec_change_supersedes_a_running_cycle_and_drops_the_queue():
    changed = {**SPEC, "training": {"image": "b"}}
    decision = triggers.decide(changed, {}, status("Training", retrain={"queued": "annotation:x"}), NOW)
    assert (decision.start, decision.supersede) == ("spec", True)
    assert "queued" not in decision.retrain


def test_a_serving_only_change_starts_nothing():
    decision = triggers.decide({**SPEC, "serving": {"minReplicas": 3}}, {}, status("Ready"), NOW)
    assert decision.start is None


def test_a_new_retrain_token_starts_a_cycle_when_idle():
    decision = triggers.decide(SPEC, {triggers.ANNOTATION_RETRAIN: "t1"}, status("Ready"), NOW)
    assert decision.start == "annotation:t1"
    assert decision.retrain == {"lastToken": "t1"}
    # The same token again starts nothing.
    again = triggers.decide(SPEC, {triggers.ANNOTATION_RETRAIN: "t1"}, status("Ready", retrain=decision.retrain), NOW)
    assert again.start is None


def test_requests_during_a_cycle_queue_and_the_newest_wins():
    first = triggers.decide(SPEC, {triggers.ANNOTATION_RETRAIN: "a"}, status("Canary"), NOW)
    assert first.start is None and first.retrain["queued"] == "annotation:a"
    second = triggers.decide(SPEC, {triggers.ANNOTATION_RETRAIN: "b"}, status("Canary", retrain=first.retrain), NOW)
    assert second.start is None and second.retrain["queued"] == "annotation:b"
    done = triggers.decide(SPEC, {triggers.ANNOTATION_RETRAIN: "b"}, status("Failed", retrain=second.retrain), NOW)
    assert done.start == "annotation:b" and "queued" not in done.retrain


def test_a_schedule_counts_from_when_it_is_first_seen_then_fires():
    spec = {**SPEC, "retrain": {"schedule": "0 * * * *"}}
    first = triggers.decide(spec, {}, status("Ready"), NOW)
    assert first.start is None
    assert first.retrain["lastScheduledAt"] == "2026-11-23T10:00:00Z"
    assert first.next_check == 3570  # 10:59:30 until 11:00:00
    later = NOW + dt.timedelta(hours=1)
    fired = triggers.decide(spec, {}, status("Ready", retrain=first.retrain), later)
    assert fired.start == "schedule:2026-11-23T11:00:00Z"


def test_cycle_labels():
    assert triggers.cycle_label(3, 0) == "g3"
    assert triggers.cycle_label(3, 2) == "g3r2"
