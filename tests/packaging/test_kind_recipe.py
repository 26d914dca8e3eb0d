"""The kind recipe (scripts/kind-e2e.sh) needs Docker, which this machine lacks, so it is not run
here: what can be checked is. The script passes shellcheck and `bash -n`; the CI workflow that runs
it is well-formed and calls the make target; every manifest of ours it applies is accepted by the
real apiserver (a server-side dry run) and the chart renders with its values."""

from __future__ import annotations

import re
import subprocess

import yaml

from harness import debian
from harness.paths import REPO_ROOT
from packaging_helm import Helm, one

SCRIPT = REPO_ROOT / "scripts" / "kind-e2e.sh"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "kind-e2e.yaml"
KIND = REPO_ROOT / "deploy" / "kind"


def test_the_script_passes_shellcheck_and_bash_parses_it():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    result = subprocess.run([str(debian.tool("shellcheck")), "--severity=style", str(SCRIPT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_workflow_runs_the_recipe_through_make():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get(True) or workflow.get("on")  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] and job["timeout-minutes"] <= 90
    runs = [step.get("run", "") for step in job["steps"]]
    assert "make kind-e2e" in runs
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^kind-e2e:\n\tbash scripts/kind-e2e.sh$", makefile, re.M)


def test_every_file_the_script_applies_exists():
    paths = re.findall(r'"\$REPO/([^"]+)"', SCRIPT.read_text())
    assert paths and all((REPO_ROOT / path).exists() for path in paths), paths


def test_our_kind_manifests_are_accepted_by_the_apiserver(control_plane):
    for path in ("mlflow.yaml", "minimal-kind.yaml"):
        documents = [d for d in yaml.safe_load_all((KIND / path).read_text()) if d]
        namespaces = [d for d in documents if d["kind"] == "Namespace"]
        if namespaces:  # a dry run cannot create what the rest lives in
            control_plane.kubectl_run("apply", "-f", "-", input=yaml.safe_dump_all(namespaces))
        result = control_plane.kubectl_run("apply", "--server-side", "--dry-run=server", "-f", str(KIND / path),
                                           check=False)
        assert result.returncode == 0, result.stderr


def test_the_chart_renders_with_the_recipes_values(kube_tools, tmp_path):
    rendered = Helm(kube_tools, tmp_path).render(yaml.safe_load((KIND / "operator-values.yaml").read_text()))
    deployment = one(rendered, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "traindeploy-operator:kind" and container["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION"] == "pvc://mlflow-artifacts/artifacts"


def test_the_readme_says_the_recipe_was_not_run_here():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make kind-e2e" in readme and "not run here" in readme

