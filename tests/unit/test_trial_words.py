"""Katib's StdOut collector wraps the trial's primary container as `sh -c "<command> <args> ..."`,
joined with spaces and not quoted (UPSTREAM.md, errata: Katib); without a command it reads the
image's entrypoint from the registry. A spec whose trial words the shell would change, or a
PyTorchJob trial without a command, is an InvalidSpec naming the field."""

from __future__ import annotations

import pytest

from traindeploy import validation
from traindeploy.config import OperatorConfig
from unit.fakes import minimal_spec

TUNING = {"algorithm": "random", "objective": {"metricName": "accuracy", "direction": "maximize"},
          "maxTrials": 4, "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 0.1},
                                         {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]}]}


def _problems(training: dict | None = None, tuning: dict | None = None) -> dict[str, str]:
    spec = minimal_spec(tuning=tuning or TUNING)
    spec["training"].update(training or {})
    spec["training"] = {k: v for k, v in spec["training"].items() if v is not None}
    config = OperatorConfig(mlflow_tracking_uri="http://127.0.0.1:5000")
    return {p.field: p.message for p in validation.check(spec, config)}


@pytest.mark.parametrize(("reason", "training", "tuning", "field"), [
    ("an arg with a space would split in two", {"args": ["--note=two words"]}, None, "spec.training.args[0]"),
    ("a quote would be eaten by the shell", {"command": ["python", "-c", "print('x')"]}, None,
     "spec.training.command[2]"),
    ("a fixed hyperparameter value with $ would expand", {"hyperparameters": {"path": "$HOME/x"}}, None,
     "spec.training.hyperparameters.path"),
    ("a categorical value with a space", None,
     {**TUNING, "parameters": [{"name": "act", "type": "categorical", "values": ["relu", "leaky relu"]}]},
     "spec.tuning.parameters[0].values"),
    ("no command: Katib would read the entrypoint from the registry", {"command": None}, None,
     "spec.training.command"),
])
def test_trial_words_the_shell_would_change_are_refused(reason, training, tuning, field):
    problems = _problems(training, tuning)
    assert field in problems, reason
    assert "Katib" in problems[field]


def test_plain_words_pass():
    assert _problems({"args": ["--epochs=3", "--data=s3://bucket/train.csv", "--lr-min=1e-4"],
                      "hyperparameters": {"batch": "64"}}) == {}


def test_without_tuning_nothing_is_refused():
    spec = minimal_spec()
    spec["training"].update({"args": ["--note=two words"]})
    spec["training"].pop("command")
    config = OperatorConfig(mlflow_tracking_uri="http://127.0.0.1:5000")
    assert validation.check(spec, config) == []


def test_an_env_placeholder_katib_has_no_trial_parameter_for_is_refused():
    """Katib's webhook refuses `${trialParameters.<name>}` in the trial template unless <name> is
    declared; the builder declares the tuned parameters, so those may appear in env values."""
    problems = _problems({"env": [{"name": "SEED", "value": "${trialParameters.seed}"},
                                  {"name": "LR", "value": "${trialParameters.lr}"}]})
    assert list(problems) == ["spec.training.env[0].value"]
    assert "Katib" in problems["spec.training.env[0].value"]
