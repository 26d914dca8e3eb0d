"""`kubectl traindeploy`: look at a TrainDeploy and steer its rollouts from the command line.

kubectl runs any executable called `kubectl-<name>` on PATH as `kubectl <name>`; this module is
installed as `kubectl-traindeploy`. It talks to the cluster of the user's kubeconfig
(`--kubeconfig`, `$KUBECONFIG`, `--context`, `-n/--namespace`) through the kubernetes client:

    kubectl traindeploy get NAME [--watch]        the TrainDeploy, its cycle, children and traffic, as a tree
    kubectl traindeploy approve NAME [VERSION]    traindeploy.io/approve=<the version awaiting approval>
    kubectl traindeploy rollback NAME VERSION     traindeploy.io/rollback=<version>
    kubectl traindeploy retrain NAME [TOKEN]      traindeploy.io/retrain=<a fresh token>
    kubectl traindeploy history NAME              status.rolloutHistory as a table
    kubectl traindeploy logs NAME                 the log of the current training job's first pod

The plugin reads only the public API of a TrainDeploy (its status, docs/api-v1alpha1.md) and
writes only the three annotations the operator documents. Everything it decides or draws is a
pure function of what it read (`render_get`, `render_history`, `decide_*`, `pick_log_pod`); the
`Cluster` class does the reading and writing, and `main` maps API errors to messages by status
code, never by message text.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from traindeploy import GROUP, KIND, PLURAL, VERSION, naming, triggers
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, ChildState
from traindeploy.children import httproute, inferenceservice, katib, pytorchjob, trainjob

# The annotations the operator reads and the labels and annotations it writes: the same names.
ANNOTATION_APPROVE = triggers.ANNOTATION_APPROVE
ANNOTATION_ROLLBACK = triggers.ANNOTATION_ROLLBACK
ANNOTATION_RETRAIN = triggers.ANNOTATION_RETRAIN
LABEL_NAME, LABEL_CYCLE, LABEL_STAGE = naming.LABEL_NAME, naming.LABEL_CYCLE, naming.LABEL_STAGE
ANNOTATION_MODEL_VERSION = naming.ANNOTATION_MODEL_VERSION

# Pod labels of the upstream controllers (UPSTREAM.md 2.1 and 3; JobSet's pkg/constants); the
# job-name labels are the children modules' (pod_selector).
PYTORCHJOB_REPLICA_TYPE = "training.kubeflow.org/replica-type"
PYTORCHJOB_JOB_ROLE = "training.kubeflow.org/job-role"
JOBSET_REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# The replicated job that runs the trainer: `launcher` in MPI-style runtimes (deepspeed), `node` otherwise.
TRAINER_REPLICATED_JOBS = ("launcher", trainjob.NODE)

# Each request gives up after this long: a command line tool must not hang on a dead apiserver.
REQUEST_TIMEOUT = 30
# `get --watch` redraws at least this often, for changes of children the TrainDeploy does not reflect.
WATCH_INTERVAL = 2.0

# Condition types in the order of the stages (docs/api-v1alpha1.md, "status").
CONDITION_ORDER = ("PipelineSucceeded", "TuningSucceeded", "TrainingSucceeded", "GatePassed",
                   "ModelRegistered", "ServingReady", "Ready")
# Reasons of the "blocked on a dependency" family: the operator retries; someone may have to act.
BLOCKED_REASONS = frozenset({"MLflowUnavailable", "KFPUnavailable", "KubernetesUnavailable", "SecretNotFound",
                             "ChildKindNotInstalled", "PipelinePackageNotFound", "PipelinePackageUnavailable"})

# State markers, as `kubectl argo rollouts get` draws them.
OK, PROGRESSING, FAILING, PAUSED, WARNING, UNKNOWN = "✔", "◌", "✖", "॥", "⚠", "?"
ROOT, GROUP_MARK, OBJECT = "⟳", "#", "⧉"


@dataclass(frozen=True)
class ChildKind:
    kind: str
    group: str
    version: str
    plural: str
    read: Callable[[dict], ChildState] | None  # None: no upstream state to read (HTTPRoute)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


# The kinds the operator creates, with the reader the operator itself uses for each.
CHILD_KINDS = tuple(ChildKind(m.KIND, m.GROUP, m.VERSION, m.PLURAL, getattr(m, "read", None))
                    for m in (pytorchjob, trainjob, katib, inferenceservice, httproute))
_BY_KIND = {kind.kind: kind for kind in CHILD_KINDS}


# --- pure: states ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """What the STATUS column shows: a marker and a word."""

    marker: str
    word: str

    def __str__(self) -> str:
        return f"{self.marker} {self.word}"


def traindeploy_state(td: dict) -> State:
    status = td.get("status") or {}
    phase = status.get("phase") or "Pending"
    ready = _condition(status, "Ready") or {}
    if phase == "Ready":
        return State(OK, phase)
    if phase == "Failed":
        return State(FAILING, phase)
    if phase == "AwaitingApproval":
        return State(PAUSED, phase)
    if ready.get("reason") in BLOCKED_REASONS:
        return State(WARNING, phase)
    return State(PROGRESSING, phase)


def child_state(obj: dict | None, looked_up: bool = True) -> tuple[State, str]:
    """The state of a child and a short INFO text. `obj` None: named in status.children but not
    found (`looked_up`), or of a kind the plugin does not read."""
    if obj is None:
        return (State(WARNING, "NotFound"), "in status.children, not in the cluster") if looked_up \
            else (State(UNKNOWN, "Unknown"), "")
    kind = _BY_KIND.get(obj.get("kind", ""))
    if kind is None:
        return State(UNKNOWN, "Unknown"), ""
    if kind.kind == httproute.KIND:
        return _route_state(obj)
    state = kind.read(obj)
    info = _child_info(kind.kind, obj, state)
    if state.phase == SUCCEEDED:
        return State(OK, "Ready" if kind.kind == inferenceservice.KIND else SUCCEEDED), info
    if state.phase == FAILED:
        return State(FAILING, FAILED), info or state.reason
    if state.phase == PENDING:
        return State(PROGRESSING, PENDING), info
    word = state.reason.removeprefix(kind.kind) if state.reason.startswith(kind.kind) else ""
    if word == "Suspended" or state.reason == "Suspended":
        return State(PAUSED, "Suspended"), info
    if kind.kind == inferenceservice.KIND:
        return State(PROGRESSING, "Progressing"), info or state.reason
    return State(PROGRESSING, word or RUNNING), info


def _child_info(kind: str, obj: dict, state: ChildState) -> str:
    if kind == katib.KIND:
        out = state.outputs
        parts = [f"trials {out['trials']} ({out['trialsSucceeded']} succeeded, {out['trialsFailed']} failed)"]
        if out.get("bestTrialName"):
            best = f"best {out['bestTrialName']}"
            parts.append(best + (f" {out['bestObjectiveValue']}" if out.get("bestObjectiveValue") else ""))
        return ", ".join(parts)
    if kind == inferenceservice.KIND:
        meta, predictor = obj.get("metadata") or {}, (obj.get("spec") or {}).get("predictor") or {}
        parts = []
        version = (meta.get("annotations") or {}).get(ANNOTATION_MODEL_VERSION)
        if version:
            parts.append(f"v{version}")
        percent = predictor.get("canaryTrafficPercent")
        if percent is not None and percent != 100:
            parts.append(f"canary {percent}%")
        if state.phase == FAILED and state.message:
            parts.append(state.message)
        return ", ".join(parts)
    if state.phase == FAILED:
        return state.message or state.reason
    return ""


def _route_state(route: dict) -> tuple[State, str]:
    info = ", ".join(f"{name} {weight}" for name, weight in httproute.weights(route).items())
    parents = (route.get("status") or {}).get("parents") or []
    accepted = [c.get("status") for p in parents for c in p.get("conditions") or [] if c.get("type") == "Accepted"]
    if not accepted:
        return State(PROGRESSING, "Pending"), info
    if all(value == "True" for value in accepted):
        return State(OK, "Accepted"), info
    return State(FAILING, "NotAccepted"), info


# --- pure: the `get` view --------------------------------------------------------------------------


def render_get(td: dict, children: Iterable[dict], now: dt.datetime,
               looked_up: Iterable[str] | None = None) -> str:
    """The TrainDeploy as text: a summary, its conditions and a tree of its children.

    `children` are the objects found in the cluster; entries of status.children that are not among
    them are drawn as NotFound when their kind is in `looked_up` (default: every kind the plugin
    reads), as Unknown otherwise.
    """
    lines = _summary(td, now)
    lines += [""] + _tree(td, list(children), now, set(looked_up) if looked_up is not None else set(_BY_KIND))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _summary(td: dict, now: dt.datetime) -> list[str]:
    meta, spec, status = td.get("metadata") or {}, td.get("spec") or {}, td.get("status") or {}
    rows: list[tuple[str, str]] = [("Name", meta.get("name", "")), ("Namespace", meta.get("namespace", "")),
                                   ("Status", str(traindeploy_state(td)))]
    ready = _condition(status, "Ready")
    if ready and ready.get("message"):
        rows.append(("Message", ready["message"]))
    if status.get("failedStage"):
        rows.append(("Failed stage", status["failedStage"]))
    model, wanted = status.get("model") or {}, (spec.get("model") or {}).get("name")
    if model.get("version") or wanted:
        text = model.get("name") or wanted or ""
        if model.get("version"):
            text += f", version {model['version']}"
        metric = model.get("metric") or {}
        if metric.get("name"):
            verdict = "passed" if metric.get("passed") else "failed"
            text += f" ({metric['name']} {_number(metric.get('value'))}, threshold {_number(metric.get('threshold'))}: {verdict})"
        rows.append(("Model", text))
    cycle = status.get("cycle") or {}
    if cycle:
        parts = [f"generation {cycle['generation']}"] if cycle.get("generation") is not None else []
        if cycle.get("trigger"):
            parts.append(f"trigger {cycle['trigger']}")
        if cycle.get("startedAt"):
            parts.append(f"started {cycle['startedAt']}, {_age(cycle['startedAt'], now)} ago")
        rows.append(("Cycle", (cycle.get("label") or "?") + (f" ({', '.join(parts)})" if parts else "")))
    serving = status.get("serving") or {}
    if serving.get("modelVersion") or serving.get("inferenceServiceName"):
        text = f"version {serving['modelVersion']}" if serving.get("modelVersion") else "no version yet"
        if serving.get("inferenceServiceName"):
            text += f" on InferenceService {serving['inferenceServiceName']}"
        if serving.get("url"):
            text += f", {serving['url']}"
        rows.append(("Serving", text))
    if serving.get("traffic"):
        rows.append(("Traffic", serving["traffic"]))
    rows += _rollout_rows(meta.get("name", ""), spec, status.get("rollout") or {})
    retrain = status.get("retrain") or {}
    if retrain.get("queued"):
        rows.append(("Queued", f"{retrain['queued']} (starts when the running cycle ends)"))
    width = max(len(label) for label, _ in rows) + 2
    return [f"{(label + ':').ljust(width)}{value}" for label, value in rows] + _conditions(status)


def _rollout_rows(name: str, spec: dict, rollout: dict) -> list[tuple[str, str]]:
    if not rollout.get("state"):
        return []
    state = rollout["state"]
    marker = {"Promoted": OK, "RolledBack": FAILING, "AwaitingApproval": PAUSED}.get(state, PROGRESSING)
    text = f"{marker} {state}" + (f" ({rollout['mode']})" if rollout.get("mode") else "")
    rows = [("Rollout", text)]
    if rollout.get("version"):
        canary = f"v{rollout['version']}"
        if rollout.get("weight") is not None and state in ("Progressing", "AwaitingApproval"):
            canary += f" at {rollout['weight']}%"
        rows.append(("  Canary", canary))
    if rollout.get("stableVersion"):
        rows.append(("  Stable", f"v{rollout['stableVersion']}"))
    steps = (((spec.get("serving") or {}).get("canary")) or {}).get("steps") or []
    if rollout.get("step") is not None and state in ("Progressing", "AwaitingApproval"):
        index = int(rollout["step"])
        if index < 0:
            text = "before the first step"
        else:
            text = f"{index + 1}" + (f"/{len(steps)}" if steps else "")
            if index < len(steps):
                text += f" (set weight {steps[index]}%)"
        rows.append(("  Step", text))
    if rollout.get("awaitingApproval"):
        version = rollout["awaitingApproval"]
        rows.append(("  Approval", f"{PAUSED} version {version} waits: kubectl traindeploy approve {name} {version}"))
    if rollout.get("message"):
        rows.append(("  Message", rollout["message"]))
    if rollout.get("failedVersions"):
        rows.append(("  Failed", ", ".join(f"v{v}" for v in rollout["failedVersions"])))
    return rows


def _conditions(status: dict) -> list[str]:
    conditions = status.get("conditions") or []
    if not conditions:
        return []
    rank = {kind: index for index, kind in enumerate(CONDITION_ORDER)}
    ordered = sorted(conditions, key=lambda c: rank.get(c.get("type"), len(rank)))
    marker = {"True": OK, "False": FAILING}
    rows = [(f"{marker.get(c.get('status'), PROGRESSING)} {c.get('type', '')}", c.get("reason") or "",
             c.get("message") or "") for c in ordered]
    return ["Conditions:"] + ["  " + line for line in _columns(rows)]


def _tree(td: dict, children: list[dict], now: dt.datetime, looked_up: set[str]) -> list[str]:
    meta, status = td.get("metadata") or {}, td.get("status") or {}
    current = (status.get("cycle") or {}).get("label")
    found = {(c.get("kind"), (c.get("metadata") or {}).get("name")): c for c in children}
    entries: list[tuple[str, str, dict | None]] = [(c.get("kind", ""), (c.get("metadata") or {}).get("name", ""), c)
                                                   for c in children]
    for ref in status.get("children") or []:
        if (ref.get("kind"), ref.get("name")) not in found:
            entries.append((ref.get("kind", ""), ref.get("name", ""), None))

    groups: dict[str, list[tuple[str, str, dict | None]]] = {}
    for entry in entries:
        groups.setdefault(_group_of(*entry), []).append(entry)
    pipeline = status.get("pipeline") or {}
    if pipeline.get("runId") and current:
        groups.setdefault(f"cycle:{current}", [])

    root_state = traindeploy_state(td)
    rows: list[tuple[str, ...]] = [("NAME", "KIND", "STATUS", "AGE", "INFO"),
                                   (f"{ROOT} {meta.get('name', '')}", KIND, str(root_state),
                                    _age(meta.get("creationTimestamp"), now),
                                    (status.get("serving") or {}).get("traffic") or "")]
    names = _group_order(groups, current)
    for position, group in enumerate(names):
        last_group = position == len(names) - 1
        info = ""
        if group == f"cycle:{current}":
            trigger = (status.get("cycle") or {}).get("trigger")
            info = "current cycle" + (f", trigger {trigger}" if trigger else "")
        rows.append((("└──" if last_group else "├──") + f"{GROUP_MARK} {group}", "", "", "", info))
        items: list[tuple[str, str, str, str, str]] = []
        if group == f"cycle:{current}" and pipeline.get("runId"):
            items.append((pipeline["runId"], "KFP run", str(_pipeline_state(pipeline.get("state"))),
                          _age(pipeline.get("startedAt"), now), pipeline.get("url") or ""))
        for kind, name, obj in sorted(groups[group], key=_entry_order):
            state, info = child_state(obj, looked_up=kind in looked_up)
            training = status.get("training") or {}
            if obj is not None and kind == training.get("kind") and name == training.get("name") \
                    and training.get("mlflowRunId"):
                info = ", ".join(filter(None, [f"mlflow run {training['mlflowRunId']}", info]))
            created = ((obj or {}).get("metadata") or {}).get("creationTimestamp")
            items.append((name, kind, str(state), _age(created, now), info))
        stem = "   " if last_group else "│  "
        for index, (name, kind, state, age, info) in enumerate(items):
            branch = "└──" if index == len(items) - 1 else "├──"
            rows.append((f"{stem}{branch}{OBJECT} {name}", kind, state, age, info))
    return _columns(rows)


_CYCLE_IN_NAME = re.compile(r"-(g\d+(?:r\d+)?)-(?:train|tune)$")


def _group_of(kind: str, name: str, obj: dict | None) -> str:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_STAGE) == "serving" or kind in (inferenceservice.KIND, httproute.KIND):
        return "serving"
    if labels.get(LABEL_CYCLE):
        return f"cycle:{labels[LABEL_CYCLE]}"
    match = _CYCLE_IN_NAME.search(name)
    return f"cycle:{match.group(1)}" if match else "other"


def _cycle_key(group: str) -> tuple[int, int]:
    match = re.fullmatch(r"cycle:g(\d+)(?:r(\d+))?", group)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (-1, -1)


def _group_order(groups: dict, current: str | None) -> list[str]:
    """The current cycle first, older cycles newest first, then serving and anything else."""
    cycles = sorted((g for g in groups if g.startswith("cycle:") and g != f"cycle:{current}"),
                    key=_cycle_key, reverse=True)
    ordered = ([f"cycle:{current}"] if f"cycle:{current}" in groups else []) + cycles
    return ordered + [g for g in ("serving", "other") if g in groups]


# Within a group, children in the order their stages run.
_KIND_ORDER = (katib.KIND, pytorchjob.KIND, trainjob.KIND, inferenceservice.KIND, httproute.KIND)


def _entry_order(entry: tuple[str, str, dict | None]) -> tuple[int, str]:
    kind, name, _ = entry
    return (_KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER), name)


def _pipeline_state(state: str | None) -> State:
    word = state or "Pending"
    marker = {"Succeeded": OK, "Failed": FAILING}.get(word, PROGRESSING)
    return State(marker, word)


# --- pure: history ---------------------------------------------------------------------------------


def render_history(td: dict) -> str:
    meta = td.get("metadata") or {}
    history = (td.get("status") or {}).get("rolloutHistory") or []
    if not history:
        return f"No rollouts recorded for TrainDeploy {meta.get('namespace')}/{meta.get('name')}.\n"
    serving = ((td.get("status") or {}).get("serving") or {}).get("modelVersion")
    rows = [("VERSION", "RESULT", "PREVIOUS", "AT", "REASON")]
    for entry in history:
        version = entry.get("version") or ""
        mark = " (serving)" if version and version == serving else ""
        rows.append((version + mark, entry.get("result") or "", entry.get("previousVersion") or "",
                     entry.get("at") or "", entry.get("reason") or ""))
    return "\n".join(_columns(rows)) + "\n"


# --- pure: what the annotation commands set ------------------------------------------------------


@dataclass(frozen=True)
class Annotate:
    """Set `key` to `value`; `note` tells the user what follows."""

    key: str
    value: str
    note: str


@dataclass(frozen=True)
class Refuse:
    """Change nothing: the operator would ignore the request, or there is nothing to do."""

    message: str


def version_named(value: str) -> str:
    """"4", "v4" and "V4" name version 4, as the operator reads them."""
    value = value.strip()
    return value[1:] if value[:1] in ("v", "V") and value[1:].isdigit() else value


def decide_approve(td: dict, version: str | None) -> Annotate | Refuse:
    meta, rollout = td.get("metadata") or {}, (td.get("status") or {}).get("rollout") or {}
    ref = f"TrainDeploy {meta.get('namespace')}/{meta.get('name')}"
    waiting = rollout.get("awaitingApproval")
    if version is None:
        if not waiting:
            return Refuse(f"no version of {ref} awaits approval (status.rollout.awaitingApproval is empty)")
        version = waiting
    version = version_named(version)
    if waiting and version != waiting:
        return Refuse(f"version {version} does not await approval; version {waiting} does "
                      f"(the operator ignores an approval that names another version)")
    current = (meta.get("annotations") or {}).get(ANNOTATION_APPROVE)
    if current is not None and version_named(current) == version and not waiting:
        return Refuse(f"{ANNOTATION_APPROVE}={current} is already set on {ref}")
    note = (f"version {version} proceeds" if waiting else
            f"no version awaits approval now; version {version} proceeds when it reaches its approval point")
    return Annotate(ANNOTATION_APPROVE, version, note)


def decide_rollback(td: dict, version: str) -> Annotate | Refuse:
    meta, status = td.get("metadata") or {}, td.get("status") or {}
    ref = f"TrainDeploy {meta.get('namespace')}/{meta.get('name')}"
    version = version_named(version)
    serving = (status.get("serving") or {}).get("modelVersion")
    if serving is None:
        return Refuse(f"{ref} serves no version yet; there is nothing to roll back")
    if version == serving:
        return Refuse(f"version {version} already serves {ref}")
    known = sorted({e["version"] for e in status.get("rolloutHistory") or [] if e.get("version")
                    and e.get("storageUri")}, key=_version_key)
    if version not in known:
        listed = ", ".join(known) or "none"
        return Refuse(f"version {version} is not in the rollout history of {ref} (versions it can return to: "
                      f"{listed}); the operator would ignore it")
    # The operator acts once per annotation value (status.retrain.lastRollback), and reads 4, v4 and
    # V4 alike: when the plain value was handled before, another spelling asks again.
    handled = {(status.get("retrain") or {}).get("lastRollback"),
               (meta.get("annotations") or {}).get(ANNOTATION_ROLLBACK)}
    value = next((v for v in (version, f"v{version}", f"V{version}") if v not in handled), version)
    return Annotate(ANNOTATION_ROLLBACK, value,
                    f"all traffic goes back to version {version} (serving now: version {serving})")


def decide_retrain(td: dict, token: str | None, now: dt.datetime) -> Annotate | Refuse:
    meta, status = td.get("metadata") or {}, td.get("status") or {}
    used = {(meta.get("annotations") or {}).get(ANNOTATION_RETRAIN), (status.get("retrain") or {}).get("lastToken")}
    if token is not None:
        if token in used:
            return Refuse(f"{ANNOTATION_RETRAIN}={token} was requested before; the operator starts a cycle "
                          "once per new value")
    else:
        base = now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        token = next(candidate for candidate in (base if i == 0 else f"{base}-{i}" for i in range(len(used) + 1))
                     if candidate not in used)
    running = status.get("phase") not in (None, "Ready", "Failed")
    note = "a new training cycle is queued until the running one ends" if running else "a new training cycle starts"
    return Annotate(ANNOTATION_RETRAIN, token, note)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (sys.maxsize, version)


# --- pure: which pod's log -------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSource:
    """Where the current training job's pods are looked for, and which one is chosen."""

    kind: str
    job: str
    selector: str  # the label selector listed
    wanted: str  # in words, for the message when no pod matches


def log_source(td: dict) -> LogSource | Refuse:
    meta, training = td.get("metadata") or {}, (td.get("status") or {}).get("training") or {}
    ref = f"TrainDeploy {meta.get('namespace')}/{meta.get('name')}"
    kind, job = training.get("kind"), training.get("name")
    if not job:
        return Refuse(f"{ref} has no training job yet (status.training is empty)")
    if kind == trainjob.KIND:
        return LogSource(kind, job, trainjob.pod_selector(job),
                         f"{JOB_COMPLETION_INDEX}=0 of replicated job {' or '.join(TRAINER_REPLICATED_JOBS)}")
    if kind == pytorchjob.KIND:
        return LogSource(kind, job, pytorchjob.pod_selector(job), f"{PYTORCHJOB_REPLICA_TYPE}=master")
    return Refuse(f"{ref} trains with a {kind}; the plugin reads logs of PyTorchJob and TrainJob pods")


def pick_log_pod(source: LogSource, pods: list[dict]) -> dict | None:
    """The pod whose log is the training log: the PyTorchJob's Master (or, without one, the pod the
    Training Operator gives the master role), the TrainJob's trainer pod of completion index 0.
    Among restarts, the newest."""

    def labels(pod: dict) -> dict:
        return (pod.get("metadata") or {}).get("labels") or {}

    if source.kind == pytorchjob.KIND:
        ranked = [[p for p in pods if labels(p).get(PYTORCHJOB_REPLICA_TYPE) == "master"],
                  [p for p in pods if labels(p).get(PYTORCHJOB_JOB_ROLE) == "master"]]
    else:
        first = [p for p in pods if labels(p).get(JOB_COMPLETION_INDEX) == "0"]
        ranked = [[p for p in first if labels(p).get(JOBSET_REPLICATED_JOB) == job] for job in TRAINER_REPLICATED_JOBS]
    for candidates in ranked:
        if candidates:
            return max(candidates, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "",
                                                  (p.get("metadata") or {}).get("name") or ""))
    return None


def log_container(source: LogSource, pod: dict) -> str | None:
    """The trainer's container: `pytorch` (PyTorchJob), `node` (TrainJob); else the first one."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    for wanted in (pytorchjob.CONTAINER_NAME, trainjob.NODE, "launcher"):
        if wanted in names:
            return wanted
    return names[0] if names else None


def log_unavailable(pod: dict, container: str | None) -> Refuse | None:
    """Why the container has no log yet, or None when it has started (running or finished) at
    least once. The apiserver answers the log of an unscheduled pod with an empty body, not an
    error, so this is decided from the pod."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if not spec.get("nodeName"):
        return Refuse(f"it is not scheduled to a node (phase {phase})")
    for item in status.get("containerStatuses") or []:
        if item.get("name") != container:
            continue
        state, last = item.get("state") or {}, item.get("lastState") or {}
        if "waiting" in state and not last:
            reason = (state.get("waiting") or {}).get("reason") or "waiting"
            return Refuse(f"container {container} has not started ({reason}, phase {phase})")
        return None
    if phase == "Pending":
        return Refuse(f"container {container} has not started (phase {phase})")
    return None


# --- pure: small helpers ---------------------------------------------------------------------------


def _condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _number(value) -> str:
    return "?" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age(value: str | None, now: dt.datetime) -> str:
    """kubectl's way of saying how old something is (apimachinery's duration.HumanDuration)."""
    then = _parse_time(value)
    if then is None:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip() for row in rows]


# --- the cluster -----------------------------------------------------------------------------------


class Cluster:
    """Reads and writes through the kubernetes client; no decisions here."""

    def __init__(self, api_client, namespace: str, custom=None, core=None) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.custom = custom or client.CustomObjectsApi(api_client)
        self._core = core

    @property
    def core(self):
        # Made on first use: the client's CoreV1Api and the models it loads take about a second to
        # import, and only `logs` needs them.
        if self._core is None:
            from kubernetes import client

            self._core = client.CoreV1Api(self.api_client)
        return self._core

    def traindeploy(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                        _request_timeout=REQUEST_TIMEOUT)

    def children(self, td: dict) -> tuple[list[dict], set[str], list[str]]:
        """The objects labelled with the TrainDeploy's name, and those status.children names.

        Returns them, the kinds that were looked up (kinds the cluster does not serve are skipped)
        and warnings for kinds that could not be read.
        """
        from kubernetes.client.rest import ApiException

        name = td["metadata"]["name"]
        found: dict[tuple[str, str], dict] = {}
        looked_up: set[str] = set()
        warnings: list[str] = []
        for kind in CHILD_KINDS:
            try:
                if _label_value_ok(name):
                    listed = self.custom.list_namespaced_custom_object(
                        kind.group, kind.version, self.namespace, kind.plural,
                        label_selector=f"{LABEL_NAME}={name}", _request_timeout=REQUEST_TIMEOUT)
                    for item in listed.get("items") or []:
                        item.setdefault("kind", kind.kind)
                        item.setdefault("apiVersion", kind.api_version)
                        found[(kind.kind, item["metadata"]["name"])] = item
                looked_up.add(kind.kind)
                for ref in (td.get("status") or {}).get("children") or []:
                    if ref.get("kind") == kind.kind and (kind.kind, ref.get("name")) not in found:
                        item = self._get_child(kind, ref.get("name", ""))
                        if item is not None:
                            found[(kind.kind, ref["name"])] = item
            except ApiException as error:
                if error.status == 404:
                    continue  # the cluster does not serve this kind: nothing of it to draw
                if error.status == 403:
                    warnings.append(f"not allowed to list {kind.plural}.{kind.group} in {self.namespace}")
                    continue
                raise
        return list(found.values()), looked_up, warnings

    def _get_child(self, kind: ChildKind, name: str) -> dict | None:
        from kubernetes.client.rest import ApiException

        try:
            item = self.custom.get_namespaced_custom_object(kind.group, kind.version, self.namespace, kind.plural,
                                                            name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status == 404 and _status_kind(error) == kind.plural:
                return None
            raise
        item.setdefault("kind", kind.kind)
        return item

    def annotate(self, name: str, key: str, value: str, resource_version: str | None = None) -> dict:
        """A merge patch of one annotation; with `resource_version`, only if nothing changed since."""
        metadata: dict = {"annotations": {key: value}}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                          {"metadata": metadata}, _request_timeout=REQUEST_TIMEOUT)

    def pods(self, selector: str) -> list[dict]:
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=selector,
                                               _request_timeout=REQUEST_TIMEOUT)
        return [self.api_client.sanitize_for_serialization(pod) for pod in listed.items]

    def log(self, pod: str, container: str | None, tail: int | None, follow: bool):
        """The log as a stream of bytes chunks."""
        kwargs = {"container": container, "follow": follow, "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if not follow:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        response = self.core.read_namespaced_pod_log(pod, self.namespace, **kwargs)
        try:
            yield from response.stream(4096)
        finally:
            response.release_conn()

    def wait_for_change(self, name: str, resource_version: str, seconds: float) -> None:
        """Returns when the TrainDeploy changes, or after `seconds`."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        stream = watch.Watch()
        try:
            for _ in stream.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                   PLURAL, field_selector=f"metadata.name={name}", resource_version=resource_version,
                                   timeout_seconds=max(1, int(seconds)),
                                   _request_timeout=max(1, int(seconds)) + REQUEST_TIMEOUT):
                break
        except ApiException as error:
            if error.status != 410:  # our resourceVersion is too old: the next read starts afresh
                raise
        finally:
            stream.stop()


def _label_value_ok(value: str) -> bool:
    return len(value) <= 63 and re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value) is not None


def _status_body(error) -> dict:
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _status_kind(error) -> str | None:
    """The resource a 404 Status is about (its details.kind); None when the path itself was not
    found (an API the cluster does not serve answers with a plain-text 404)."""
    return (_status_body(error).get("details") or {}).get("kind")


# --- commands --------------------------------------------------------------------------------------


class Output:
    """Where commands write: results to stdout, errors to stderr."""

    def __init__(self, stdout=None, stderr=None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def error(self, message: str) -> int:
        self.stderr.write(f"error: {message}\n")
        self.stderr.flush()
        return 1

    def warn(self, message: str) -> None:
        self.stderr.write(f"warning: {message}\n")
        self.stderr.flush()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ref(cluster: Cluster, name: str) -> str:
    return f"TrainDeploy {cluster.namespace}/{name}"


def _read(cluster: Cluster, name: str, out: Output) -> dict | int:
    """The TrainDeploy, or the exit code after saying why there is none."""
    from kubernetes.client.rest import ApiException

    try:
        return cluster.traindeploy(name)
    except ApiException as error:
        if error.status == 404:
            if _status_kind(error) == PLURAL:
                return out.error(f"{_ref(cluster, name)} not found")
            return out.error(f"the cluster does not serve {PLURAL}.{GROUP}/{VERSION}: is the TrainDeploy CRD installed?")
        raise


# `get --watch` compares frames drawn at this fixed time, so that ages alone are no change.
_AGELESS = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _draw(cluster: Cluster, td: dict, out: Output) -> str:
    children, looked_up, warnings = cluster.children(td)
    for warning in warnings:
        out.warn(warning)
    return render_get(td, children, _now(), looked_up)


def cmd_get(cluster: Cluster, args, out: Output) -> int:
    td = _read(cluster, args.name, out)
    if isinstance(td, int):
        return td
    if not args.watch:
        out.write(_draw(cluster, td, out))
        return 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    # A terminal is redrawn in place, ages included; a pipe or file gets a new frame only when
    # something other than the ages changed.
    tty = getattr(out.stdout, "isatty", lambda: False)()
    last_key = last_text = None
    while True:
        if td is None:
            key = text = f"{_ref(cluster, args.name)} not found\n"
        else:
            children, looked_up, warnings = cluster.children(td)
            for warning in warnings if last_key is None else ():
                out.warn(warning)
            text = render_get(td, children, _now(), looked_up)
            key = render_get(td, children, _AGELESS, looked_up)
        if key != last_key or (tty and text != last_text):
            out.write("\x1b[H\x1b[2J" + text if tty else text if last_key is None else "\n" + text)
            last_key, last_text = key, text
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return 0
        wait = WATCH_INTERVAL if remaining is None else min(WATCH_INTERVAL, remaining)
        version = (td or {}).get("metadata", {}).get("resourceVersion")
        if version:
            cluster.wait_for_change(args.name, version, wait)
        else:
            time.sleep(wait)
        td = _read_quietly(cluster, args.name)


def _read_quietly(cluster: Cluster, name: str) -> dict | None:
    """While watching, a TrainDeploy that is gone is drawn as such, not an error."""
    from kubernetes.client.rest import ApiException

    try:
        return cluster.traindeploy(name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _annotate(cluster: Cluster, name: str, out: Output, decide: Callable[[dict], Annotate | Refuse],
              conditional: bool = False) -> int:
    """Reads, decides, writes. `conditional`: the decision depends on status, so the write carries
    the resourceVersion it was made from and a conflict means read and decide again."""
    from kubernetes.client.rest import ApiException

    for _ in range(5):
        td = _read(cluster, name, out)
        if isinstance(td, int):
            return td
        decision = decide(td)
        if isinstance(decision, Refuse):
            return out.error(decision.message)
        try:
            cluster.annotate(name, decision.key, decision.value,
                             td["metadata"]["resourceVersion"] if conditional else None)
        except ApiException as error:
            if error.status == 409 and conditional:
                continue
            if error.status == 404:
                return out.error(f"{_ref(cluster, name)} not found")
            raise
        out.write(f"{_ref(cluster, name)} annotated {decision.key}={decision.value}: {decision.note}\n")
        return 0
    return out.error(f"{_ref(cluster, name)} kept changing while it was being annotated; try again")


def cmd_approve(cluster: Cluster, args, out: Output) -> int:
    return _annotate(cluster, args.name, out, lambda td: decide_approve(td, args.version),
                     conditional=args.version is None)


def cmd_rollback(cluster: Cluster, args, out: Output) -> int:
    return _annotate(cluster, args.name, out, lambda td: decide_rollback(td, args.version), conditional=True)


def cmd_retrain(cluster: Cluster, args, out: Output) -> int:
    return _annotate(cluster, args.name, out, lambda td: decide_retrain(td, args.token, _now()))


def cmd_history(cluster: Cluster, args, out: Output) -> int:
    td = _read(cluster, args.name, out)
    if isinstance(td, int):
        return td
    out.write(render_history(td))
    return 0


def cmd_logs(cluster: Cluster, args, out: Output) -> int:
    from kubernetes.client.rest import ApiException

    td = _read(cluster, args.name, out)
    if isinstance(td, int):
        return td
    source = log_source(td)
    if isinstance(source, Refuse):
        return out.error(source.message)
    pod = pick_log_pod(source, cluster.pods(source.selector))
    if pod is None:
        return out.error(f"no pod of {source.kind} {cluster.namespace}/{source.job} yet (looked for pods labelled "
                         f"{source.selector} with {source.wanted}); the job may not have started, or its pods "
                         "were removed")
    pod_name = pod["metadata"]["name"]
    container = log_container(source, pod)
    not_started = log_unavailable(pod, container)
    if not_started is not None:
        return out.error(f"no log from pod {cluster.namespace}/{pod_name} yet: {not_started.message}")
    try:
        for chunk in cluster.log(pod_name, container, args.tail, args.follow):
            _write_bytes(out, chunk)
    except ApiException as error:
        if error.status in (400, 404):
            # 400: the container has not started (or the pod is not scheduled); 404: the pod is gone.
            phase = (pod.get("status") or {}).get("phase") or "Unknown"
            detail = _status_body(error).get("message") or error.reason
            return out.error(f"no log from pod {cluster.namespace}/{pod_name} (phase {phase}): {detail}")
        raise
    return 0


def _write_bytes(out: Output, chunk: bytes) -> None:
    buffer = getattr(out.stdout, "buffer", None)
    if buffer is not None:
        buffer.write(chunk)
        buffer.flush()
    else:
        out.write(chunk.decode(errors="replace"))


# --- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # The connection options are accepted before and after the command; SUPPRESS keeps a
    # subcommand's unset option from hiding one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, metavar="PATH",
                        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context (default: the current one)")
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                        help="namespace of the TrainDeploy (default: the context's namespace)")
    parser = argparse.ArgumentParser(prog="kubectl traindeploy", parents=[common],
                                     description="Look at TrainDeploys and steer their rollouts.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    get = commands.add_parser("get", parents=[common], help="draw a TrainDeploy, its cycle, children and traffic",
                              description="Draw a TrainDeploy with its current cycle, children and traffic split.")
    get.add_argument("name", metavar="NAME")
    get.add_argument("-w", "--watch", action="store_true", help="redraw on every change until Ctrl-C")
    get.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="with --watch, stop after this many seconds")
    get.set_defaults(run=cmd_get)

    approve = commands.add_parser("approve", parents=[common], help="approve the version awaiting approval",
                                  description=f"Set {ANNOTATION_APPROVE}: the rollout waiting for a manual "
                                  "approval proceeds.")
    approve.add_argument("name", metavar="NAME")
    approve.add_argument("version", metavar="VERSION", nargs="?",
                         help="the version to approve (default: status.rollout.awaitingApproval)")
    approve.set_defaults(run=cmd_approve)

    rollback = commands.add_parser("rollback", parents=[common], help="send all traffic back to a version",
                                   description=f"Set {ANNOTATION_ROLLBACK}: all traffic goes back to a version "
                                   "from the rollout history.")
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument("version", metavar="VERSION")
    rollback.set_defaults(run=cmd_rollback)

    retrain = commands.add_parser("retrain", parents=[common], help="start a new training cycle",
                                  description=f"Set {ANNOTATION_RETRAIN} to a new token: a training cycle "
                                  "starts, or is queued while one runs.")
    retrain.add_argument("name", metavar="NAME")
    retrain.add_argument("token", metavar="TOKEN", nargs="?", help="the token (default: the current UTC time)")
    retrain.set_defaults(run=cmd_retrain)

    history = commands.add_parser("history", parents=[common], help="list the rollouts of a TrainDeploy",
                                  description="Print status.rolloutHistory, newest first.")
    history.add_argument("name", metavar="NAME")
    history.set_defaults(run=cmd_history)

    logs = commands.add_parser("logs", parents=[common], help="print the current training job's log",
                               description="Print the log of the current training job's Master (PyTorchJob) "
                               "or node-0 (TrainJob) pod.")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as the log grows")
    logs.add_argument("--tail", type=int, default=None, metavar="LINES", help="only the last LINES lines")
    logs.set_defaults(run=cmd_logs)
    return parser


def connect(args) -> Cluster:
    """The cluster and namespace of the user's kubeconfig, as kubectl would pick them."""
    from kubernetes import config

    config_file = getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG") or os.path.expanduser(
        "~/.kube/config")
    context = getattr(args, "context", None)
    api_client = config.new_client_from_config(config_file=config_file, context=context)
    namespace = getattr(args, "namespace", None)
    if not namespace:
        contexts, active = config.list_kube_config_contexts(config_file=config_file)
        chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
        namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return Cluster(api_client, namespace)


def main(argv: list[str] | None = None, stdout=None, stderr=None) -> int:
    out = Output(stdout, stderr)
    args = build_parser().parse_args(argv)
    # The kubernetes client is imported only once a command runs: `--help` answers at once. It is
    # the `kubectl` extra's, not the operator's (whose image leaves it out).
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        return out.error("kubectl traindeploy needs the Kubernetes client: pip install 'traindeploy[kubectl]'")
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    # Ctrl-C ends a watch or a followed log, also when the plugin was started with SIGINT ignored
    # (a background job of a script): KeyboardInterrupt below turns it into a quiet exit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cluster = connect(args)
    except (ConfigException, OSError) as error:
        return out.error(f"kubeconfig: {error}")
    try:
        return args.run(cluster, args, out)
    except KeyboardInterrupt:  # Ctrl-C ends a watch or a followed log quietly, as with kubectl
        return 0
    except ApiException as error:
        return out.error(_describe(error))
    except HTTPError as error:
        host = getattr(cluster.api_client.configuration, "host", "the cluster")
        return out.error(f"cannot reach the Kubernetes API at {host}: {error}")
    finally:
        cluster.api_client.close()


def _describe(error) -> str:
    message = _status_body(error).get("message") or error.reason or ""
    if error.status == 401:
        return f"unauthorized: the credentials in the kubeconfig were refused ({message})"
    if error.status == 403:
        return f"forbidden: {message}"
    return f"the Kubernetes API answered {error.status} {error.reason}: {message}"


if __name__ == "__main__":
    sys.exit(main())
