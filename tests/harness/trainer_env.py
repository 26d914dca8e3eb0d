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

import hashlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.paths import REPO_ROOT, cache_dir
from harness.tools import _locked

log = logging.getLogger(__name__)

TRAINER_REQUIREMENTS = REPO_ROOT / "examples" / "trainer" / "requirements.txt"
PIPELINES_REQUIREMENTS = REPO_ROOT / "examples" / "pipelines" / "requirements.txt"

_MARKER = ".traindeploy-complete"


def venv_key(requirements: Path) -> str:
    """The requirements decide the packages; the interpreter's minor version decides the wheels."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"\0python{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


def venv_python(requirements: Path, name: str) -> Path:
    """The python of a venv with `requirements` installed; builds it on a miss (one process at a time)."""
    target = cache_dir() / "venvs" / f"{name}-{venv_key(requirements)}"
    python = target / "bin" / "python"
    if (target / _MARKER).is_file():
        return python
    with _locked(target.with_suffix(".lock")):
        if (target / _MARKER).is_file():
            return python
        # A venv is not relocatable (scripts carry its absolute path), so it is built in place; a
        # directory without the marker is a build that was interrupted and starts again.
        if target.exists():
            shutil.rmtree(target)
        started = time.monotonic()
        log.warning("installing %s into %s; a cold install can take minutes",
                    requirements.relative_to(REPO_ROOT), target)
        subprocess.run([_base_python(), "-m", "venv", str(target)], check=True)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "install", "--quiet", "-r", str(requirements)], check=True)
        (target / _MARKER).write_text(requirements.read_text())
        log.warning("%s ready in %.0fs (%.2f GB)", target.name, time.monotonic() - started,
                    directory_size(target) / 1e9)
    return python


def trainer_python() -> Path:
    """Python with torch and the MLflow client, for running examples/trainer/train.py."""
    return venv_python(TRAINER_REQUIREMENTS, "trainer")


def pipelines_python() -> Path:
    """Python with the KFP SDK, for compiling examples/pipelines/."""
    return venv_python(PIPELINES_REQUIREMENTS, "pipelines")


def directory_size(path: Path) -> int:
    """Bytes used by the regular files under `path` (links not followed)."""
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())


def _base_python() -> str:
    """The interpreter that made this venv (or this interpreter), so the new venv does not nest."""
    return getattr(sys, "_base_executable", None) or sys.executable


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
