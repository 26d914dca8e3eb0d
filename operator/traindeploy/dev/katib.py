"""Katib Experiment executor for `traindeploy dev`: trials as local processes, suggestions from Optuna.

`KatibExecutor` watches `kubeflow.org/v1beta1` Experiments in one namespace. For each new one it
asks an Optuna study for parameter assignments, substitutes them into the trial template
(`${trialParameters.<name>}`, as Katib's manifest generator does), hands the primary container to
`launch` as a `TrialLaunch`, reads the metrics from the trial's stdout with the StdOut collector's
default format, tells the study, and writes the Experiment's status as Katib's experiment
controller does (`traindeploy.dev.status.katib`).

Algorithms (Katib v0.19.0's names; the settings that have an Optuna counterpart are honoured,
others are ignored with a warning):

    random                 RandomSampler            random_state -> seed
    grid                   GridSampler              random_state -> seed; the grid as Katib's
                                                    optuna service builds it (double needs step)
    tpe                    TPESampler               random_state -> seed, n_startup_trials,
                                                    n_ei_candidates (hyperopt's n_EI_candidates),
                                                    prior_weight, gamma (hyperopt's fraction:
                                                    ceil(gamma * sqrt(n)) good trials, at most 25);
                                                    constant_liar as Katib's optuna service sets it
    multivariate-tpe       TPESampler(multivariate=True), the same settings
    cmaes                  CmaEsSampler             random_state -> seed, sigma -> sigma0;
                                                    restart_strategy is not honoured (Optuna >= 4.4
                                                    dropped it); categorical parameters are sampled
                                                    at random, as Optuna does for CMA-ES
    sobol                  QMCSampler(qmc_type="sobol"), scrambled with random_state as the seed
                                                    when given; categorical parameters at random
    bayesianoptimization   GPSampler                random_state -> seed, n_initial_points ->
                                                    n_startup_trials; base_estimator GP only;
                                                    acq_func and acq_optimizer have no counterpart.
                                                    Optuna's GPSampler needs torch: without it the
                                                    Experiment fails, naming the algorithm
    hyperband, enas, darts, pbt, and any other name: no Optuna sampler; the Experiment fails
                                                    (`Suggestion has failed: ...`, naming it)

Parameters map as Katib's optuna suggestion service maps them: double -> FloatDistribution (step
when uniform; log for logUniform, min at least 1e-10), int -> IntDistribution (log for logUniform,
min at least 1), categorical and discrete -> CategoricalDistribution of the list. `normal` and
`logNormal` have no Optuna distribution: the Experiment fails naming the parameter.

Trials: a Katib name (`<experiment>-<8 random characters>`), `KATIB_TRIAL_NAME` in the env, stdout
and stderr in `<workdir>/<namespace>/<experiment>/<trial>.log`. Exit 0 with the objective metric
seen: Succeeded; exit 0 without it: MetricsUnavailable; any other exit, or a `launch` that raised
(no local code for the image, a command not found): Failed, with no observation (Katib's collector
reports only after the `completed` marker). Optuna is told the objective's value by its metric
strategy (min, max or latest), and a failed trial as FAIL. At most `parallelTrialCount` trials run
at once and at most `maxTrialCount` are created in all (changes to these and `maxFailedTrialCount`
are followed); once the Experiment is Succeeded or Failed no trial is started, and running ones
finish and are still counted (Katib does not stop them either). Deleting the Experiment, or
`stop()`, terminates its trials' process groups (SIGTERM, then SIGKILL after a grace period): a
`launch` should start each process in a new session.

Differences from Katib that a user could see: trials are not Trial objects (only the Experiment's
status shows them); a metric value that is not a number is skipped (Katib keeps it as a string);
an Experiment left unfinished by a previous executor is searched again from its first trial.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import importlib.util
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from traindeploy.children import katib as katib_child
from traindeploy.dev.status import katib as status

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = katib_child.GROUP, katib_child.VERSION, katib_child.PLURAL

# The StdOut collector's default filter (pkg/metricscollector/v1beta1/common/const.go): name, value.
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
# Go's time.RFC3339Nano as the collector parses a line's first token.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)

PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")
_META_REFERENCE = re.compile(r"\$\{trialSpec\.(.+)\}")
_META_INDEXED = re.compile(r"^(.+)\[(.+)\]$")
# k8s.io/apimachinery's rand.String alphabet (no vowels: no words in generated names).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

ALGORITHMS = ("random", "grid", "tpe", "multivariate-tpe", "cmaes", "sobol", "bayesianoptimization")
TERMINATE_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class TrialLaunch:
    """What `launch` gets for one trial. `container` is the trial template's primary container
    after substitution (name, image, command, args, env as in the manifest); `env` the variables
    Katib adds (`KATIB_TRIAL_NAME`). `launch` returns a `subprocess.Popen` whose stdout and
    stderr go to `log_path`, started in a new session so the trial's process group can be ended."""
    name: str
    container: dict
    log_path: Path
    env: dict[str, str]
    namespace: str = ""
    # The whole substituted trial spec (apiVersion, kind, spec), for a launcher that runs replicas.
    trial_spec: dict = field(default_factory=dict)


class Unsupported(Exception):
    """The Experiment cannot run here; the message goes into its Failed condition."""


class SuggestionFailed(Unsupported):
    """The search algorithm or space has no Optuna counterpart (Katib: `Suggestion has failed`)."""


class TemplateError(Unsupported):
    """The trial template cannot be filled in as Katib's manifest generator would."""


# --- the search: algorithm, space -------------------------------------------------------------


def _settings(algorithm: Mapping[str, Any]) -> dict[str, str]:
    return {str(item.get("name")): str(item.get("value", "")) for item in algorithm.get("algorithmSettings") or []}


def _number(settings: Mapping[str, str], key: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(settings[key])
    except ValueError:
        raise SuggestionFailed(f"algorithm setting {key}={settings[key]!r} is not a valid {kind.__name__}") from None


def _hyperopt_gamma(fraction: float, n: int) -> int:
    """hyperopt's split of n trials into good ones: ceil(fraction * sqrt(n)), at most 25."""
    return min(math.ceil(fraction * math.sqrt(n)), 25)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid without its `study.stop()` once every point is visited: that works only inside
    `Study.optimize`, and the executor counts trials itself (`maxTrialCount`)."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: optuna.trial.TrialState, values: Sequence[float] | None) -> None:
        return None


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def sampler(algorithm: Mapping[str, Any], parameters: Sequence[Mapping[str, Any]]) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a Katib `spec.algorithm` (the table in the module docstring)."""
    name = algorithm.get("algorithmName") or katib_child.DEFAULT_ALGORITHM
    settings = _settings(algorithm)
    used: set[str] = set()

    def take(key: str, kind: Callable[[str], Any]) -> Any:
        used.add(key)
        return _number(settings, key, kind) if key in settings else None

    seed = take("random_state", int)
    built: optuna.samplers.BaseSampler
    with warnings.catch_warnings():
        # Experimental and deprecation notices of Optuna, not the user's business here.
        warnings.simplefilter("ignore")
        if name == "random":
            built = optuna.samplers.RandomSampler(seed=seed)
        elif name == "grid":
            built = _Grid(grid(parameters), seed=seed)
        elif name in ("tpe", "multivariate-tpe"):
            kwargs: dict[str, Any] = {"seed": seed, "constant_liar": True}
            if name == "multivariate-tpe":
                kwargs["multivariate"] = True
            given = {"n_startup_trials": take("n_startup_trials", int),
                     "n_ei_candidates": take("n_ei_candidates", int) or take("n_EI_candidates", int),
                     "prior_weight": take("prior_weight", float)}
            kwargs.update({key: value for key, value in given.items() if value is not None})
            gamma = take("gamma", float)
            if gamma is not None:
                kwargs["gamma"] = functools.partial(_hyperopt_gamma, gamma)
            built = optuna.samplers.TPESampler(**kwargs)
        elif name == "cmaes":
            built = optuna.samplers.CmaEsSampler(seed=seed, sigma0=take("sigma", float),
                                                 warn_independent_sampling=False)
        elif name == "sobol":
            built = optuna.samplers.QMCSampler(qmc_type="sobol", seed=seed, scramble=seed is not None,
                                               warn_independent_sampling=False)
        elif name == "bayesianoptimization":
            estimator = take("base_estimator", str)
            if estimator not in (None, "GP"):
                raise SuggestionFailed(f"algorithm {name!r} with base_estimator {estimator} has no Optuna "
                                       "counterpart (GPSampler is a Gaussian process: use GP)")
            if not has_module("torch"):
                raise SuggestionFailed(f"algorithm {name!r} runs on Optuna's GPSampler, which needs torch; "
                                       "install torch next to traindeploy")
            startup = take("n_initial_points", int)
            built = optuna.samplers.GPSampler(seed=seed, **({"n_startup_trials": startup} if startup else {}))
        else:
            raise SuggestionFailed(f"algorithm {name!r} has no Optuna counterpart in traindeploy dev "
                                   f"(it runs {', '.join(ALGORITHMS)})")
    ignored = sorted(set(settings) - used)
    if ignored:
        log.warning("Katib algorithm %s: settings without an Optuna counterpart are ignored: %s",
                    name, ", ".join(ignored))
    return built


def _bounds(parameter: Mapping[str, Any]) -> tuple[float, float, float | None]:
    space = parameter.get("feasibleSpace") or {}
    try:
        low, high = float(space["min"]), float(space["max"])
        step = float(space["step"]) if space.get("step") not in (None, "") else None
    except (KeyError, ValueError):
        raise SuggestionFailed(f"parameter {parameter.get('name')!r} needs numeric min and max") from None
    return low, high, step


def search_space(parameters: Sequence[Mapping[str, Any]]) -> dict[str, optuna.distributions.BaseDistribution]:
    """`spec.parameters` as Optuna distributions, in their order."""
    space: dict[str, optuna.distributions.BaseDistribution] = {}
    for parameter in parameters:
        name, kind = parameter.get("name"), parameter.get("parameterType")
        distribution = (parameter.get("feasibleSpace") or {}).get("distribution") or "uniform"
        if kind in ("categorical", "discrete"):
            values = [str(item) for item in (parameter.get("feasibleSpace") or {}).get("list") or []]
            if not values:
                raise SuggestionFailed(f"parameter {name!r} has an empty list")
            space[name] = optuna.distributions.CategoricalDistribution(values)
            continue
        if kind not in ("double", "int"):
            raise SuggestionFailed(f"parameter {name!r} has type {kind!r}, which Optuna cannot sample")
        if distribution not in ("uniform", "logUniform"):
            raise SuggestionFailed(f"parameter {name!r}: distribution {distribution} has no Optuna counterpart "
                                   "(uniform and logUniform have)")
        low, high, step = _bounds(parameter)
        log_scale = distribution == "logUniform"
        if kind == "int":
            space[name] = optuna.distributions.IntDistribution(
                max(1, int(low)) if log_scale else int(low), int(high), log=log_scale,
                step=1 if log_scale or not step else int(step))
        else:
            space[name] = optuna.distributions.FloatDistribution(
                max(1e-10, low) if log_scale else low, high, log=log_scale,
                step=None if log_scale else step)
    return space


def grid(parameters: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Every value of each parameter for the grid: int ranges by step (1 by default), double
    ranges by their step (required), lists as given."""
    combinations: dict[str, list] = {}
    for parameter in parameters:
        name, kind = parameter.get("name"), parameter.get("parameterType")
        if kind in ("categorical", "discrete"):
            combinations[name] = [str(item) for item in (parameter.get("feasibleSpace") or {}).get("list") or []]
            continue
        low, high, step = _bounds(parameter)
        if kind == "int":
            combinations[name] = list(range(int(low), int(high) + 1, int(step or 1)))
        elif step is None:
            raise SuggestionFailed(f"the grid algorithm needs a step for the double parameter {name!r}")
        else:
            count = int(math.floor((high - low) / step + 1e-9)) + 1
            combinations[name] = [float(format(low + index * step, ".12g")) for index in range(count)]
    return combinations


def assignment_value(value: Any) -> str:
    """A suggested value as Katib's parameter assignments carry it."""
    return str(value)


def trial_name(experiment: str) -> str:
    return f"{experiment}-{''.join(secrets.choice(_NAME_ALPHABET) for _ in range(8))}"


# --- the trial: template and metrics ----------------------------------------------------------


def trial_parameter_values(template: Mapping[str, Any], assignments: Mapping[str, str], *, trial_name: str,
                           namespace: str) -> dict[str, str]:
    """Each `trialParameters[].name` and its value: the assignment its `reference` names, or the
    trial's metadata for `${trialSpec.Name|Namespace|Kind|APIVersion|Labels[k]|Annotations[k]}`."""
    trial_spec = template.get("trialSpec") or {}
    metadata = trial_spec.get("metadata") or {}
    values: dict[str, str] = {}
    consumed = 0
    for item in template.get("trialParameters") or []:
        name, reference = item.get("name"), item.get("reference") or ""
        meta = _META_REFERENCE.search(reference)
        if meta is None:
            if reference not in assignments:
                raise TemplateError(f"trial parameter {name!r} references {reference!r}, which is not a parameter")
            values[name] = assignments[reference]
            consumed += 1
            continue
        key, index = meta.group(1), None
        indexed = _META_INDEXED.match(key)
        if indexed:
            key, index = indexed.group(1), indexed.group(2)
        known = {"Name": trial_name, "Namespace": namespace, "Kind": trial_spec.get("kind"),
                 "APIVersion": trial_spec.get("apiVersion")}
        if key in known and index is None:
            values[name] = str(known[key] or "")
        elif key in ("Labels", "Annotations") and index is not None and index in (metadata.get(key.lower()) or {}):
            values[name] = str(metadata[key.lower()][index])
        else:
            raise TemplateError(f"trial parameter {name!r}: illegal reference of trial metadata {reference!r}")
    if consumed != len(assignments):
        raise TemplateError(f"the trial template's parameters do not consume every parameter: {sorted(assignments)}")
    return values


def substitute(template: Mapping[str, Any], assignments: Mapping[str, str], *, trial_name: str,
               namespace: str) -> dict:
    """The trial spec with every `${trialParameters.<name>}` replaced by its value."""
    values = trial_parameter_values(template, assignments, trial_name=trial_name, namespace=namespace)

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            filled = PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), node)
            undeclared = PLACEHOLDER.search(filled)
            if undeclared:
                raise TemplateError(f"the trial template uses {undeclared.group(0)}, which trialParameters "
                                    "does not declare")
            return filled
        if isinstance(node, Mapping):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(item) for item in node]
        return node

    return fill(copy.deepcopy(dict(template.get("trialSpec") or {})))


def primary_container(trial_spec: Mapping[str, Any], primary: str) -> dict:
    """The container Katib collects metrics from: in a PyTorchJob the Master's (else Worker's)
    container named `primary`; in a TrainJob the trainer; in a batch Job its pod's container."""
    kind, spec = trial_spec.get("kind"), trial_spec.get("spec") or {}
    if kind == "TrainJob":
        trainer = spec.get("trainer") or {}
        return {"name": primary, **{key: copy.deepcopy(trainer[key])
                                    for key in ("image", "command", "args", "env") if key in trainer}}
    if kind == "PyTorchJob":
        replicas = spec.get("pytorchReplicaSpecs") or {}
        pod = (replicas.get("Master") or replicas.get("Worker") or {}).get("template") or {}
    elif kind == "Job":
        pod = spec.get("template") or {}
    else:
        raise TemplateError(f"trial kind {kind!r} is not run by traindeploy dev (PyTorchJob, TrainJob, Job are)")
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == primary:
            return copy.deepcopy(container)
    raise TemplateError(f"the trial template has no container named {primary!r}")


@dataclass(frozen=True)
class Sample:
    name: str
    value: str
    timestamp: dt.datetime


def _timestamp(line: str) -> dt.datetime:
    first = line.split(" ", 1)
    if len(first) == 2 and _RFC3339.match(first[0]):
        try:
            return dt.datetime.fromisoformat(first[0].replace("Z", "+00:00"))
        except ValueError:
            pass
    return _ZERO_TIME


def parse_metrics(lines: Iterable[str], names: Sequence[str], filters: Sequence[str] = ()) -> list[Sample]:
    """The samples of `names` in the lines, as the StdOut collector reads TEXT: only lines that
    contain a metric name, every `name=value` match of each filter (the default one when none),
    a leading RFC 3339 timestamp as the sample's time. Values that are not numbers are skipped."""
    patterns = [re.compile(item, re.ASCII) for item in (filters or [DEFAULT_FILTER])]
    wanted = set(names)
    samples = []
    for line in lines:
        line = line.rstrip("\n")
        if not any(name in line for name in names):
            continue
        when = _timestamp(line)
        for pattern in patterns:
            for match in pattern.finditer(line):
                if pattern.groups < 2:
                    continue
                name, value = (match.group(1) or "").strip(), (match.group(2) or "").strip()
                if name not in wanted:
                    continue
                try:
                    float(value)
                except ValueError:
                    continue
                samples.append(Sample(name, value, when))
    return samples


def observation(samples: Iterable[Sample], names: Sequence[str]) -> list[dict]:
    """One metric per name: min and max over the samples, latest by timestamp (the later line
    wins a tie); `unavailable` where a metric never appeared."""
    found: dict[str, dict[str, Any]] = {}
    for sample in samples:
        value = float(sample.value)
        entry = found.get(sample.name)
        if entry is None:
            found[sample.name] = {"min": (value, sample.value), "max": (value, sample.value),
                                  "latest": (sample.timestamp, sample.value)}
            continue
        if value < entry["min"][0]:
            entry["min"] = (value, sample.value)
        if value > entry["max"][0]:
            entry["max"] = (value, sample.value)
        if sample.timestamp >= entry["latest"][0]:
            entry["latest"] = (sample.timestamp, sample.value)
    metrics = []
    for name in names:
        entry = found.get(name)
        metrics.append(status.metric(name) if entry is None else status.metric(
            name, min=entry["min"][1], max=entry["max"][1], latest=entry["latest"][1]))
    return metrics


# --- one Experiment ---------------------------------------------------------------------------


@dataclass
class _Trial:
    name: str
    assignments: tuple[tuple[str, str], ...]
    number: int
    log_path: Path
    process: subprocess.Popen | None = None
    state: str = status.T_RUNNING
    metrics: tuple[dict, ...] = ()

    def record(self) -> status.Trial:
        return status.Trial(self.name, self.state, self.assignments, self.metrics)


@dataclass(frozen=True)
class _Plan:
    study: optuna.Study
    space: dict[str, optuna.distributions.BaseDistribution]
    metric_names: tuple[str, ...]
    filters: tuple[str, ...]


def plan(spec: Mapping[str, Any]) -> _Plan:
    """The study and what the trials need from the spec; `Unsupported` when it cannot run here."""
    template = spec.get("trialTemplate") or {}
    if not template.get("trialSpec"):
        raise TemplateError("the trial template has no trialSpec (a configMap template is not read by "
                            "traindeploy dev)")
    collector = (((spec.get("metricsCollectorSpec") or {}).get("collector") or {}).get("kind")) or "StdOut"
    if collector != "StdOut":
        raise Unsupported(f"the {collector} metrics collector is not run by traindeploy dev (StdOut is)")
    objective = spec.get("objective") or {}
    if objective.get("type") not in ("maximize", "minimize"):
        raise Unsupported(f"objective type {objective.get('type')!r} is neither maximize nor minimize")
    parameters = spec.get("parameters") or []
    space = search_space(parameters)
    # The template must fill in, as Katib checks it before creating any trial.
    example = {name: assignment_value(distribution.to_external_repr(0) if isinstance(
        distribution, optuna.distributions.CategoricalDistribution) else distribution.low)
        for name, distribution in space.items()}
    primary_container(substitute(template, example, trial_name="check", namespace="check"),
                      template.get("primaryContainerName") or "")
    filters = ((spec.get("metricsCollectorSpec") or {}).get("source") or {}).get("filter") or {}
    study = optuna.create_study(direction=objective["type"], sampler=sampler(spec.get("algorithm") or {}, parameters))
    return _Plan(study, space, tuple(status.metric_strategies(objective)), tuple(filters.get("metricsFormat") or ()))


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict:
    """The JSON merge patch turning `old` into `new`: removed keys as null."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(old.get(key), Mapping):
            nested = merge_patch(old[key], value)
            if nested:
                patch[key] = nested
        elif key not in old or old[key] != value:
            patch[key] = value
    return patch


def _terminate(processes: Sequence[subprocess.Popen], grace: float) -> None:
    """SIGTERM to each process group (the process alone when it leads none), SIGKILL after `grace`."""
    def send(process: subprocess.Popen, sig: int) -> None:
        try:
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass

    alive = [process for process in processes if process.poll() is None]
    for process in alive:
        send(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in alive:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            send(process, signal.SIGKILL)
            process.wait(timeout=grace)


class _Search:
    """One Experiment's search, in its own thread: launch, collect, tell, write status."""

    def __init__(self, executor: KatibExecutor, obj: Mapping[str, Any]) -> None:
        self.executor = executor
        self.name = obj["metadata"]["name"]
        self.uid = obj["metadata"].get("uid")
        self.spec = copy.deepcopy(obj.get("spec") or {})
        self.written = copy.deepcopy(obj.get("status") or {})
        self.trials: list[_Trial] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"katib-{self.name}", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.thread.start()

    def update_spec(self, spec: Mapping[str, Any]) -> None:
        """Katib lets only parallelTrialCount, maxTrialCount and maxFailedTrialCount change."""
        with self._lock:
            for key in ("parallelTrialCount", "maxTrialCount", "maxFailedTrialCount"):
                if key in spec:
                    self.spec[key] = spec[key]
                else:
                    self.spec.pop(key, None)

    def stop(self, wait: bool) -> None:
        self.stopped.set()
        if wait and self.thread.is_alive():
            self.thread.join(timeout=TERMINATE_GRACE_SECONDS * 2 + 5)

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._search()
        except Exception:  # a bug: say so, and leave the Experiment as it stands
            log.exception("Katib executor: the search of Experiment %s stopped", self.name)
        finally:
            _terminate([trial.process for trial in self.trials if trial.process is not None],
                       TERMINATE_GRACE_SECONDS)

    def _search(self) -> None:
        at = status.now()
        try:
            planned = plan(self.spec)
        except Unsupported as problem:
            prefix = f"{status.SUGGESTION_FAILED_MESSAGE}: " if isinstance(problem, SuggestionFailed) else ""
            started = status.update(self.written, self.spec, [], at)
            self._write(status.failed(started, {}, f"{prefix}{problem}", at))
            return
        while not self.stopped.is_set():
            self._collect(planned)
            with self._lock:
                spec = copy.deepcopy(self.spec)
            current = status.update(self.written, spec, self._records(), status.now())
            if not status.is_completed(current) and self._launch(planned, spec):
                current = status.update(self.written, spec, self._records(), status.now())
            if not self._write(current):
                return
            if status.is_completed(current) and not self._active():
                return
            self.stopped.wait(self.executor.poll_interval)

    def _records(self) -> list[status.Trial]:
        return [trial.record() for trial in self.trials]

    def _active(self) -> list[_Trial]:
        return [trial for trial in self.trials if trial.state == status.T_RUNNING]

    def _launch(self, planned: _Plan, spec: Mapping[str, Any]) -> int:
        parallel = int(spec.get("parallelTrialCount") or katib_child.DEFAULT_PARALLEL_TRIALS)
        limit = spec.get("maxTrialCount")
        wanted = parallel - len(self._active())
        if limit is not None:
            wanted = min(wanted, int(limit) - len(self.trials))
        template = spec.get("trialTemplate") or {}
        namespace = self.executor.namespace
        for _ in range(max(0, wanted)):
            asked = planned.study.ask(fixed_distributions=planned.space)
            assignments = tuple((name, assignment_value(asked.params[name])) for name in planned.space)
            taken = {trial.name for trial in self.trials}
            name = trial_name(self.name)
            while name in taken:
                name = trial_name(self.name)
            log_path = self.executor.workdir / namespace / self.name / f"{name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            trial = _Trial(name, assignments, asked.number, log_path)
            self.trials.append(trial)
            trial_spec = substitute(template, dict(assignments), trial_name=name, namespace=namespace)
            launch = TrialLaunch(name=name, container=primary_container(trial_spec, template.get("primaryContainerName")
                                                                        or ""),
                                 log_path=log_path, env={"KATIB_TRIAL_NAME": name}, namespace=namespace,
                                 trial_spec=trial_spec)
            try:
                trial.process = self.executor.launch(launch)
            except Exception as error:  # the launcher refused it (no local code for the image, ...)
                log.warning("Katib trial %s could not start: %s: %s", name, type(error).__name__, error)
                trial.state = status.T_FAILED
                planned.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            else:
                log.info("Katib trial %s started: %s", name, dict(assignments))
        return max(0, wanted)

    def _collect(self, planned: _Plan) -> None:
        objective = self.spec.get("objective") or {}
        for trial in self._active():
            code = trial.process.poll() if trial.process is not None else None
            if code is None:
                continue
            if code != 0:
                trial.state = status.T_FAILED
                planned.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                log.info("Katib trial %s failed with exit code %s", trial.name, code)
                continue
            try:
                lines = trial.log_path.read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            trial.metrics = tuple(observation(parse_metrics(lines, planned.metric_names, planned.filters),
                                              planned.metric_names))
            value = status.objective_value(trial.metrics, objective)
            if value is None:
                trial.state = status.T_METRICS_UNAVAILABLE
                planned.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            else:
                trial.state = status.T_SUCCEEDED
                planned.study.tell(trial.number, float(value))
            log.info("Katib trial %s: %s, %s", trial.name, trial.state, value)

    def _write(self, new: dict) -> bool:
        """Writes the status if it changed; False when the Experiment is gone."""
        patch = merge_patch(self.written, new)
        if not patch:
            return True
        try:
            self.executor.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.executor.namespace, PLURAL, self.name, {"status": patch})
        except ApiException as error:
            if error.status == 404:
                self.stopped.set()
                return False
            log.warning("Katib executor: status of Experiment %s not written (HTTP %s); will retry",
                        self.name, error.status)
            return True
        except (urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("Katib executor: status of Experiment %s not written (%s); will retry", self.name, error)
            return True
        self.written = new
        return True


# --- the executor -----------------------------------------------------------------------------


class KatibExecutor:
    """Runs every Experiment of `namespace` as local trials; `with KatibExecutor(...) as executor:`
    or `start()` / `stop()`."""

    def __init__(self, api_client: client.ApiClient, namespace: str,
                 launch: Callable[[TrialLaunch], subprocess.Popen], workdir: Path | str, *,
                 poll_interval: float = 0.5, watch_timeout: int = 5) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.launch = launch
        self.workdir = Path(workdir)
        # How often running trials are checked, and how long one watch request lasts (stop()
        # waits for the current one to end).
        self.poll_interval = poll_interval
        self.watch_timeout = watch_timeout
        self._searches: dict[str, _Search] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> KatibExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            return
        # Optuna reports every told trial at INFO on stderr; the executor logs its own lines.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._watch, name=f"katib-executor-{self.namespace}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the watch and every search, terminating their running trials."""
        self._stopping.set()
        with self._lock:
            searches = list(self._searches.values())
        for search in searches:
            search.stopped.set()
        for search in searches:
            search.stop(wait=True)
        if self._thread is not None:
            self._thread.join(timeout=self.watch_timeout + 10)
            self._thread = None

    # -- watching ----------------------------------------------------------------------------

    def _watch(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
                self._sync(listed.get("items") or [])
                version = (listed.get("metadata") or {}).get("resourceVersion")
                while not self._stopping.is_set():
                    stream = watch.Watch()
                    for event in stream.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                               self.namespace, PLURAL, resource_version=version,
                                               timeout_seconds=self.watch_timeout,
                                               _request_timeout=self.watch_timeout + 10):
                        obj = event.get("raw_object") or event.get("object") or {}
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        self._on(event.get("type"), obj)
                        if self._stopping.is_set():
                            stream.stop()
                            break
                backoff = 0.5
            except ApiException as error:
                if error.status == 410:  # the watch's resourceVersion expired: list again
                    continue
                log.warning("Katib executor: watching Experiments failed (HTTP %s); retrying", error.status)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                log.warning("Katib executor: watching Experiments failed (%s); retrying", error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _sync(self, items: Sequence[Mapping[str, Any]]) -> None:
        present = {(item.get("metadata") or {}).get("uid") for item in items}
        with self._lock:
            gone = [search for uid, search in self._searches.items() if uid not in present]
        for search in gone:
            search.stop(wait=False)
        for item in items:
            self._on("ADDED", item)

    def _on(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid or self._stopping.is_set():
            return
        with self._lock:
            search = self._searches.get(uid)
            if kind == "DELETED" or metadata.get("deletionTimestamp"):
                if search is not None:
                    search.stop(wait=False)
                return
            if search is not None:
                search.update_spec(obj.get("spec") or {})
                return
            if status.is_completed(obj.get("status") or {}):
                return
            search = _Search(self, obj)
            # Kept after it ends: a late event about this Experiment never starts it again.
            self._searches[uid] = search
        log.info("Katib executor: searching for Experiment %s", metadata.get("name"))
        search.start()
