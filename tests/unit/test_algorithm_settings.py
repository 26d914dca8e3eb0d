"""Algorithm settings as Katib's suggestion services check them (ValidateAlgorithmSettings of the
image katib-config gives each algorithm): a spec they would refuse, and the user would only see as
"Suggestion has failed", is an InvalidSpec naming the field; one they accept passes."""

from __future__ import annotations

import pytest

from traindeploy import validation
from traindeploy.config import OperatorConfig
from unit.fakes import minimal_spec

PARAMETERS = [{"name": "lr", "type": "double", "min": 0.001, "max": 0.1},
              {"name": "layers", "type": "int", "min": 2, "max": 8},
              {"name": "epochs", "type": "int", "min": 1, "max": 9}]


def _problems(algorithm: str, settings: dict, **tuning) -> dict[str, str]:
    spec = minimal_spec(tuning={"algorithm": algorithm, "algorithmSettings": settings,
                                "objective": {"metricName": "accuracy", "direction": "maximize"},
                                "maxTrials": 12, "parameters": PARAMETERS, **tuning})
    config = OperatorConfig(mlflow_tracking_uri="http://127.0.0.1:5000")
    return {p.field: p.message for p in validation.check(spec, config)}


SETTINGS = "spec.tuning.algorithmSettings"


@pytest.mark.parametrize(("reason", "algorithm", "settings", "tuning", "field"), [
    # hyperopt serves tpe: optuna's names are unknown to it.
    ("optuna's n_startup_trials", "tpe", {"n_startup_trials": "5"}, {}, f"{SETTINGS}.n_startup_trials"),
    ("optuna's n_ei_candidates", "tpe", {"n_ei_candidates": "5"}, {}, f"{SETTINGS}.n_ei_candidates"),
    ("gamma outside (0, 1)", "tpe", {"gamma": "1"}, {}, f"{SETTINGS}.gamma"),
    ("no EI candidates", "tpe", {"n_EI_candidates": "0"}, {}, f"{SETTINGS}.n_EI_candidates"),
    ("prior weight of 0", "tpe", {"prior_weight": "0"}, {}, f"{SETTINGS}.prior_weight"),
    ("a negative seed for hyperopt", "random", {"random_state": "-1"}, {}, f"{SETTINGS}.random_state"),
    ("a negative seed for optuna", "grid", {"random_state": "-1"}, {"maxTrials": 1},
     f"{SETTINGS}.random_state"),
    ("a negative seed for skopt", "bayesianoptimization", {"random_state": "-1"}, {}, f"{SETTINGS}.random_state"),
    ("negative initial points", "bayesianoptimization", {"n_initial_points": "-3"}, {},
     f"{SETTINGS}.n_initial_points"),
    ("hyperband's resource is not tuned", "hyperband", {"r_l": "3", "resource_name": "steps"},
     {"parallelTrials": 3}, f"{SETTINGS}.resource_name"),
    ("hyperband's first bracket needs eta ** s_max parallel trials", "hyperband",
     {"r_l": "9", "eta": "3", "resource_name": "epochs"}, {"parallelTrials": 8}, "spec.tuning.parallelTrials"),
    ("hyperband without parallelTrials runs one at a time", "hyperband",
     {"r_l": "3", "resource_name": "epochs"}, {}, "spec.tuning.parallelTrials"),
    ("hyperband's eta truncated to 1 divides by zero", "hyperband",
     {"r_l": "3", "eta": "1.5", "resource_name": "epochs"}, {"parallelTrials": 3}, f"{SETTINGS}.eta"),
    ("cmaes with one continuous parameter", "cmaes", {}, {"parameters": PARAMETERS[:1]}, "spec.tuning.parameters"),
])
def test_settings_a_suggestion_service_refuses_are_refused(reason, algorithm, settings, tuning, field):
    problems = _problems(algorithm, settings, **tuning)
    assert field in problems, (reason, problems)


@pytest.mark.parametrize(("algorithm", "settings", "tuning"), [
    ("tpe", {"gamma": "0.25", "prior_weight": "1.0", "n_EI_candidates": "24", "random_state": "0"}, {}),
    ("random", {"random_state": "7"}, {}),
    ("cmaes", {"random_state": "-7", "sigma": "0.3", "restart_strategy": "bipop"}, {}),
    ("bayesianoptimization", {"n_initial_points": "0", "random_state": "7"}, {}),
    ("hyperband", {"r_l": "9", "eta": "3", "resource_name": "epochs"}, {"parallelTrials": 9}),
    ("hyperband", {"r_l": "3", "resource_name": "epochs"}, {"parallelTrials": 3}),
])
def test_settings_the_services_accept_pass(algorithm, settings, tuning):
    assert _problems(algorithm, settings, **tuning) == {}
