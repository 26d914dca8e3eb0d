"""examples/pipelines/: the checked-in package is what its source compiles to, the operator takes
it as a TrainDeploy's `spec.pipeline.package` with the parameters the pipeline declares, and the
pipeline really prepares a data set (run by the KFP SDK's local runner)."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest

from harness.kfp_fake import KfpFake
from harness.paths import REPO_ROOT
from traindeploy.kfp import KfpClient, load_pipeline_package
from trainer.launch import pod_env

PIPELINES = REPO_ROOT / "examples" / "pipelines"
SOURCE = PIPELINES / "prep_pipeline.py"
PACKAGE = PIPELINES / "prep_pipeline.yaml"

# Runs the whole pipeline with the SDK's local runner: each component in a subprocess of the
# pipelines venv, artifacts under argv[1], the way a KFP driver and launcher would lay them out.
RUN_LOCALLY = """
import sys
from kfp import local
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[1])
sys.path.insert(0, sys.argv[2])
from prep_pipeline import prep_pipeline
prep_pipeline(rows=int(sys.argv[3]), source="synthetic")
"""


@pytest.mark.slow
def test_checked_in_package_is_what_the_source_compiles_to(pipelines_python, tmp_path):
    compiled = tmp_path / "prep_pipeline.yaml"
    result = subprocess.run([str(pipelines_python), str(SOURCE), str(compiled)], env=pod_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert compiled.read_text() == PACKAGE.read_text(), (
        "examples/pipelines/prep_pipeline.yaml is stale: recompile it with "
        "`python examples/pipelines/prep_pipeline.py` (KFP SDK from examples/pipelines/requirements.txt)")


def test_operator_takes_the_package_and_runs_it_with_its_parameters():
    spec = load_pipeline_package(PACKAGE.read_text())
    assert spec["pipelineInfo"]["name"] == "traindeploy-prep"
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: parameter["parameterType"] for name, parameter in declared.items()} == {
        "rows": "NUMBER_INTEGER", "source": "STRING"}

    parameters = {"rows": 2000, "source": "synthetic"}
    with KfpFake() as fake, KfpClient(fake.url, timeout=5.0) as kfp:
        experiment_id = kfp.ensure_experiment("traindeploy-t-churn")
        run = kfp.create_run(experiment_id, "churn-g1-prep", spec, parameters)
        stored = kfp.get_run(run["run_id"])
    assert stored["pipeline_spec"] == spec
    assert stored["runtime_config"]["parameters"] == parameters


@pytest.mark.slow
def test_the_pipeline_runs_and_prepares_the_rows_asked_for(pipelines_python, tmp_path):
    root = tmp_path / "root"
    result = subprocess.run([str(pipelines_python), "-c", RUN_LOCALLY, str(root), str(PIPELINES), "50"],
                            env=pod_env(), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (run_dir,) = root.glob("traindeploy-prep-*")
    with open(run_dir / "make-dataset" / "dataset", newline="") as data:
        header, *rows = list(csv.reader(data))
    assert header == [f"f{i}" for i in range(16)] + ["label"]
    assert len(rows) == 50 and {row[-1] for row in rows} <= {"0", "1", "2", "3"}
    checked = json.loads((run_dir / "check-dataset" / "executor_output.json").read_text())
    assert checked["parameterValues"]["Output"] == 50
