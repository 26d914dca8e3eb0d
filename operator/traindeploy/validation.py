"""Spec values that pass the CRD but cannot work, found before any work starts.

The CRD rejects what OpenAPI and CEL can express (patterns, ranges, cross-field rules). What is
left needs code: a cron parser, Katib's rules for metric names and search spaces, the settings
its suggestion services accept (which the user would otherwise only see as "Suggestion has
failed"), quantities compared with each other, operator defaults that are missing. Each problem
names the field; the driver reports them as `InvalidSpec` in one pass, and nothing is retried
until the spec changes. Pure: spec and configuration in, problems out.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import string
import urllib.parse
from dataclasses import dataclass

from croniter import CroniterBadDateError, croniter

from traindeploy.children import katib
from traindeploy.config import OperatorConfig
from traindeploy.secrets import MLFLOW_SECRET_KEYS


@dataclass(frozen=True)
class SpecProblem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# Environment variables the operator sets on the trainer; a user value would be overwritten or
# would shadow them.
OPERATOR_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", *MLFLOW_SECRET_KEYS)
PROMETHEUS_VARIABLES = ("namespace", "name", "inferenceService", "canary", "version")

# The settings each suggestion service accepts, with a check of the value. Each algorithm is
# served by the image Katib's standalone katib-config gives it (manifests/v1beta1/installs/
# katib-standalone/katib-config.yaml @ v0.19.0): random and tpe by hyperopt, grid by optuna,
# bayesianoptimization by skopt, cmaes by goptuna, hyperband by its own service; the checks are
# those services' ValidateAlgorithmSettings (pkg/suggestion/v1beta1/{hyperopt,optuna,skopt,
# hyperband}/service.py, goptuna/converter.go).
_INT, _COUNT, _POSITIVE_INT = "an integer", "an integer of 0 or more", "an integer of 1 or more"
_POSITIVE, _FRACTION = "a positive number", "a number between 0 and 1"


def _is_int(value: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", value.strip()) is not None


def _is_count(value: str) -> bool:
    return _is_int(value) and int(value) >= 0


def _is_positive_int(value: str) -> bool:
    return _is_int(value) and int(value) > 0


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_positive(value: str) -> bool:
    number = _number(value)
    return number is not None and number > 0


def _is_fraction(value: str) -> bool:
    number = _number(value)
    return number is not None and 0 < number < 1


def _is_hyperband_eta(value: str) -> bool:
    # The service truncates eta to an integer and takes a logarithm to its base: 1 divides by 0.
    number = _number(value)
    return number is not None and number >= 2


ALGORITHM_SETTINGS: dict[str, dict[str, tuple[str, object]]] = {
    "random": {"random_state": (_COUNT, _is_count)},
    "grid": {"random_state": (_COUNT, _is_count)},
    # hyperopt's names, not optuna's (n_startup_trials, n_ei_candidates): hyperopt serves tpe.
    "tpe": {"gamma": (_FRACTION, _is_fraction), "prior_weight": (_POSITIVE, _is_positive),
            "n_EI_candidates": (_POSITIVE_INT, _is_positive_int), "random_state": (_COUNT, _is_count)},
    "cmaes": {"restart_strategy": ("one of none, ipop, bipop", lambda v: v in ("none", "ipop", "bipop")),
              "sigma": (_POSITIVE, _is_positive), "random_state": (_INT, _is_int)},
    "bayesianoptimization": {
        "base_estimator": ("one of GP, RF, ET, GBRT", lambda v: v in ("GP", "RF", "ET", "GBRT")),
        "n_initial_points": (_COUNT, _is_count),
        "acq_func": ("one of gp_hedge, LCB, EI, PI", lambda v: v in ("gp_hedge", "LCB", "EI", "PI")),
        "acq_optimizer": ("one of auto, sampling, lbfgs", lambda v: v in ("auto", "sampling", "lbfgs")),
        "random_state": (_COUNT, _is_count)},
    "hyperband": {"r_l": (_POSITIVE, _is_positive), "eta": ("a number of 2 or more", _is_hyperband_eta),
                  "resource_name": ("a parameter name", lambda v: bool(v))},
}
HYPERBAND_REQUIRED = ("r_l", "resource_name")

_CRON_PROBE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check(spec: dict, config: OperatorConfig) -> list[SpecProblem]:
    """Every problem of the spec, in the order of its fields."""
    problems: list[SpecProblem] = []
    problems += _mlflow(spec, config)
    problems += _pipeline(spec, config)
    problems += _tuning(spec)
    problems += _training(spec)
    problems += _serving(spec, config)
    problems += _retrain(spec)
    return problems


def _url_with_credentials(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.username is not None or parts.password is not None


def _url(problems: list, field: str, url: str | None, where_secrets: str) -> None:
    if not url:
        return
    parts = urllib.parse.urlsplit(url)
    if _url_with_credentials(url):
        problems.append(SpecProblem(field, f"must not contain credentials; put them in {where_secrets}."))
    elif not parts.hostname:
        problems.append(SpecProblem(field, "has no host."))


def _mlflow(spec: dict, config: OperatorConfig) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    mlflow = spec.get("mlflow") or {}
    uri = mlflow.get("trackingUri")
    if not uri and not config.mlflow_tracking_uri:
        problems.append(SpecProblem("spec.mlflow.trackingUri", "not set, and the operator has no default MLflow URI."))
    _url(problems, "spec.mlflow.trackingUri", uri, "the Secret spec.mlflow.credentialsSecretRef names")
    name = (spec.get("model") or {}).get("name") or ""
    if name != name.strip():
        problems.append(SpecProblem("spec.model.name", "has leading or trailing whitespace."))
    return problems


def _pipeline(spec: dict, config: OperatorConfig) -> list[SpecProblem]:
    pipeline = spec.get("pipeline")
    if not pipeline:
        return []
    problems: list[SpecProblem] = []
    if not pipeline.get("endpoint") and not config.kfp_endpoint:
        problems.append(SpecProblem("spec.pipeline.endpoint", "not set, and the operator has no default KFP endpoint."))
    _url(problems, "spec.pipeline.endpoint", pipeline.get("endpoint"), "the Secret spec.pipeline.tokenSecretRef names")
    _url(problems, "spec.pipeline.package.url", (pipeline.get("package") or {}).get("url"),
         "a ConfigMap (spec.pipeline.package.configMapKeyRef)")
    return problems


def _tuning(spec: dict) -> list[SpecProblem]:
    tuning = spec.get("tuning")
    if not tuning:
        return []
    problems: list[SpecProblem] = []
    objective = tuning.get("objective") or {}
    for index, name in enumerate([objective.get("metricName"), *(objective.get("additionalMetricNames") or [])]):
        field = "spec.tuning.objective.metricName" if index == 0 else \
            f"spec.tuning.objective.additionalMetricNames[{index - 1}]"
        if name is not None and not katib.readable_metric_name(name):
            problems.append(SpecProblem(field, f"{name!r} cannot be read from the trainer's output by Katib: use "
                                               "letters, digits, '_', '-' or '|' and print it as name=value."))
    parameters = tuning.get("parameters") or []
    seen: set[str] = set()
    combinations = 1
    for index, parameter in enumerate(parameters):
        field = f"spec.tuning.parameters[{index}]"
        name, kind = parameter.get("name"), parameter.get("type")
        if name in seen:
            problems.append(SpecProblem(f"{field}.name", f"{name!r} is tuned twice."))
        seen.add(name)
        if kind in ("double", "int"):
            low, high, step = parameter.get("min"), parameter.get("max"), parameter.get("step")
            if kind == "int":
                for key in ("min", "max", "step"):
                    value = parameter.get(key)
                    if value is not None and float(value) != int(float(value)):
                        problems.append(SpecProblem(f"{field}.{key}", f"{value} is not a whole number, and "
                                                                      f"{name!r} is an int parameter."))
            if low is not None and high is not None and float(low) >= float(high):
                problems.append(SpecProblem(f"{field}.max", f"must be greater than min ({low})."))
            elif parameter.get("distribution") in ("logUniform", "logNormal") and low is not None and float(low) <= 0:
                problems.append(SpecProblem(f"{field}.min", f"must be positive for a {parameter['distribution']} "
                                                            "distribution."))
            if step is not None and float(step) == 0:
                problems.append(SpecProblem(f"{field}.step", "must be greater than 0."))
            if tuning.get("algorithm") == "grid":
                if kind == "double" and step is None:
                    problems.append(SpecProblem(f"{field}.step", "the grid algorithm needs a step for double "
                                                                 "parameters."))
                if low is not None and high is not None and float(low) < float(high):
                    combinations *= int((float(high) - float(low)) / float(step or 1)) + 1
        else:
            values = parameter.get("values") or []
            if len(set(map(str, values))) != len(values):
                problems.append(SpecProblem(f"{field}.values", "has duplicates."))
            if kind == "discrete" and not all(_is_number(v) for v in values):
                problems.append(SpecProblem(f"{field}.values", "discrete values must be numbers."))
            combinations *= max(1, len(set(map(str, values))))
    problems += _algorithm(tuning, combinations)
    problems += _trial_words(spec)
    problems += _trial_placeholders(spec)
    max_failed, max_trials = tuning.get("maxFailedTrials"), tuning.get("maxTrials")
    if max_failed is not None and max_trials is not None and max_failed > max_trials:
        problems.append(SpecProblem("spec.tuning.maxFailedTrials", f"must not exceed maxTrials ({max_trials})."))
    return problems


def _trial_words(spec: dict) -> list[SpecProblem]:
    """What Katib's StdOut collector passes through `sh -c` unquoted: the command, the args, the
    fixed hyperparameter values and the tuned categorical values (katib.survives_stdout_wrapper)."""
    training, tuning = spec.get("training") or {}, spec["tuning"]
    why = ("cannot pass unchanged through Katib's StdOut collector, which joins the trial's command and args "
           "unquoted into sh -c: use only letters, digits and @%+=:,./-_ in each word.")
    problems: list[SpecProblem] = []
    if (training.get("backend") or "PyTorchJob") == "PyTorchJob" and not training.get("command"):
        problems.append(SpecProblem("spec.training.command", "is required with spec.tuning: without it Katib's "
                                                             "StdOut collector reads the image's entrypoint from its "
                                                             "registry."))
    for key in ("command", "args"):
        for index, word in enumerate(training.get(key) or []):
            if not katib.survives_stdout_wrapper(str(word)):
                problems.append(SpecProblem(f"spec.training.{key}[{index}]", f"{str(word)!r} {why}"))
    for name, value in sorted((training.get("hyperparameters") or {}).items()):
        if not katib.survives_stdout_wrapper(str(value)):
            problems.append(SpecProblem(f"spec.training.hyperparameters.{name}", f"{str(value)!r} {why}"))
    for index, parameter in enumerate(tuning.get("parameters") or []):
        bad = [str(v) for v in parameter.get("values") or [] if not katib.survives_stdout_wrapper(str(v))]
        if bad:
            problems.append(SpecProblem(f"spec.tuning.parameters[{index}].values", f"{bad[0]!r} {why}"))
    return problems


_TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\.(.+?)\}")


def _trial_placeholders(spec: dict) -> list[SpecProblem]:
    """Katib's validating webhook refuses a trial template with a `${trialParameters.<name>}` it
    has no trial parameter for (validator.go @ v0.19.0); the builder declares one per tuned
    parameter. Of the trial's free text only env values can hold one (args cannot hold `$`)."""
    training, tuning = spec.get("training") or {}, spec["tuning"]
    tuned = {parameter.get("name") for parameter in tuning.get("parameters") or []}
    problems: list[SpecProblem] = []
    for index, item in enumerate(training.get("env") or []):
        unknown = [name for name in _TRIAL_PARAMETER.findall(str(item.get("value") or "")) if name not in tuned]
        if unknown:
            problems.append(SpecProblem(f"spec.training.env[{index}].value",
                                        f"${{trialParameters.{unknown[0]}}} names no tuned parameter; Katib "
                                        "refuses a trial template with it."))
    return problems


def _is_number(value: object) -> bool:
    try:
        return math.isfinite(float(str(value)))
    except ValueError:
        return False


def _algorithm(tuning: dict, combinations: int) -> list[SpecProblem]:
    algorithm = tuning.get("algorithm") or katib.DEFAULT_ALGORITHM
    settings = tuning.get("algorithmSettings") or {}
    known = ALGORITHM_SETTINGS.get(algorithm, {})
    problems = []
    for key in sorted(settings):
        field = f"spec.tuning.algorithmSettings.{key}"
        if key not in known:
            accepted = ", ".join(sorted(known)) or "none"
            problems.append(SpecProblem(field, f"is not a setting of the {algorithm} algorithm (it takes: {accepted})."))
            continue
        what, valid = known[key]
        if not valid(str(settings[key])):
            problems.append(SpecProblem(field, f"must be {what}, got {settings[key]!r}."))
    if algorithm == "hyperband":
        problems += _hyperband(tuning, settings, [p for p in problems if p.field.startswith(
            "spec.tuning.algorithmSettings.")])
    if algorithm == "cmaes":
        continuous = [p for p in tuning.get("parameters") or [] if p.get("type") in ("double", "int")]
        if len(continuous) < 2:
            problems.append(SpecProblem("spec.tuning.parameters", "cmaes needs at least two double or int "
                                                                  f"parameters, got {len(continuous)}."))
    if algorithm == "grid" and tuning.get("maxTrials") and tuning["maxTrials"] > combinations:
        problems.append(SpecProblem("spec.tuning.maxTrials", f"the grid has only {combinations} combinations, "
                                                             f"fewer than {tuning['maxTrials']} trials."))
    return problems


def _hyperband(tuning: dict, settings: dict, setting_problems: list[SpecProblem]) -> list[SpecProblem]:
    """What hyperband's ValidateAlgorithmSettings wants beyond single values: r_l and
    resource_name set, the resource a tuned parameter, and enough parallel trials for the first
    bracket, ceil(eta ** s_max) with s_max = int(log(r_l) / log(eta)) and eta truncated."""
    problems = [SpecProblem(f"spec.tuning.algorithmSettings.{key}", "is required by hyperband.")
                for key in HYPERBAND_REQUIRED if key not in settings]
    if problems or setting_problems:
        return problems
    tuned = [p.get("name") for p in tuning.get("parameters") or []]
    if settings["resource_name"] not in tuned:
        problems.append(SpecProblem("spec.tuning.algorithmSettings.resource_name",
                                    f"{settings['resource_name']!r} is not a tuned parameter (hyperband "
                                    f"tunes it as the resource; parameters: {', '.join(map(str, tuned))})."))
    eta = int(float(settings.get("eta", 3)))
    s_max = int(math.log(float(settings["r_l"])) / math.log(eta))
    needed = math.ceil(eta ** s_max)
    parallel = tuning.get("parallelTrials") or katib.DEFAULT_PARALLEL_TRIALS
    if parallel < needed:
        problems.append(SpecProblem("spec.tuning.parallelTrials", f"hyperband with r_l={settings['r_l']} and "
                                                                  f"eta={eta} needs at least {needed} parallel "
                                                                  f"trials, got {parallel}."))
    return problems


def _training(spec: dict) -> list[SpecProblem]:
    training = spec.get("training") or {}
    problems: list[SpecProblem] = []
    for index, item in enumerate(training.get("env") or []):
        if item.get("name") in OPERATOR_ENV:
            problems.append(SpecProblem(f"spec.training.env[{index}].name",
                                        f"{item['name']} is set by the operator from spec.mlflow."))
    problems += _resources("spec.training.resources", training.get("resources") or {})
    for key, value in (training.get("nodeSelector") or {}).items():
        if not _label_key(key):
            problems.append(SpecProblem(f"spec.training.nodeSelector[{key}]", "is not a valid label key."))
        if not _LABEL_VALUE.match(value):
            problems.append(SpecProblem(f"spec.training.nodeSelector[{key}]", f"{value!r} is not a valid label value."))
    return problems


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(_LABEL_NAME.match(name)) and len(name) <= 63 and (
        not prefix or (len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix))))


# A Kubernetes resource quantity: a signed decimal number, then a binary suffix (Ki..Ei), a decimal
# exponent (e3, E-2) or a decimal SI suffix (n..E). An exponent is tried before the suffix E: "1E3"
# is a thousand, "1E" an exa.
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:[eE]([+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?")
_QUANTITY_SCALE = {
    None: decimal.Decimal(1),
    **{suffix: decimal.Decimal(1024) ** power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
    **{suffix: decimal.Decimal(10) ** power for suffix, power in
       (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9), ("T", 12), ("P", 15), ("E", 18))},
}


def parse_quantity(quantity: str) -> decimal.Decimal:
    """The value of a Kubernetes quantity ("500m", "1.5Gi", "2e3"); ValueError when it is not one.
    Our own rather than the Kubernetes client's: that one lives in a package whose import costs
    the operator tens of MiB, and this is all it would be used for."""
    match = _QUANTITY.fullmatch(quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, exponent, suffix = match.groups()
    if exponent is not None:
        return decimal.Decimal(number).scaleb(int(exponent))
    return decimal.Decimal(number) * _QUANTITY_SCALE[suffix]


def _resources(field: str, resources: dict) -> list[SpecProblem]:
    problems = []
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for name in sorted(set(requests) & set(limits)):
        try:
            request, limit = parse_quantity(str(requests[name])), parse_quantity(str(limits[name]))
        except ValueError:
            continue  # the CRD's pattern checks quantities
        if request > limit:
            problems.append(SpecProblem(f"{field}.requests.{name}", f"{requests[name]} is more than the limit "
                                                                   f"{limits[name]}."))
    return problems


def _serving(spec: dict, config: OperatorConfig) -> list[SpecProblem]:
    serving = spec.get("serving") or {}
    problems = _resources("spec.serving.resources", serving.get("resources") or {})
    canary = serving.get("canary")
    if canary is None:
        return problems
    mode = serving.get("deploymentMode") or config.deployment_mode
    if mode == "Standard" and not serving.get("gateway") and not config.gateway():
        problems.append(SpecProblem("spec.serving.gateway", "Standard mode canaries need a Gateway: set it or the "
                                                            "operator's TRAINDEPLOY_GATEWAY."))
    prometheus = (canary.get("analysis") or {}).get("prometheus")
    if prometheus:
        if not prometheus.get("url") and not config.prometheus_url:
            problems.append(SpecProblem("spec.serving.canary.analysis.prometheus.url",
                                        "not set, and the operator has no default Prometheus URL."))
        for index, query in enumerate(prometheus.get("queries") or []):
            unknown = _template_names(query.get("query", "")) - set(PROMETHEUS_VARIABLES)
            if unknown:
                problems.append(SpecProblem(f"spec.serving.canary.analysis.prometheus.queries[{index}].query",
                                            f"uses unknown variables {', '.join(sorted(unknown))} (known: "
                                            f"{', '.join(PROMETHEUS_VARIABLES)})."))
            if "min" in query and "max" in query and float(query["min"]) > float(query["max"]):
                problems.append(SpecProblem(f"spec.serving.canary.analysis.prometheus.queries[{index}].min",
                                            f"is above max ({query['max']})."))
    steps = canary.get("steps") or []
    if steps and any(not 0 < step <= 100 for step in steps):
        problems.append(SpecProblem("spec.serving.canary.steps", "each step must be a percentage from 1 to 100."))
    return problems


def _template_names(query: str) -> set[str]:
    names = set()
    for match in string.Template.pattern.finditer(query):
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def _retrain(spec: dict) -> list[SpecProblem]:
    schedule = (spec.get("retrain") or {}).get("schedule")
    if not schedule:
        return []
    if not croniter.is_valid(schedule):
        return [SpecProblem("spec.retrain.schedule", f"{schedule!r} is not a valid cron expression.")]
    try:  # valid fields can still name a time that never comes (February 31st)
        croniter(schedule, _CRON_PROBE).get_next(dt.datetime)
    except CroniterBadDateError:
        return [SpecProblem("spec.retrain.schedule", f"{schedule!r} never fires.")]
    return []

