"""The operator process never imports the `kubernetes` client package: importing it loads every
generated API model (25-40 MiB of memory), and the operator speaks to the apiserver with its own
small client (`traindeploy.apiserver`). Other processes (`traindeploy dev`, the kubectl plugin)
may use it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import traindeploy

PACKAGE = Path(traindeploy.__file__).parent
# Separate processes, not the operator's: they may use the client package.
OTHER_PROCESSES = ("dev", "kubectl_plugin.py")

IMPORTS_WITHOUT_THE_CLIENT = """
import sys
sys.modules["kubernetes"] = None  # as in the operator image, where it is not installed
import traindeploy.handlers, traindeploy.runner, traindeploy.kube, traindeploy.informer, traindeploy.leader
import traindeploy.validation
# `traindeploy run` builds the whole command line first, `dev` included.
from traindeploy import cli
cli.build_parser().parse_args(["run", "--namespace", "ns"])
# The blocked name itself stays in sys.modules, as None: only modules actually loaded count.
loaded = sorted(name for name, module in sys.modules.items()
                if module is not None and (name == "kubernetes" or name.startswith("kubernetes.")))
assert not loaded, loaded
"""


def test_the_operators_modules_import_without_the_client_package():
    done = subprocess.run([sys.executable, "-c", IMPORTS_WITHOUT_THE_CLIENT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def _imports_kubernetes(source: Path) -> list[int]:
    """Lines that import the client package, at module level or inside a function."""
    lines = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(name == "kubernetes" or name.startswith("kubernetes.") for name in names):
            lines.append(node.lineno)
    return lines


def test_no_module_the_operator_runs_imports_the_client_package_even_when_called():
    """An import inside a function escapes the test above until the function runs."""
    found = {}
    for source in sorted(PACKAGE.rglob("*.py")):
        relative = source.relative_to(PACKAGE)
        if relative.parts[0] in OTHER_PROCESSES:
            continue
        if lines := _imports_kubernetes(source):
            found[str(relative)] = lines
    assert found == {}


DEV_WITHOUT_THE_CLIENT = """
import sys
sys.modules["kubernetes"] = None
from traindeploy.cli import main
sys.exit(main(["dev", "examples/traindeploys/minimal.yaml"]))
"""


def test_traindeploy_dev_without_its_extra_names_it():
    done = subprocess.run([sys.executable, "-c", DEV_WITHOUT_THE_CLIENT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "pip install 'traindeploy[dev]'" in done.stderr and "Traceback" not in done.stderr
