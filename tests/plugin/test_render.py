"""The plugin's pure parts, table-driven: states, the `get` view, history, what the annotation
commands decide, which pod's log is read. No cluster here."""

from __future__ import annotations

import copy
import datetime as dt
import io
import re
import types

import pytest
from kubernetes.client.rest import ApiException

from plugin import samples
from plugin.samples import NOW
from traindeploy import kubectl_plugin as kp

# -- states --------------------------------------------------------------------------------------

RUNNING_JOB = [samples.pytorchjob_condition("Created"), samples.pytorchjob_condition("Running")]


@pytest.mark.parametrize(("child", "want_state", "want_info"), [
    pytest.param(samples.pytorchjob(), "◌ Pending", "", id="pytorchjob-no-conditions"),
    pytest.param(samples.pytorchjob(conditions=RUNNING_JOB), "◌ Running", "", id="pytorchjob-running"),
    pytest.param(samples.pytorchjob(conditions=RUNNING_JOB + [samples.pytorchjob_condition("Restarting")]),
                 "◌ Restarting", "", id="pytorchjob-restarting"),
    pytest.param(samples.pytorchjob(conditions=RUNNING_JOB + [samples.pytorchjob_condition("Suspended")]),
                 "॥ Suspended", "", id="pytorchjob-suspended"),
    pytest.param(samples.pytorchjob(conditions=samples.SUCCEEDED_JOB), "✔ Succeeded", "", id="pytorchjob-succeeded"),
    pytest.param(samples.pytorchjob(conditions=RUNNING_JOB + [samples.pytorchjob_condition(
        "Failed", message="PyTorchJob churn-g4-train is failed because 1 Master replica(s) failed.")]),
        "✖ Failed", "PyTorchJob churn-g4-train is failed because 1 Master replica(s) failed.", id="pytorchjob-failed"),
    pytest.param(samples.trainjob(), "◌ Pending", "", id="trainjob-nothing-started"),
    pytest.param(samples.trainjob(jobs=[{"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0,
                                         "suspended": 0}]), "◌ Running", "", id="trainjob-active"),
    pytest.param(samples.trainjob([{"type": "Complete", "status": "True", "reason": "AllJobsCompleted"}]),
                 "✔ Succeeded", "", id="trainjob-complete"),
    pytest.param(samples.trainjob([{"type": "Suspended", "status": "True", "reason": "Suspended"}]),
                 "॥ Suspended", "", id="trainjob-suspended"),
    pytest.param(samples.trainjob([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                    "message": "TrainJob exceeded its active deadline"}]),
                 "✖ Failed", "TrainJob exceeded its active deadline", id="trainjob-failed"),
    pytest.param(samples.experiment(), "✔ Succeeded",
                 "trials 12 (11 succeeded, 1 failed), best churn-g4-tune-x7k2p 0.93", id="experiment-succeeded"),
    pytest.param(samples.inferenceservice(), "✔ Ready", "v4, canary 10%", id="isvc-knative-canary"),
    pytest.param(samples.inferenceservice(canary_percent=100), "✔ Ready", "v4", id="isvc-promoted"),
    pytest.param(samples.inferenceservice(ready=None), "◌ Pending", "v4, canary 10%", id="isvc-no-conditions"),
    pytest.param(samples.inferenceservice(canary_percent=None, ready="False", reason="PredictorNotReady"),
                 "◌ Progressing", "v4", id="isvc-not-ready"),
    pytest.param(samples.httproute(), "✔ Accepted", "churn-predictor 90, churn-canary-predictor 10",
                 id="route-accepted"),
    pytest.param(samples.httproute(50, accepted=None), "◌ Pending", "churn-predictor 50, churn-canary-predictor 50",
                 id="route-no-parent-status"),
    pytest.param(samples.httproute(accepted="False"), "✖ NotAccepted",
                 "churn-predictor 90, churn-canary-predictor 10", id="route-refused"),
    pytest.param({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, "? Unknown", "",
                 id="unknown-kind"),
])
def test_child_state(child, want_state, want_info):
    state, info = kp.child_state(child)
    assert (str(state), info) == (want_state, want_info)


def test_failed_model_load_fails_the_inferenceservice_even_while_ready():
    isvc = samples.inferenceservice()
    isvc["status"]["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad",
                                     "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no model.pkl"}}
    state, info = kp.child_state(isvc)
    assert (str(state), info) == ("✖ Failed", "v4, canary 10%, no model.pkl")


@pytest.mark.parametrize(("looked_up", "want"), [
    (True, ("⚠ NotFound", "in status.children, not in the cluster")),
    (False, ("? Unknown", "")),
], ids=["looked-up", "kind-not-served"])
def test_child_named_in_status_but_absent(looked_up, want):
    state, info = kp.child_state(None, looked_up=looked_up)
    assert (str(state), info) == want


@pytest.mark.parametrize(("status", "want"), [
    pytest.param(None, "◌ Pending", id="no-status-yet"),
    pytest.param({"phase": "Training"}, "◌ Training", id="in-progress"),
    pytest.param({"phase": "Ready"}, "✔ Ready", id="ready"),
    pytest.param({"phase": "Failed"}, "✖ Failed", id="failed"),
    pytest.param({"phase": "AwaitingApproval"}, "॥ AwaitingApproval", id="paused"),
    pytest.param({"phase": "Training", "conditions": [samples.condition(
        "Ready", "False", "MLflowUnavailable", "MLflow did not answer.")]}, "⚠ Training", id="blocked"),
])
def test_traindeploy_state(status, want):
    assert str(kp.traindeploy_state(samples.traindeploy(status))) == want


# -- the get view --------------------------------------------------------------------------------

CANARY_VIEW = """\
Name:      churn
Namespace: ml
Status:    ◌ Canary
Message:   Version 4 takes 10% of traffic.
Model:     churn-classifier, version 4 (val_accuracy 0.91, threshold 0.85: passed)
Cycle:     g4 (generation 4, trigger spec, started 2026-11-23T09:00:00Z, 60m ago)
Serving:   version 3 on InferenceService churn, http://churn.ml.example.com
Traffic:   v3 90%, v4 10%
Rollout:   ◌ Progressing (Knative)
  Canary:  v4 at 10%
  Stable:  v3
  Step:    1/3 (set weight 10%)
  Failed:  v2
Conditions:
  ✔ TrainingSucceeded  TrainingSucceeded  PyTorchJob churn-g4-train succeeded.
  ✔ GatePassed         GatePassed         val_accuracy 0.91 >= 0.85.
  ◌ ServingReady       Canary             Version 4 takes 10% of traffic.
  ◌ Ready              Canary             Version 4 takes 10% of traffic.

NAME                    KIND              STATUS       AGE   INFO
⟳ churn                 TrainDeploy       ◌ Canary     2d1h  v3 90%, v4 10%
├──# cycle:g4                                                current cycle, trigger spec
│  ├──⧉ a1b2c3          KFP run           ✔ Succeeded  59m   http://kfp.example.com/#/runs/details/a1b2c3
│  ├──⧉ churn-g4-tune   Experiment        ✔ Succeeded  55m   trials 12 (11 succeeded, 1 failed), best churn-g4-tune-x7k2p 0.93
│  └──⧉ churn-g4-train  PyTorchJob        ✔ Succeeded  50m   mlflow run 4f6e0c
├──# cycle:g3
│  └──⧉ churn-g3-train  PyTorchJob        ⚠ NotFound         in status.children, not in the cluster
└──# serving
   └──⧉ churn           InferenceService  ✔ Ready      2d    v4, canary 10%
"""


def test_a_knative_canary_drawn_whole():
    children = [samples.pytorchjob(conditions=samples.SUCCEEDED_JOB), samples.experiment(),
                samples.inferenceservice()]
    assert kp.render_get(samples.traindeploy(samples.CANARY), children, NOW) == CANARY_VIEW


def test_the_view_does_not_depend_on_the_order_children_come_in():
    children = [samples.inferenceservice(), samples.experiment(), samples.pytorchjob(conditions=samples.SUCCEEDED_JOB)]
    assert kp.render_get(samples.traindeploy(samples.CANARY), children, NOW) == CANARY_VIEW


def _lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.parametrize(("reason", "status", "children", "want_lines"), [
    ("a TrainDeploy the operator has not seen yet: summary and root only", None, [],
     ["Status:    ◌ Pending", "Model:     churn-classifier", "NAME     KIND         STATUS     AGE   INFO",
      "⟳ churn  TrainDeploy  ◌ Pending  2d1h"]),
    ("a manual approval says which command to run", samples.AWAITING, [],
     ["Status:     ॥ AwaitingApproval", "  Step:     before the first step",
      "  Approval: ॥ version 4 waits: kubectl traindeploy approve churn 4"]),
    ("a failed cycle names its stage", {"phase": "Failed", "failedStage": "gate", "conditions": [
        samples.condition("Ready", "False", "GateFailed", "val_accuracy 0.71 < 0.85."),
        samples.condition("GatePassed", "False", "GateFailed", "val_accuracy 0.71 < 0.85.")]}, [],
     ["Status:       ✖ Failed", "Message:      val_accuracy 0.71 < 0.85.", "Failed stage: gate",
      "  ✖ GatePassed  GateFailed  val_accuracy 0.71 < 0.85.", "  ✖ Ready       GateFailed  val_accuracy 0.71 < 0.85."]),
    ("a queued retrain is shown", {"phase": "Training", "retrain": {"queued": "annotation:again"}}, [],
     ["Queued:    annotation:again (starts when the running cycle ends)"]),
    ("a Standard-mode canary: two InferenceServices and the HTTPRoute that weights them",
     {**samples.CANARY, "rollout": {**samples.CANARY["rollout"], "mode": "Standard", "step": 1, "weight": 50},
      "children": []},
     [samples.inferenceservice(canary_percent=None, version="3"),
      samples.inferenceservice("churn-canary", canary_percent=None, ready="False", reason="PredictorNotReady"),
      samples.httproute(50)],
     ["Rollout:   ◌ Progressing (Standard)", "  Step:    2/3 (set weight 50%)",
      "└──# serving",
      "   ├──⧉ churn         InferenceService  ✔ Ready        2d    v3",
      "   ├──⧉ churn-canary  InferenceService  ◌ Progressing  2d    v4",
      "   └──⧉ churn         HTTPRoute         ✔ Accepted     15m   churn-predictor 50, churn-canary-predictor 50"]),
])
def test_view_details(reason, status, children, want_lines):
    lines = _lines(kp.render_get(samples.traindeploy(status), children, NOW))
    missing = [line for line in want_lines if line not in lines]
    assert not missing, f"{reason}: missing {missing} in\n" + "\n".join(lines)


def test_cycles_newest_first_then_serving_then_other():
    status = {**samples.CANARY, "pipeline": {}, "children": []}
    children = [samples.pytorchjob("churn-g2-train", cycle="g2"), samples.pytorchjob("churn-g3r1-train", cycle="g3r1"),
                samples.pytorchjob("churn-g3-train", cycle="g3"), samples.pytorchjob(),
                samples.inferenceservice(),
                {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "hand-made"}}]
    groups = [line for line in _lines(kp.render_get(samples.traindeploy(status), children, NOW)) if "──# " in line]
    assert [line.split("# ")[1].split()[0] for line in groups] == \
        ["cycle:g4", "cycle:g3r1", "cycle:g3", "cycle:g2", "serving", "other"]


def test_cycle_read_from_the_name_when_a_child_has_no_labels():
    """Entries of status.children that are not in the cluster carry no labels."""
    status = {**samples.CANARY, "children": [{"kind": "PyTorchJob", "name": "churn-g5r2-train"}]}
    text = kp.render_get(samples.traindeploy(status), [], NOW)
    assert "├──# cycle:g5r2" in text or "└──# cycle:g5r2" in text


def test_kinds_not_looked_up_are_unknown_not_missing():
    status = {**samples.CANARY, "children": [{"kind": "TrainJob", "name": "churn-g4-train"},
                                             {"kind": "InferenceService", "name": "churn"}]}
    text = kp.render_get(samples.traindeploy(status), [], NOW, looked_up={"InferenceService"})
    rows = {line.split("⧉ ")[1].split()[0]: line for line in _lines(text) if "⧉" in line and "KFP" not in line}
    assert "? Unknown" in rows["churn-g4-train"] and "⚠ NotFound" in rows["churn"]


def test_no_line_ends_in_spaces():
    children = [samples.pytorchjob(), samples.inferenceservice(), samples.httproute()]
    for status in (None, samples.CANARY, samples.AWAITING):
        text = kp.render_get(samples.traindeploy(status), children, NOW)
        assert all(line == line.rstrip() for line in _lines(text)) and text.endswith("\n")


# -- history -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "want"), [
    pytest.param({"rolloutHistory": []}, "No rollouts recorded for TrainDeploy ml/churn.\n", id="empty"),
    pytest.param(samples.CANARY, """\
VERSION      RESULT          PREVIOUS  AT                    REASON
3 (serving)  ManualRollback  2         2026-11-22T12:00:00Z  Rolled back by annotation.
2            Promoted        1         2026-11-21T12:00:00Z  All canary steps passed.
""", id="newest-first-serving-marked"),
])
def test_history(status, want):
    assert kp.render_history(samples.traindeploy(status)) == want


# -- what the annotation commands decide -----------------------------------------------------------


@pytest.mark.parametrize(("reason", "status", "annotations", "version", "want"), [
    ("nothing awaits and no version given", samples.CANARY, None, None,
     kp.Refuse("no version of TrainDeploy ml/churn awaits approval (status.rollout.awaitingApproval is empty)")),
    ("the waiting version by default", samples.AWAITING, None, None,
     kp.Annotate("traindeploy.io/approve", "4", "version 4 proceeds")),
    ("v4 names version 4", samples.AWAITING, None, "v4", kp.Annotate("traindeploy.io/approve", "4", "version 4 proceeds")),
    ("another version than the waiting one", samples.AWAITING, None, "5",
     kp.Refuse("version 5 does not await approval; version 4 does (the operator ignores an approval that names "
               "another version)")),
    ("approving ahead of the approval point", samples.CANARY, None, "5",
     kp.Annotate("traindeploy.io/approve", "5",
                 "no version awaits approval now; version 5 proceeds when it reaches its approval point")),
    ("the same approval again while nothing waits", samples.CANARY, {"traindeploy.io/approve": "v5"}, "5",
     kp.Refuse("traindeploy.io/approve=v5 is already set on TrainDeploy ml/churn")),
])
def test_decide_approve(reason, status, annotations, version, want):
    assert kp.decide_approve(samples.traindeploy(status, annotations=annotations), version) == want, reason


def _serving(version: str, last_rollback: str | None = None) -> dict:
    status = copy.deepcopy(samples.CANARY)
    status["serving"]["modelVersion"] = version
    if last_rollback:
        status["retrain"] = {"lastRollback": last_rollback}
    return status


@pytest.mark.parametrize(("reason", "status", "annotations", "version", "want"), [
    ("nothing serves", {"phase": "Training"}, None, "3",
     kp.Refuse("TrainDeploy ml/churn serves no version yet; there is nothing to roll back")),
    ("the serving version", _serving("3"), None, "v3", kp.Refuse("version 3 already serves TrainDeploy ml/churn")),
    ("a version the history does not know", _serving("3"), None, "7",
     kp.Refuse("version 7 is not in the rollout history of TrainDeploy ml/churn (versions it can return to: 2, 3); "
               "the operator would ignore it")),
    ("a version from the history", _serving("3"), None, "2",
     kp.Annotate("traindeploy.io/rollback", "2", "all traffic goes back to version 2 (serving now: version 3)")),
    ("the plain value was handled before: another spelling asks again", _serving("3", last_rollback="2"),
     {"traindeploy.io/rollback": "2"}, "2",
     kp.Annotate("traindeploy.io/rollback", "v2", "all traffic goes back to version 2 (serving now: version 3)")),
    ("both handled before", _serving("3", last_rollback="v2"), {"traindeploy.io/rollback": "2"}, "v2",
     kp.Annotate("traindeploy.io/rollback", "V2", "all traffic goes back to version 2 (serving now: version 3)")),
])
def test_decide_rollback(reason, status, annotations, version, want):
    assert kp.decide_rollback(samples.traindeploy(status, annotations=annotations), version) == want, reason


@pytest.mark.parametrize(("reason", "status", "annotations", "token", "want"), [
    ("a token from the clock", {"phase": "Ready"}, None, None,
     kp.Annotate("traindeploy.io/retrain", "20261123T100000Z", "a new training cycle starts")),
    ("the clock's token was used this second", {"phase": "Ready", "retrain": {"lastToken": "20261123T100000Z"}},
     {"traindeploy.io/retrain": "20261123T100000Z-1"}, None,
     kp.Annotate("traindeploy.io/retrain", "20261123T100000Z-2", "a new training cycle starts")),
    ("while a cycle runs the request is queued", {"phase": "Training"}, None, "nightly-7",
     kp.Annotate("traindeploy.io/retrain", "nightly-7", "a new training cycle is queued until the running one ends")),
    ("a token that was used", {"phase": "Ready", "retrain": {"lastToken": "nightly-7"}}, None, "nightly-7",
     kp.Refuse("traindeploy.io/retrain=nightly-7 was requested before; the operator starts a cycle once per new value")),
])
def test_decide_retrain(reason, status, annotations, token, want):
    assert kp.decide_retrain(samples.traindeploy(status, annotations=annotations), token, NOW) == want, reason


# -- which pod's log -----------------------------------------------------------------------------

PYTORCH = {"training": {"kind": "PyTorchJob", "name": "churn-g4-train"}}
TRAINJOB = {"training": {"kind": "TrainJob", "name": "churn-g4-train"}}


def _pt(name: str, replica: str, role: str | None = None, created: str = "2026-11-23T09:11:00Z") -> dict:
    labels = {"training.kubeflow.org/job-name": "churn-g4-train", "training.kubeflow.org/replica-type": replica}
    if role:
        labels["training.kubeflow.org/job-role"] = role
    return samples.pod(name, labels, created=created)


def _tj(name: str, replicated_job: str, index: str, containers=("node",)) -> dict:
    return samples.pod(name, {"jobset.sigs.k8s.io/jobset-name": "churn-g4-train",
                              "jobset.sigs.k8s.io/replicatedjob-name": replicated_job,
                              "batch.kubernetes.io/job-completion-index": index}, containers)


@pytest.mark.parametrize(("reason", "status", "pods", "want_pod", "want_container"), [
    ("the PyTorchJob's Master", PYTORCH, [_pt("w-0", "worker"), _pt("m-0", "master", "master")], "m-0", "pytorch"),
    ("without a Master, the pod the Training Operator gives the master role", PYTORCH,
     [_pt("w-1", "worker"), _pt("w-0", "worker", "master")], "w-0", "pytorch"),
    ("the newest of a restarted Master", PYTORCH,
     [_pt("m-old", "master", created="2026-11-23T09:11:00Z"), _pt("m-new", "master", created="2026-11-23T09:30:00Z")],
     "m-new", "pytorch"),
    ("no Master pod yet", PYTORCH, [_pt("w-0", "worker")], None, None),
    ("the TrainJob's node 0, not an initializer or node 1", TRAINJOB,
     [_tj("init-0", "dataset-initializer", "0", ("dataset-initializer",)), _tj("node-1", "node", "1"),
      _tj("node-0", "node", "0")], "node-0", "node"),
    ("an MPI-style runtime trains in its launcher", TRAINJOB,
     [_tj("node-0", "node", "0"), _tj("launcher-0", "launcher", "0")], "launcher-0", "node"),
    ("no pods at all", TRAINJOB, [], None, None),
])
def test_pick_log_pod(reason, status, pods, want_pod, want_container):
    source = kp.log_source(samples.traindeploy(status))
    chosen = kp.pick_log_pod(source, pods)
    assert ((chosen or {}).get("metadata", {}).get("name"), chosen and kp.log_container(source, chosen)) == \
        (want_pod, want_container), reason


@pytest.mark.parametrize(("status", "want"), [
    ({"phase": "Pending"}, kp.Refuse("TrainDeploy ml/churn has no training job yet (status.training is empty)")),
    ({"training": {"kind": "MPIJob", "name": "x"}},
     kp.Refuse("TrainDeploy ml/churn trains with a MPIJob; the plugin reads logs of PyTorchJob and TrainJob pods")),
    (PYTORCH, kp.LogSource("PyTorchJob", "churn-g4-train", "training.kubeflow.org/job-name=churn-g4-train",
                           "training.kubeflow.org/replica-type=master")),
    (TRAINJOB, kp.LogSource("TrainJob", "churn-g4-train", "jobset.sigs.k8s.io/jobset-name=churn-g4-train",
                            "batch.kubernetes.io/job-completion-index=0 of replicated job launcher or node")),
])
def test_log_source(status, want):
    assert kp.log_source(samples.traindeploy(status)) == want


def _started(pod: dict, node: str | None = "node-1", phase: str = "Running", **container_status) -> dict:
    pod = copy.deepcopy(pod)
    if node:
        pod["spec"]["nodeName"] = node
    pod["status"] = {"phase": phase}
    if container_status:
        pod["status"]["containerStatuses"] = [{"name": "pytorch", **container_status}]
    return pod


MASTER = _pt("m-0", "master")


@pytest.mark.parametrize(("reason", "pod", "want"), [
    ("not scheduled: the apiserver would answer with an empty log", _started(MASTER, node=None, phase="Pending"),
     kp.Refuse("it is not scheduled to a node (phase Pending)")),
    ("scheduled, image still pulling", _started(MASTER, phase="Pending",
                                                state={"waiting": {"reason": "ContainerCreating"}}),
     kp.Refuse("container pytorch has not started (ContainerCreating, phase Pending)")),
    ("scheduled, no container status yet", _started(MASTER, phase="Pending"),
     kp.Refuse("container pytorch has not started (phase Pending)")),
    ("running", _started(MASTER, state={"running": {"startedAt": "2026-11-23T09:12:00Z"}}), None),
    ("waiting to restart after a crash: the last run's log is there",
     _started(MASTER, state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState={"terminated": {"exitCode": 1}}),
     None),
    ("finished", _started(MASTER, phase="Succeeded", state={"terminated": {"exitCode": 0}}), None),
])
def test_log_unavailable(reason, pod, want):
    assert kp.log_unavailable(pod, "pytorch") == want, reason


# -- small pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "want"), [
    (-5, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (600, "10m"), (179 * 60, "179m"),
    (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (49 * 3600, "2d1h"), (8 * 86400, "8d"), (729 * 86400, "729d"), (730 * 86400, "2y"), (731 * 86400, "2y1d"),
    (9 * 365 * 86400, "9y"),
])
def test_age_reads_like_kubectl(seconds, want):
    then = (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert kp._age(then, NOW) == want


@pytest.mark.parametrize(("value", "want"), [("4", "4"), ("v4", "4"), ("V4", "4"), (" 4 ", "4"), ("v", "v"),
                                             ("vx", "vx")])
def test_version_named_like_the_operator(value, want):
    assert kp.version_named(value) == want


def test_connection_options_before_or_after_the_command():
    parser = kp.build_parser()
    for argv in (["-n", "ml", "--kubeconfig", "/k", "get", "churn"], ["get", "churn", "-n", "ml", "--kubeconfig", "/k"]):
        args = parser.parse_args(argv)
        assert (args.namespace, args.kubeconfig, args.name) == ("ml", "/k", "churn")
    assert not hasattr(parser.parse_args(["get", "churn"]), "namespace")


# -- the cluster layer, with a stand-in for the API ----------------------------------------------


def _api_error(status: int, kind: str | None = None) -> ApiException:
    error = ApiException(status=status, reason={404: "Not Found", 403: "Forbidden"}.get(status, "Error"))
    error.body = ('{"kind":"Status","reason":"NotFound","details":{"kind":"%s"}}' % kind) if kind else "404 page not found"
    return error


class FakeCustomObjects:
    """Serves some kinds, refuses others, as an apiserver would."""

    def __init__(self, served: dict[str, list[dict]], forbidden: tuple[str, ...] = ()) -> None:
        self.served, self.forbidden = served, forbidden
        self.selectors: list[str] = []

    def list_namespaced_custom_object(self, group, version, namespace, plural, label_selector=None, **_):
        if plural in self.forbidden:
            raise _api_error(403)
        if plural not in self.served:
            raise _api_error(404)
        self.selectors.append(label_selector)
        return {"items": [copy.deepcopy(o) for o in self.served[plural]
                          if (o["metadata"].get("labels") or {}).get("traindeploy.io/name") == "churn"]}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **_):
        if plural not in self.served:
            raise _api_error(404)
        for item in self.served[plural]:
            if item["metadata"]["name"] == name:
                return copy.deepcopy(item)
        raise _api_error(404, plural)


def test_children_skips_kinds_the_cluster_does_not_serve_and_finds_unlabelled_ones():
    unlabelled = samples.pytorchjob("churn-g3-train", cycle="g3")
    del unlabelled["metadata"]["labels"]
    custom = FakeCustomObjects({"pytorchjobs": [samples.pytorchjob(), unlabelled],
                                "inferenceservices": [samples.inferenceservice()]}, forbidden=("httproutes",))
    cluster = kp.Cluster(api_client=None, namespace="ml", custom=custom, core=object())
    children, looked_up, warnings = cluster.children(samples.traindeploy(samples.CANARY))
    assert sorted((c["kind"], c["metadata"]["name"]) for c in children) == [
        ("InferenceService", "churn"), ("PyTorchJob", "churn-g3-train"), ("PyTorchJob", "churn-g4-train")]
    assert looked_up == {"PyTorchJob", "InferenceService"}
    assert warnings == ["not allowed to list httproutes.gateway.networking.k8s.io in ml"]
    assert set(custom.selectors) == {"traindeploy.io/name=churn"}


def test_a_name_too_long_for_a_label_is_found_through_status_children_only():
    name = "a" * 70
    td = samples.traindeploy({"children": [{"kind": "PyTorchJob", "name": "x-g1-train"}]}, name=name)
    custom = FakeCustomObjects({"pytorchjobs": [samples.pytorchjob("x-g1-train")]})
    children, _, _ = kp.Cluster(None, "ml", custom=custom, core=object()).children(td)
    assert [c["metadata"]["name"] for c in children] == ["x-g1-train"] and custom.selectors == []


class FakeCore:
    """Pods and a log, as CoreV1Api returns them."""

    def __init__(self, pods: list[dict], log: bytes) -> None:
        self._pods, self._log = pods, log
        self.log_requests: list[tuple] = []

    def list_namespaced_pod(self, namespace, label_selector=None, **_):
        # Plain dicts stand in for V1Pod: the Cluster turns pods into dicts either way.
        return types.SimpleNamespace(items=copy.deepcopy(self._pods))

    def read_namespaced_pod_log(self, name, namespace, container=None, follow=False, tail_lines=None, **_):
        self.log_requests.append((name, container, follow, tail_lines))
        log = self._log

        class Response:
            def stream(self, size):
                yield from (log[i:i + size] for i in range(0, len(log), size))

            def release_conn(self):
                pass

        return Response()


def test_logs_streams_the_master_pods_log():
    td = samples.traindeploy(PYTORCH)
    master = _started(MASTER, state={"running": {"startedAt": "2026-11-23T09:12:00Z"}})
    core = FakeCore([_started(_pt("w-0", "worker"), state={"running": {}}), master], b"epoch 1 loss 0.4\n" * 1000)
    custom = FakeCustomObjects({"traindeploys": [td]})
    from kubernetes import client

    cluster = kp.Cluster(client.ApiClient(), "ml", custom=custom, core=core)
    out, err = io.StringIO(), io.StringIO()
    args = kp.build_parser().parse_args(["logs", "churn", "--tail", "5"])
    assert kp.cmd_logs(cluster, args, kp.Output(out, err)) == 0
    assert out.getvalue() == "epoch 1 loss 0.4\n" * 1000 and err.getvalue() == ""
    assert core.log_requests == [("m-0", "pytorch", False, 5)]


def test_a_kubeconfig_that_does_not_exist_is_an_error_not_a_traceback(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = kp.main(["get", "churn", "--kubeconfig", str(tmp_path / "missing")], stdout=out, stderr=err)
    assert code == 1 and err.getvalue().startswith("error: kubeconfig: ") and out.getvalue() == ""


def test_api_errors_are_described_by_status_code():
    forbidden = _api_error(403)
    forbidden.body = '{"kind":"Status","message":"traindeploys.traindeploy.io \\"churn\\" is forbidden"}'
    assert kp._describe(forbidden) == 'forbidden: traindeploys.traindeploy.io "churn" is forbidden'
    assert kp._describe(_api_error(401)).startswith("unauthorized: ")
    assert kp._describe(_api_error(500)) == "the Kubernetes API answered 500 Error: Error"
    # A 404 about an object names its resource; a 404 for an API the cluster does not serve does not.
    assert kp._status_kind(_api_error(404, "traindeploys")) == "traindeploys"
    assert kp._status_kind(_api_error(404)) is None
