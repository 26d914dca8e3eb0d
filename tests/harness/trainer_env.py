"""Cached virtualenvs for the tiers that need heavy packages the operator never imports.

PyTorch from PyPI is the CUDA build (several GB with the NVIDIA runtime wheels), and the KFP SDK
pins versions that clash with the project's own venv. So each gets a virtualenv of its own under
the harness cache, keyed by the hash of its requirements file and the interpreter's version:

    trainer_python()     # examples/trainer/requirements.txt   (torch, mlflow-skinny)
    pipelines_python()   # examples/pipelines/requirements.txt (kfp)

The first call installs (minutes for torch); later calls only check the completion marker. A
changed requirements file gets a new venv; old ones are left for the user to delete.

Command line: `python -m harness.trainer_env` builds both and prints their interpreters.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from harness.paths import REPO_ROOT
from traindeploy.dev.venvs import directory_size, python_for

log = logging.getLogger(__name__)

TRAINER_REQUIREMENTS = REPO_ROOT / "examples" / "trainer" / "requirements.txt"
PIPELINES_REQUIREMENTS = REPO_ROOT / "examples" / "pipelines" / "requirements.txt"


def venv_python(requirements: Path, name: str) -> Path:
    """The python of a venv with `requirements` installed (traindeploy.dev.venvs' cache)."""
    return python_for(requirements, name)


def trainer_python() -> Path:
    """Python with torch and the MLflow client, for running examples/trainer/train.py."""
    return venv_python(TRAINER_REQUIREMENTS, "trainer")


def pipelines_python() -> Path:
    """Python with the KFP SDK, for compiling examples/pipelines/."""
    return venv_python(PIPELINES_REQUIREMENTS, "pipelines")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for build in (trainer_python, pipelines_python):
        started = time.monotonic()
        python = build()
        print(f"{build.__name__}: {python} ({time.monotonic() - started:.1f}s, "
              f"{directory_size(python.parents[1]) / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
