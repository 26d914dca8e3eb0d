"""Each stage alone, with fake clients and a fake clock: (reason, observed input, expected result).

A stage gets a `Pass` and returns Done, Wait, Fail or Blocked; the tables below set up what the
clients hold, run the stage once and check the result and what the stage did."""

from __future__ import annotations

import pytest

from traindeploy import kube
from traindeploy.results import Blocked, Done, Fail, Wait
from traindeploy.stages import gate, registration, training, tuning
from unit.fakes import Clock, FakeKube, FakeMlflow, environment, minimal_spec, run_stage, traindeploy

CYCLE = {"generation": 1, "label": "g1", "specHash": "x", "startedAt": "2026-12-01T12:00:00Z", "retrain": 0}


def _job(state: str | None) -> dict | None:
    if state is None:
        return None
    conditions = [{"type": "Created", "status": "True", "reason": "PyTorchJobCreated"}]
    if state in ("Running", "Succeeded", "Failed"):
        conditions.append({"type": "Running", "status": "True" if state == "Running" else "False",
                           "reason": "PyTorchJobRunning"})
    if state in ("Succeeded", "Failed"):
        conditions.append({"type": state, "status": "True", "reason": f"PyTorchJob{state}",
                           "message": f"job {state.lower()}"})
    return {"conditions": conditions}


# -- training --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("reason", "job_state", "elapsed", "expected", "expected_reason"), [
    ("a new cycle creates the run and the job, then waits", None, 0, Wait, None),
    ("a running job waits", "Running", 10, Wait, None),
    ("a succeeded job is done", "Succeeded", 10, Done, None),
    ("a failed job fails the cycle", "Failed", 10, Fail, "TrainingFailed"),
    ("past activeDeadlineSeconds plus grace the stage fails", "Running", 200, Fail, "TrainingDeadlineExceeded"),
])
def test_training(reason, job_state, elapsed, expected, expected_reason):
    kube_api, mlflow, clock = FakeKube(), FakeMlflow(), Clock()
    env = environment(kube_api, mlflow, clock, deadline_grace=60.0)
    spec = minimal_spec(training={"image": "t:1", "command": ["python"], "gpus": 1, "activeDeadlineSeconds": 100})
    status = {"cycle": dict(CYCLE)}
    if job_state is not None:  # an earlier pass made the run and the job
        first = run_stage(training.STAGE, traindeploy(spec, status), env)
        status = first.status
        kube_api.set_status("pytorchjobs", "churn-g1-train", _job(job_state))
    clock.advance(elapsed)
    outcome = run_stage(training.STAGE, traindeploy(spec, status), env)
    assert isinstance(outcome.result, expected), reason
    if expected_reason:
        assert outcome.result.reason == expected_reason
    assert len(mlflow.runs) == 1, "one MLflow run per cycle, found again by its tags"
    job = kube_api.object("pytorchjobs", "churn-g1-train")
    if expected_reason == "TrainingDeadlineExceeded":
        assert job is None, "a job past its deadline is deleted: it holds GPUs"
    else:
        env_vars = {e["name"]: e.get("value") for e in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
                    ["spec"]["containers"][0]["env"]}
        assert env_vars["MLFLOW_RUN_ID"] == outcome.status["training"]["mlflowRunId"]


def _pod(name: str, scheduled: dict | None) -> dict:
    return {"metadata": {"name": name, "labels": {"training.kubeflow.org/job-name": "churn-g1-train"}},
            "status": {"conditions": [scheduled] if scheduled else []}}


@pytest.mark.parametrize(("reason", "pods", "says"), [
    ("no pod pending", [], "PyTorchJob churn-g1-train is running."),
    ("a pod the scheduler placed", [_pod("churn-g1-train-master-0", {"type": "PodScheduled", "status": "True"})],
     "PyTorchJob churn-g1-train is running."),
    ("a pod that does not fit says why, in the scheduler's words",
     [_pod("churn-g1-train-master-0", {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."})],
     "PyTorchJob churn-g1-train is waiting for its pods: pod churn-g1-train-master-0 cannot be scheduled: 0/2 nodes are "
     "available: 2 Insufficient nvidia.com/gpu."),
])
def test_a_pending_job_tells_why_its_pods_do_not_start(reason, pods, says):
    kube_api, mlflow = FakeKube(), FakeMlflow()
    env = environment(kube_api, mlflow, Clock())
    spec = minimal_spec(training={"image": "t:1", "command": ["python"], "gpus": 16})
    first = run_stage(training.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    assert not [call for call in kube_api.calls if call[0] == "pods"], "a job just created has no pods to ask"
    kube_api.set_status("pytorchjobs", "churn-g1-train", _job("Created"))
    for pod in pods:
        kube_api.objects[("pods", pod["metadata"]["name"])] = pod
    outcome = run_stage(training.STAGE, traindeploy(spec, first.status), env)
    assert isinstance(outcome.result, Wait) and outcome.result.message == says, reason
    # Pods are not watched: until they run, the pass comes back to look again.
    assert outcome.result.after == env.config.poll_interval
    kube_api.set_status("pytorchjobs", "churn-g1-train", _job("Running"))
    running = run_stage(training.STAGE, traindeploy(spec, outcome.status), env)
    assert running.result.after is None, "a running job is watched, not polled"


@pytest.mark.parametrize(("reason", "mlflow_problem", "expected_reason"), [
    ("MLflow down holds the cycle", "outage", "MLflowUnavailable"),
    ("MLflow 401 holds the cycle until the Secret is fixed", "unauthorized", "MLflowUnauthorized"),
])
def test_training_blocked_by_mlflow(reason, mlflow_problem, expected_reason):
    mlflow = FakeMlflow()
    setattr(mlflow, mlflow_problem, True)
    kube_api = FakeKube()
    outcome = run_stage(training.STAGE, traindeploy(status={"cycle": dict(CYCLE)}), environment(kube_api, mlflow))
    assert isinstance(outcome.result, Blocked) and outcome.result.reason == expected_reason, reason
    assert kube_api.object("pytorchjobs", "churn-g1-train") is None, "no job before its run exists"
    setattr(mlflow, mlflow_problem, False)  # fixed: the next pass goes on by itself
    again = run_stage(training.STAGE, traindeploy(status={"cycle": dict(CYCLE)}), environment(kube_api, mlflow))
    assert isinstance(again.result, Wait)


@pytest.mark.parametrize(("reason", "error", "expected", "expected_reason"), [
    ("apiserver down", kube.KubeUnavailable("create", "HTTP 503"), Blocked, "KubernetesUnavailable"),
    ("CRD missing", kube.KindNotServed("create", "not found", 404), Blocked, "ChildKindNotInstalled"),
    ("RBAC missing", kube.Forbidden("create", "forbidden", 403), Blocked, "Forbidden"),
    ("object refused by validation", kube.Invalid("create", "invalid", 422, fields=("spec.x",)), Fail, "InvalidSpec"),
    ("request too large", kube.Refused("create", "too large", 413), Fail, "KubernetesRefused"),
    ("conflict twice", kube.Conflict("patch", "changed", 409), Blocked, "Conflict"),
])
def test_kubernetes_errors_by_type(reason, error, expected, expected_reason):
    kube_api = FakeKube()
    kube_api.fail = error
    outcome = run_stage(training.STAGE, traindeploy(status={"cycle": dict(CYCLE)}), environment(kube_api))
    assert isinstance(outcome.result, expected), reason
    assert outcome.result.reason == expected_reason
    if isinstance(error, kube.Invalid):
        assert "spec.x" in outcome.result.message


def test_a_conflict_is_retried_at_once():
    kube_api = FakeKube()
    real_ensure = kube_api.ensure
    conflicts = [kube.Conflict("patch", "changed", 409)]

    def ensure_once_conflicting(*args, **kwargs):
        if conflicts:
            raise conflicts.pop()
        return real_ensure(*args, **kwargs)

    kube_api.ensure = ensure_once_conflicting
    outcome = run_stage(training.STAGE, traindeploy(status={"cycle": dict(CYCLE)}), environment(kube_api))
    assert isinstance(outcome.result, Wait)
    assert kube_api.object("pytorchjobs", "churn-g1-train") is not None


# -- TrainJob: the runtime's trainer step, the fields the served CRD has -------------------------------

SCHEDULED = {"backend": "TrainJob", "image": "t:1", "command": ["python"], "gpus": 1,
             "nodeSelector": {"pool": "gpu"}}


def _trainjob(kube_api):
    return kube_api.object("trainjobs", "churn-g1-train")


@pytest.mark.parametrize(("reason", "runtime", "step", "namespaced"), [
    ("torch-distributed trains in node", "torch-distributed", "node", False),
    ("deepspeed-distributed trains in launcher", "deepspeed-distributed", "launcher", False),
    ("a namespaced TrainingRuntime is read in the TrainDeploy's namespace", "mine", "trainer", True),
])
def test_trainjob_runtime_patches_target_the_runtimes_trainer_step(reason, runtime, step, namespaced):
    kube_api = FakeKube()
    kube_api.serve_trainer(runtime=runtime, step=step, namespaced=namespaced)
    kind = "TrainingRuntime" if namespaced else "ClusterTrainingRuntime"
    spec = minimal_spec(training={**SCHEDULED, "runtimeRef": {"name": runtime, "kind": kind}})
    outcome = run_stage(training.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), environment(kube_api))
    assert isinstance(outcome.result, Wait), reason
    patch, = _trainjob(kube_api)["spec"]["runtimePatches"]
    job, = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == step and job["template"]["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_a_missing_training_runtime_holds_the_cycle_naming_it():
    kube_api = FakeKube()
    kube_api.serve_trainer(runtime="torch-distributed")
    spec = minimal_spec(training={**SCHEDULED, "runtimeRef": {"name": "deepspeed-distributed"}})
    outcome = run_stage(training.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), environment(kube_api))
    assert isinstance(outcome.result, Blocked) and outcome.result.reason == "TrainingRuntimeNotFound"
    assert "spec.training.runtimeRef" in outcome.result.message
    assert "ClusterTrainingRuntime deepspeed-distributed" in outcome.result.message
    assert _trainjob(kube_api) is None, "no TrainJob the Trainer cannot run"


def test_a_tuned_trainjob_collects_metrics_from_the_trainer_step():
    kube_api = FakeKube()
    kube_api.serve_trainer(runtime="deepspeed-distributed", step="launcher")
    spec = minimal_spec(tuning=TUNING, training={**SCHEDULED, "runtimeRef": {"name": "deepspeed-distributed"}})
    outcome = run_stage(tuning.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), environment(kube_api))
    assert isinstance(outcome.result, Wait)
    template = kube_api.object("experiments", "churn-g1-tune")["spec"]["trialTemplate"]
    assert template["primaryPodLabels"]["jobset.sigs.k8s.io/replicatedjob-name"] == "launcher"
    job, = template["trialSpec"]["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"]
    assert job["name"] == "launcher"


@pytest.mark.parametrize(("reason", "served", "training_spec", "expected", "written", "says"), [
    ("v2.2+ has both fields", ("runtimePatches", "activeDeadlineSeconds"),
     {**SCHEDULED, "activeDeadlineSeconds": 600}, Wait, {"runtimePatches", "activeDeadlineSeconds"}, None),
    ("v2.0/v2.1 without the fields: a spec that needs none trains", (),
     {"backend": "TrainJob", "image": "t:1", "command": ["python"], "gpus": 1}, Wait, set(), None),
    ("v2.0/v2.1: a deadline cannot be written", (),
     {"backend": "TrainJob", "image": "t:1", "command": ["python"], "activeDeadlineSeconds": 600}, Blocked, None,
     "spec.training.activeDeadlineSeconds needs TrainJob spec.activeDeadlineSeconds"),
    ("v2.0/v2.1: pod scheduling cannot be written", (), SCHEDULED, Blocked, None, "needs TrainJob spec.runtimePatches"),
])
def test_trainjob_fields_follow_the_served_crd(reason, served, training_spec, expected, written, says):
    kube_api = FakeKube()
    kube_api.serve_trainer(fields=served)
    env = environment(kube_api)
    spec = minimal_spec(training=training_spec)
    outcome = run_stage(training.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    assert isinstance(outcome.result, expected), reason
    if expected is Blocked:
        assert outcome.result.reason == "TrainerCapabilityMissing" and says in outcome.result.message
        assert _trainjob(kube_api) is None, "nothing the apiserver would silently drop is sent"
        kube_api.serve_trainer()  # the Trainer is upgraded: the next try reads the CRD again
        again = run_stage(training.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
        assert isinstance(again.result, Wait)
    else:
        assert set(_trainjob(kube_api)["spec"]) & {"runtimePatches", "activeDeadlineSeconds"} == written


def test_the_trainjob_crd_is_read_once_per_process():
    kube_api = FakeKube()
    kube_api.serve_trainer()
    env = environment(kube_api)
    spec = minimal_spec(training={"backend": "TrainJob", "image": "t:1", "command": ["python"]})
    first = run_stage(training.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    run_stage(training.STAGE, traindeploy(spec, first.status), env)
    crd_reads = [call for call in kube_api.calls if call[1] == "customresourcedefinitions"]
    assert len(crd_reads) == 1


def test_no_trainjob_crd_holds_the_cycle():
    kube_api = FakeKube()
    spec = minimal_spec(training={"backend": "TrainJob", "image": "t:1", "command": ["python"]})
    outcome = run_stage(training.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), environment(kube_api))
    assert isinstance(outcome.result, Blocked) and outcome.result.reason == "ChildKindNotInstalled"
    assert "trainjobs.trainer.kubeflow.org" in outcome.result.message


# -- gate -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("reason", "metrics", "gate_spec", "expected", "expected_reason"), [
    ("above the threshold passes", {"accuracy": 0.9}, {"metric": "accuracy", "threshold": 0.8}, Done, None),
    ("at the threshold passes", {"accuracy": 0.8}, {"metric": "accuracy", "threshold": 0.8}, Done, None),
    ("below fails", {"accuracy": 0.5}, {"metric": "accuracy", "threshold": 0.8}, Fail, "GateFailed"),
    ("minimize: below passes", {"loss": 0.1}, {"metric": "loss", "threshold": 0.2, "direction": "minimize"}, Done,
     None),
    ("minimize: above fails", {"loss": 0.3}, {"metric": "loss", "threshold": 0.2, "direction": "minimize"}, Fail,
     "GateFailed"),
    ("metric never logged", {"loss": 0.3}, {"metric": "accuracy", "threshold": 0.2}, Fail, "GateMetricMissing"),
    ("no gate", {}, None, Done, None),
])
def test_gate(reason, metrics, gate_spec, expected, expected_reason):
    mlflow = FakeMlflow()
    run = mlflow.create_run("1", "r", {})
    mlflow.train(run["run_id"], metrics)
    spec = minimal_spec(gate=gate_spec) if gate_spec else {k: v for k, v in minimal_spec().items() if k != "gate"}
    status = {"cycle": dict(CYCLE), "training": {"mlflowRunId": run["run_id"]}}
    outcome = run_stage(gate.STAGE, traindeploy(spec, status), environment(mlflow=mlflow))
    assert isinstance(outcome.result, expected), reason
    if expected_reason:
        assert outcome.result.reason == expected_reason
    if gate_spec and expected is Done:
        assert outcome.status["model"]["metric"]["passed"] is True


# -- registration -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("reason", "logged", "version_status", "model_status", "expected", "expected_reason"), [
    ("a READY version is done, challenger set", True, "READY", "READY", Done, None),
    ("a pending version waits", True, "PENDING_REGISTRATION", "READY", Wait, None),
    ("a failed registration fails", True, "FAILED_REGISTRATION", "READY", Fail, "RegistrationFailed"),
    ("no logged model fails", False, "READY", "READY", Fail, "NoLoggedModel"),
    ("a logged model still uploading is not registered yet", True, "READY", "PENDING", Wait, None),
    ("a logged model whose upload failed is never registered", True, "READY", "FAILED", Fail, "LoggedModelFailed"),
])
def test_registration(reason, logged, version_status, model_status, expected, expected_reason):
    mlflow = FakeMlflow()
    mlflow.version_status = version_status
    run = mlflow.create_run("1", "r", {})
    mlflow.train(run["run_id"], {"accuracy": 0.9}, model=logged, model_status=model_status)
    status = {"cycle": dict(CYCLE), "training": {"mlflowRunId": run["run_id"]}}
    env = environment(mlflow=mlflow)
    outcome = run_stage(registration.STAGE, traindeploy(status=status), env)
    assert isinstance(outcome.result, expected), reason
    if expected_reason:
        assert outcome.result.reason == expected_reason
    if expected is Done:
        assert outcome.status["model"]["storageUri"] == "s3://models/churn-model/1"
        assert mlflow.aliases[("churn-model", "challenger")] == "1"
        mlflow.calls.clear()
        again = run_stage(registration.STAGE, traindeploy(status=outcome.status), env)
        assert isinstance(again.result, Done) and len(mlflow.versions["churn-model"]) == 1, "found again by tags"
        # Found with its aliases: the challenger alias is not set again, nor read.
        assert mlflow.calls == ["find_model_version", "download_uri"]
    if model_status != "READY":
        assert not mlflow.versions.get("churn-model"), "nothing registered from a model that is not READY"


# -- tuning -----------------------------------------------------------------------------------------

TUNING = {"algorithm": "random", "objective": {"metricName": "accuracy", "direction": "maximize"},
          "maxTrials": 4, "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 0.1}]}


def _experiment(state: str, best: bool = True) -> dict:
    conditions = [{"type": "Created", "status": "True", "reason": "ExperimentCreated"}]
    if state == "Running":
        conditions.append({"type": "Running", "status": "True", "reason": "ExperimentRunning"})
    if state in ("Succeeded", "Failed"):
        conditions.append({"type": state, "status": "True", "reason": f"Experiment{state}", "message": state})
    status = {"conditions": conditions, "trials": 4, "trialsSucceeded": 4}
    if best:
        status["currentOptimalTrial"] = {
            "bestTrialName": "churn-g1-tune-abc",
            "parameterAssignments": [{"name": "lr", "value": "0.02"}],
            "observation": {"metrics": [{"name": "accuracy", "latest": "0.93", "max": "0.93", "min": "0.9"}]}}
    return status


@pytest.mark.parametrize(("reason", "state", "best", "expected", "expected_reason"), [
    ("running waits", "Running", False, Wait, None),
    ("succeeded with a best trial is done", "Succeeded", True, Done, None),
    ("succeeded without one fails", "Succeeded", False, Fail, "NoBestTrial"),
    ("failed fails", "Failed", False, Fail, "TuningFailed"),
])
def test_tuning(reason, state, best, expected, expected_reason):
    kube_api = FakeKube()
    env = environment(kube_api)
    spec = minimal_spec(tuning=TUNING)
    first = run_stage(tuning.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    assert isinstance(first.result, Wait)
    kube_api.set_status("experiments", "churn-g1-tune", _experiment(state, best))
    outcome = run_stage(tuning.STAGE, traindeploy(spec, first.status), env)
    assert isinstance(outcome.result, expected), reason
    if expected_reason:
        assert outcome.result.reason == expected_reason
    if expected is Done:
        assert outcome.status["tuning"]["bestParameters"] == {"lr": "0.02"}


@pytest.mark.parametrize(("reason", "state", "best", "expected"), [
    ("goal reached while trials run", "Succeeded", True, Done),
    ("max failed trials reached while trials run", "Failed", False, Fail),
])
def test_an_ended_experiment_stops_the_trials_katib_left_running(reason, state, best, expected):
    kube_api = FakeKube()
    env = environment(kube_api)
    spec = minimal_spec(tuning=TUNING)
    first = run_stage(tuning.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    for trial in ("churn-g1-tune-abc", "churn-g1-tune-run", "churn-g1-tune-pen"):
        kube_api.objects[("trials", trial)] = {"metadata": {"name": trial, "namespace": "ml"}}
    status = _experiment(state, best)
    status.update({"succeededTrialList": ["churn-g1-tune-abc"], "runningTrialList": ["churn-g1-tune-run"],
                   "pendingTrialList": ["churn-g1-tune-pen"]})
    kube_api.set_status("experiments", "churn-g1-tune", status)
    outcome = run_stage(tuning.STAGE, traindeploy(spec, first.status), env)
    assert isinstance(outcome.result, expected), reason
    assert kube_api.object("trials", "churn-g1-tune-run") is None, "a running trial holds GPUs"
    assert kube_api.object("trials", "churn-g1-tune-pen") is None, "a pending trial would start"
    assert kube_api.object("trials", "churn-g1-tune-abc") is not None, "finished trials stay"
    assert kube_api.object("experiments", "churn-g1-tune") is not None, "the Experiment stays as the record"
    assert [e.reason for e in outcome.events] == ["TrialsStopped"]


def test_an_ended_experiment_without_unfinished_trials_deletes_nothing():
    kube_api = FakeKube()
    env = environment(kube_api)
    spec = minimal_spec(tuning=TUNING)
    first = run_stage(tuning.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    kube_api.set_status("experiments", "churn-g1-tune", _experiment("Succeeded"))
    outcome = run_stage(tuning.STAGE, traindeploy(spec, first.status), env)
    assert isinstance(outcome.result, Done)
    assert not [call for call in kube_api.calls if call[0] == "delete"] and not outcome.events


def test_a_trial_delete_refused_holds_tuning_open():
    kube_api = FakeKube()
    env = environment(kube_api)
    spec = minimal_spec(tuning=TUNING)
    first = run_stage(tuning.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    status = _experiment("Succeeded")
    status["runningTrialList"] = ["churn-g1-tune-run"]
    kube_api.set_status("experiments", "churn-g1-tune", status)
    real_delete = kube_api.delete

    def forbidden(kind, namespace, name):
        raise kube.Forbidden(f"delete {kind.kind} {namespace}/{name}", "forbidden", 403)

    kube_api.delete = forbidden
    outcome = run_stage(tuning.STAGE, traindeploy(spec, first.status), env)
    assert isinstance(outcome.result, Blocked) and outcome.result.reason == "Forbidden", \
        "training does not start while a trial may still hold GPUs"
    kube_api.delete = real_delete
    again = run_stage(tuning.STAGE, traindeploy(spec, outcome.status), env)
    assert isinstance(again.result, Done)


# -- pipeline ---------------------------------------------------------------------------------------

class FakeKfp:
    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}
        self.terminated: list[str] = []

    def client(self, endpoint, token, timeout, session):
        return self

    def ensure_experiment(self, name, namespace=None):
        return "exp-1"

    def find_run(self, experiment_id, display_name):
        return next((r for r in self.runs.values() if r["display_name"] == display_name), None)

    def create_run(self, experiment_id, display_name, package, parameters, description=""):
        run_id = f"kfp-{len(self.runs) + 1}"
        self.runs[run_id] = {"run_id": run_id, "display_name": display_name, "state": "RUNNING"}
        return self.runs[run_id]

    def get_run(self, run_id):
        return self.runs[run_id]

    def terminate_run(self, run_id):
        self.terminated.append(run_id)


PIPELINE = {"endpoint": "http://127.0.0.1:8888", "package": {"configMapKeyRef": {"name": "prep", "key": "p.yaml"}}}
PACKAGE = "pipelineInfo: {name: prep}\nroot: {dag: {tasks: {}}}\nschemaVersion: 2.1.0\nsdkVersion: kfp-2.16.0\n"


@pytest.mark.parametrize(("reason", "config_map", "state", "expected", "expected_reason", "says"), [
    ("no ConfigMap: says it does not exist", None, None, Blocked, "PipelinePackageNotFound", "does not exist"),
    ("a ConfigMap without the key says which key", {"other": "x"}, None, Blocked, "PipelinePackageNotFound",
     "has no key p.yaml"),
    ("not a compiled pipeline names the field", {"p.yaml": "kind: Workflow"}, None, Fail, "InvalidSpec",
     "spec.pipeline.package"),
    ("a running run waits", {"p.yaml": PACKAGE}, "RUNNING", Wait, None, "RUNNING"),
    ("a succeeded run is done", {"p.yaml": PACKAGE}, "SUCCEEDED", Done, None, "succeeded"),
    ("a failed run fails", {"p.yaml": PACKAGE}, "FAILED", Fail, "PipelineFailed", "FAILED"),
])
def test_pipeline(reason, config_map, state, expected, expected_reason, says):
    from traindeploy.stages import pipeline

    kube_api, kfp = FakeKube(), FakeKfp()
    if config_map is not None:
        kube_api.config_maps["prep"] = config_map
    env = environment(kube_api)
    env.kfp_client = kfp.client
    spec = minimal_spec(pipeline=PIPELINE)
    outcome = run_stage(pipeline.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    if state is not None:
        kfp.runs["kfp-1"]["state"] = state
        outcome = run_stage(pipeline.STAGE, traindeploy(spec, outcome.status), env)
        assert len(kfp.runs) == 1, "one run per cycle"
    assert isinstance(outcome.result, expected), reason
    if expected_reason:
        assert outcome.result.reason == expected_reason
    assert says in outcome.result.message


def test_a_traindeploy_created_again_under_the_same_name_does_not_adopt_the_old_run():
    """KFP runs outlive the TrainDeploy: the one found again must be this object's (its uid)."""
    from traindeploy.stages import pipeline

    kube_api, kfp = FakeKube(), FakeKfp()
    kube_api.config_maps["prep"] = {"p.yaml": PACKAGE}
    env = environment(kube_api)
    env.kfp_client = kfp.client
    spec = minimal_spec(pipeline=PIPELINE)
    old = run_stage(pipeline.STAGE, traindeploy(spec, {"cycle": dict(CYCLE)}), env)
    kfp.runs[old.status["pipeline"]["runId"]]["state"] = "FAILED"
    again = traindeploy(spec, {"cycle": dict(CYCLE)})
    again["metadata"]["uid"] = "uid-2"
    outcome = run_stage(pipeline.STAGE, again, env)
    assert isinstance(outcome.result, Wait) and len(kfp.runs) == 2
    assert outcome.status["pipeline"]["runId"] != old.status["pipeline"]["runId"]
    assert "uid-2" in kfp.runs[outcome.status["pipeline"]["runId"]]["display_name"]


# -- superseding a cycle ----------------------------------------------------------------------------

def test_a_superseded_cycle_stops_its_job_kfp_run_and_mlflow_run():
    from traindeploy import cycle
    from traindeploy.context import Pass

    kube_api, mlflow, kfp = FakeKube(), FakeMlflow(), FakeKfp()
    kube_api.config_maps["prep"] = {"p.yaml": PACKAGE}
    env = environment(kube_api, mlflow)
    env.kfp_client = kfp.client
    spec = minimal_spec(pipeline=PIPELINE)
    from traindeploy.reconciler import reconcile

    first = reconcile(traindeploy(spec), env)  # the KFP run is submitted and runs
    assert first.status["pipeline"]["runId"] == "kfp-1"
    run = mlflow.create_run("1", "r", {})
    status = {**first.status, "training": {"mlflowRunId": run["run_id"], "name": "churn-g1-train",
                                           "kind": "PyTorchJob", "state": "Running"}}
    kube_api.objects[("pytorchjobs", "churn-g1-train")] = {"metadata": {"name": "churn-g1-train"}}
    p = Pass(traindeploy(spec, status), env)
    cycle.supersede(p)
    assert kfp.terminated == ["kfp-1"]
    assert mlflow.runs[run["run_id"]]["status"] == "KILLED"
    assert kube_api.object("pytorchjobs", "churn-g1-train") is None
