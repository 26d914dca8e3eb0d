"""The operator image's recipe, checked without a Docker engine: the Dockerfile's stages and
instructions, the build context, and the runtime dependencies the wheel pulls in."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT
from packaging_dockerfile import context_files, dockerignore_patterns, excluded, stages

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# What the operator needs at run time, and why: nothing more goes into the image. It talks to
# MLflow and KFP over plain REST (traindeploy.mlflow_rest, traindeploy.kfp), not their clients.
RUNTIME_DEPENDENCIES = {
    "kopf": "the operator framework: watches, finalizers, Events",
    "pyyaml": "compiled KFP pipeline packages are YAML",
    "requests": "MLflow and KFP REST clients",
    "croniter": "spec.retrain.schedule cron expressions (traindeploy.triggers)",
    "prometheus-client": "the /metrics endpoint (traindeploy.metrics)",
    "aiohttp": "kopf's apiserver session, with a bounded pool (traindeploy.handlers)",
}

# Imported by the operator but installed by a declared dependency (requests requires urllib3, on
# which traindeploy.apiserver speaks to the apiserver).
TRANSITIVE_IMPORTS = {"urllib3": "requests"}
IMPORT_NAMES = {"pyyaml": "yaml", "prometheus-client": "prometheus_client"}
# Imported from an extra, by the modules named only, never by the operator itself: `traindeploy
# dev` (the `dev` extra) and `kubectl traindeploy` (the `kubectl` extra). kopf imports the
# kubernetes client whenever it is installed, so the image must not have it.
EXTRA_IMPORTS = {"optuna": ("operator/traindeploy/dev/",),
                 "kubernetes": ("operator/traindeploy/dev/", "operator/traindeploy/kubectl_plugin.py")}
# Scripts that other interpreters run (the KFP SDK's venv, the model server's venv): their imports
# are those venvs' packages (examples/pipelines/requirements.txt, dev/requirements/mlserver.txt).
OTHER_INTERPRETERS = {"traindeploy/dev/kfp_local_run.py", "traindeploy/dev/storage_initializer.py"}


def _name(requirement: str) -> str:
    """`PyYAML<7,>=6` -> `pyyaml` (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)[1]).lower()


@pytest.fixture(scope="module")
def dockerfile():
    return stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def build_stage(dockerfile):
    return dockerfile[1][0]


@pytest.fixture(scope="module")
def final_stage(dockerfile):
    return dockerfile[1][-1]


def test_build_command_is_documented_at_the_top():
    head = "\n".join(DOCKERFILE.read_text().splitlines()[:10])
    assert "docker build -t traindeploy-operator:dev ." in head


def test_multi_stage_on_one_pinned_slim_python(dockerfile):
    _, all_stages = dockerfile
    assert len(all_stages) >= 2
    assert all_stages[0].name, "the build stage is named, for COPY --from"
    final = all_stages[-1].image
    # A slim Python 3.11 pinned to a patch release (and a Debian release), never a moving tag.
    assert re.fullmatch(r"(docker\.io/(library/)?)?python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final), final
    # The virtualenv's interpreter is a link into the base image: both stages must share it.
    assert {stage.image for stage in all_stages} == {final}


def test_build_stage_builds_the_wheel_and_installs_it_into_a_venv(build_stage):
    text = build_stage.text()
    venv = re.search(r"python\S* -m venv (\S+)", text)
    assert venv, "the build stage creates a virtualenv"
    assert re.search(r"pip wheel --no-deps", text)
    assert re.search(re.escape(venv[1]) + r"/bin/pip install \S*\.whl", text), "installs the wheel it built"
    # The image installs what `pip install traindeploy` installs: no extras, no editable install.
    assert "[test]" not in text and " -e " not in text and "pytest" not in text


def test_final_stage_copies_only_the_venv_from_the_build_stage(build_stage, final_stage):
    venv = re.search(r"-m venv (\S+)", build_stage.text())[1]
    copies = final_stage.all("COPY") + final_stage.all("ADD")
    assert copies, "the final stage receives the virtualenv"
    for copy in copies:
        flags, words = copy.flags_and_words()
        assert copy.keyword == "COPY" and flags.get("from") == build_stage.name, copy
        assert words == [venv, venv], copy


def test_final_stage_has_no_build_or_test_tools(final_stage):
    text = final_stage.text().lower()
    for forbidden in ("[test]", "pytest", "gcc", "build-essential", "apt-get", "pip install", "pip wheel",
                      "requirements", "mlflow~=", "kfp-server-api"):
        assert forbidden not in text, forbidden
    assert not final_stage.all("RUN"), "nothing is built or installed in the final stage"


def test_final_stage_runs_as_a_numeric_non_root_user(final_stage):
    users = final_stage.all("USER")
    assert users, "the final stage sets USER"
    user, _, group = users[-1].args.partition(":")
    assert user.isdigit() and int(user) != 0, "numeric, so that runAsNonRoot can check it"
    assert not group or (group.isdigit() and int(group) != 0)
    last_user = max(i.line for i in users)
    assert all(i.line < last_user for i in final_stage.instructions if i.keyword in ("RUN", "COPY")), \
        "USER comes after every instruction that writes files"


def test_entrypoint_runs_the_operator_with_its_health_endpoint(final_stage):
    (entrypoint,) = final_stage.all("ENTRYPOINT")
    command = entrypoint.exec_form()
    assert command in (["traindeploy", "run"], ["python", "-m", "traindeploy", "run"]), entrypoint.args
    assert not final_stage.all("CMD"), "arguments come from the Deployment"
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["traindeploy"] == "traindeploy.cli:main"
    from traindeploy import cli

    assert cli.DEFAULT_LIVENESS == "http://0.0.0.0:8080/healthz"
    assert [e.args for e in final_stage.all("EXPOSE")] == ["8080 8081"]  # liveness, metrics
    from traindeploy.config import OperatorConfig

    assert OperatorConfig.metrics_port == 8081


def test_final_stage_environment_and_labels(final_stage, build_stage):
    env = " ".join(i.args for i in final_stage.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    venv = re.search(r"-m venv (\S+)", build_stage.text())[1]
    assert re.search(rf"PATH={re.escape(venv)}/bin:", env)
    labels = " ".join(i.args for i in final_stage.all("LABEL"))
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_dockerignore_keeps_the_context_to_the_wheel_inputs():
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "tests/packaging/test_dockerfile.py",
                 "charts/traindeploy-operator/Chart.yaml", ".pytest_cache/README.md",
                 "operator/traindeploy.egg-info/PKG-INFO", "operator/traindeploy/__pycache__/cli.cpython-311.pyc",
                 "build/lib/traindeploy/cli.py", "Dockerfile"):
        assert excluded(path, patterns), path
    for path in ("pyproject.toml", "README.md", "operator/traindeploy/cli.py", "operator/traindeploy/py.typed",
                 "operator/traindeploy/children/pytorchjob.py"):
        assert not excluded(path, patterns), path


def test_every_copied_source_is_in_the_build_context(build_stage):
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for copy in build_stage.all("COPY"):
        flags, words = copy.flags_and_words()
        assert "from" not in flags
        for source in words[:-1]:
            path = REPO_ROOT / source
            assert path.exists(), source
            assert not excluded(source.rstrip("/"), patterns), source


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built as the image's build stage builds it: from exactly the build context."""
    context = tmp_path_factory.mktemp("context")
    for relative in context_files(REPO_ROOT, dockerignore_patterns(DOCKERIGNORE.read_text())):
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target)
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build backend comes from the test venv (installed by `make test`),
    # so this test never downloads anything.
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--no-index", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(out),
                             str(context)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("traindeploy-*.whl")
    return built


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return HeaderParser().parsestr(archive.read(name).decode())


def test_wheel_runtime_dependencies_are_exactly_the_small_set(wheel):
    requires = _metadata(wheel).get_all("Requires-Dist") or []
    runtime = {_name(r) for r in requires if "extra ==" not in r}
    unexpected, missing = sorted(runtime - set(RUNTIME_DEPENDENCIES)), sorted(set(RUNTIME_DEPENDENCIES) - runtime)
    assert not unexpected and not missing, (
        f"the image installs exactly the runtime dependencies of the wheel; unexpected: {unexpected}, "
        f"missing: {missing}. Add a new one to RUNTIME_DEPENDENCIES with its reason, or remove an "
        "unused one from pyproject.toml")
    assert "test" in (_metadata(wheel).get_all("Provides-Extra") or [])


def test_wheel_holds_the_package_and_its_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"traindeploy/cli.py", "traindeploy/runner.py", "traindeploy/handlers.py", "traindeploy/py.typed"} <= names
    assert not any(n.startswith(("tests/", "harness/")) for n in names)
    assert "traindeploy = traindeploy.cli:main" in entry_points


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level modules the operator package imports (outside the standard library), with the
    files that import each."""
    found: dict[str, list[str]] = {}
    package = REPO_ROOT / "operator" / "traindeploy"
    for path in sorted(package.rglob("*.py")):
        if str(path.relative_to(package.parent)) in OTHER_INTERPRETERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top != "traindeploy" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(str(path.relative_to(REPO_ROOT)))
    return found


def test_every_import_is_a_declared_dependency_and_every_dependency_is_imported():
    imports = _third_party_imports()
    declared = {IMPORT_NAMES.get(name, name.replace("-", "_")): name for name in RUNTIME_DEPENDENCIES}
    undeclared = {m: where for m, where in imports.items()
                  if m not in declared and m not in TRANSITIVE_IMPORTS
                  and not (m in EXTRA_IMPORTS and all(w.startswith(EXTRA_IMPORTS[m]) for w in where))}
    assert not undeclared, f"imported but not a runtime dependency: {undeclared}"
    unused = sorted(name for module, name in declared.items() if module not in imports)
    assert not unused, f"runtime dependencies no operator module imports: {unused}"
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    unused_in_pyproject = sorted(_name(r) for r in pyproject
                                 if IMPORT_NAMES.get(_name(r), _name(r).replace("-", "_")) not in imports)
    assert not unused_in_pyproject, f"pyproject.toml declares dependencies the operator never imports: " \
                                    f"{unused_in_pyproject}"
