"""The tuning stage: a Katib Experiment whose trials run the training job (spec.tuning); the best
trial's values override spec.training.hyperparameters."""

from __future__ import annotations

from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy import naming
from traindeploy.children import FAILED, SUCCEEDED, katib
from traindeploy.context import Pass
from traindeploy.kube import Kind
from traindeploy.results import Done, Fail, Result
from traindeploy.stages import trainer_api
from traindeploy.stages.base import Stage

EXPERIMENT = Kind(katib.GROUP, katib.VERSION, katib.PLURAL, katib.KIND)
TRIAL = Kind(katib.GROUP, katib.VERSION, katib.TRIAL_PLURAL, katib.TRIAL_KIND)
DEFAULT_TIMEOUT = 86400  # as the CRD's default of spec.tuning.timeoutSeconds


def run(p: Pass) -> Result:
    tuning, training = p.spec["tuning"], p.spec["training"]
    record = p.record("tuning")
    record.setdefault("startedAt", p.now)
    name = naming.experiment_name(p.name, p.cycle)
    meta = naming.child_metadata(p.td, name, p.cycle, "tuning",
                                 annotations=naming.cycle_annotations(p.status["cycle"]))
    desired = katib.build(meta, tuning, training, env=p.training_env(with_run=False),
                          hyperparameters=lc.effective_hyperparameters(training, None),
                          gpu_resource=p.env.config.gpu_resource,
                          job_options=trainer_api.job_options(p, training))
    # Katib forbids most spec changes after creation; a new spec is a new cycle and name.
    experiment, action = p.kube(lambda: p.env.kube.ensure(EXPERIMENT, desired, owned=()))
    p.created(EXPERIMENT, name, action)
    state = katib.read(experiment)
    record.update({"experimentName": name, "state": state.phase})
    for key in ("bestTrialName", "bestParameters", "bestObjectiveValue"):
        if state.outputs.get(key) not in (None, {}, ""):
            record[key] = state.outputs[key]
    if state.phase in (SUCCEEDED, FAILED):
        stop_unfinished_trials(p, experiment)
    if state.phase == SUCCEEDED:
        if not record.get("bestParameters"):
            return Fail("NoBestTrial", f"Experiment {name} succeeded without a best trial.")
        return Done(f"Best trial {record.get('bestTrialName')} with {tuning['objective']['metricName']}="
                    f"{record.get('bestObjectiveValue')}.")
    if state.phase == FAILED:
        return Fail("TuningFailed", f"Experiment {name} failed ({state.reason}): {state.message}")
    trials = state.outputs.get("trials")
    progress = f" {trials} trials so far." if trials else ""
    return p.running(f"Experiment {name} is {state.phase.lower()}.{progress}", record["startedAt"],
                     tuning.get("timeoutSeconds") or DEFAULT_TIMEOUT, STAGE.deadline_reason,
                     lambda: stop(p, record))


def stop_unfinished_trials(p: Pass, experiment: dict) -> None:
    """Deletes the Trials an ended Experiment still lists as running or pending, before final
    training starts: Katib does not stop them when the goal is reached, and their jobs hold GPUs.
    Deleting a Trial deletes its job (Katib makes the Trial its owner). The Experiment and its
    finished Trials stay, as the record of the search."""
    names = katib.unfinished_trials(experiment)
    for trial in names:
        p.kube(lambda trial=trial: p.env.kube.delete(TRIAL, p.namespace, trial))
    if names:
        p.event("Normal", "TrialsStopped", f"Deleted Trials {', '.join(names)} that Experiment "
                f"{p.namespace}/{experiment['metadata']['name']} left running.")


def stop(p: Pass, record: dict) -> None:
    """Deletes the cycle's Experiment while it runs: its trials hold GPUs."""
    if record.get("experimentName") and record.get("state") not in (SUCCEEDED, FAILED):
        p.kube(lambda: p.env.kube.delete(EXPERIMENT, p.namespace, record["experimentName"]))


STAGE = Stage("tuning", cond.TUNING, "Tuning", run, applies=lambda spec: bool(spec.get("tuning")),
              deadline_reason="TuningDeadlineExceeded")
