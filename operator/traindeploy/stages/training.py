"""The training stage: the MLflow run the trainer logs into, then the PyTorchJob or TrainJob that
trains with GPU limits. The run is found again by its tags before one is created."""

from __future__ import annotations

from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy import naming
from traindeploy.children import FAILED, SUCCEEDED, pytorchjob, trainjob, unschedulable
from traindeploy.context import Pass
from traindeploy.kube import Kind
from traindeploy.results import Done, Fail, Problem, Result
from traindeploy.stages import trainer_api
from traindeploy.stages.base import Stage

PYTORCHJOB = Kind(pytorchjob.GROUP, pytorchjob.VERSION, pytorchjob.PLURAL, pytorchjob.KIND)
TRAINJOB = Kind(trainjob.GROUP, trainjob.VERSION, trainjob.PLURAL, trainjob.KIND)
# spec.training.backend -> the child kind and the module that builds and reads it.
BACKENDS = {"PyTorchJob": (PYTORCHJOB, pytorchjob), "TrainJob": (TRAINJOB, trainjob)}


def run(p: Pass) -> Result:
    training = p.spec["training"]
    record = p.record("training")
    record.setdefault("startedAt", p.now)
    if not record.get("mlflowRunId"):
        experiment_id, run_id = p.mlflow(lambda client: _find_or_create_run(p, client))
        record.update({"mlflowRunId": run_id, "mlflowExperimentId": experiment_id})
    kind, module = BACKENDS[training.get("backend", "PyTorchJob")]
    name = naming.training_job_name(p.name, p.cycle)
    record.update({"kind": kind.kind, "name": name})
    meta = naming.child_metadata(p.td, name, p.cycle, "training",
                                 annotations=naming.cycle_annotations(p.status["cycle"]))
    best = (p.status.get("tuning") or {}).get("bestParameters")
    desired = module.build(meta, training, env=p.training_env(with_run=True),
                           hyperparameters=lc.effective_hyperparameters(training, best),
                           gpu_resource=p.env.config.gpu_resource, **trainer_api.job_options(p, training))
    job, action = p.kube(lambda: p.env.kube.ensure(kind, desired, owned=()))
    p.created(kind, name, action)
    state = module.read(job)
    record["state"] = state.phase
    if state.phase == SUCCEEDED:
        return Done(f"{kind.kind} {name} succeeded.")
    if state.phase == FAILED:
        return Fail("TrainingFailed", f"{kind.kind} {name} failed ({state.reason}): {state.message}")
    deadline = training.get("activeDeadlineSeconds")
    timeout = deadline + p.env.config.deadline_grace if deadline else None
    message, poll = f"{kind.kind} {name} is {state.phase.lower()}.", None
    if module.awaiting_pods(job):
        # Pods are not watched: until they run, look again now and then for what holds them.
        poll = p.env.config.poll_interval
        why = _why_pending(p, module, name)
        if why:
            message = f"{kind.kind} {name} is waiting for its pods: {why}"
    return p.running(message, record["startedAt"], timeout, STAGE.deadline_reason, lambda: stop(p, record), poll=poll)


def _why_pending(p: Pass, module, name: str) -> str | None:
    """The scheduler's reason when the job's pods cannot be placed (GPUs the nodes do not have);
    best effort: a failed read leaves the message as it was."""
    try:
        return unschedulable(p.kube(lambda: p.env.kube.pods(p.namespace, module.pod_selector(name))))
    except Problem:
        return None


def _find_or_create_run(p: Pass, client) -> tuple[str, str]:
    _, experiment_name, _ = p.mlflow_settings()
    experiment_id, new = client.ensure_experiment(experiment_name)
    found = None if new else client.find_run(experiment_id, p.identity_tags())
    if found is None:
        found = client.create_run(experiment_id, f"{p.name}-{p.cycle}", p.lineage_tags())
    return experiment_id, found.get("run_id") or (found.get("info") or {}).get("run_id")


def stop(p: Pass, record: dict) -> None:
    """Deletes the cycle's job while it runs (it holds GPUs)."""
    if record.get("name") and record.get("state") not in (SUCCEEDED, FAILED):
        kind, _ = BACKENDS.get(record.get("kind"), BACKENDS["PyTorchJob"])
        p.kube(lambda: p.env.kube.delete(kind, p.namespace, record["name"]))


STAGE = Stage("training", cond.TRAINING, "Training", run, deadline_reason="TrainingDeadlineExceeded")
