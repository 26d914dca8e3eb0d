"""Cached virtualenvs for the code `traindeploy dev` runs in place of images.

A trainer image maps to local code and its requirements file (see images.py); the model server
gets a venv with MLServer, its MLflow runtime and KServe's storage initializer. Each venv sits in
the user's cache, keyed by the hash of its requirements (and of the venv it builds on) and the
interpreter's minor version, so a warm run installs nothing:

    python_for(requirements)                 # a venv with exactly these requirements
    python_for(requirements, base=other)     # one that also sees `other`'s packages

`base` is how the model server reuses the trainer's PyTorch (a few GB of CUDA wheels from PyPI)
instead of installing a second copy: a .pth file puts the base venv's site-packages after the
venv's own, so pip installs only what the base lacks (or pins differently) into the new venv.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".traindeploy-complete"
# pip may take long on a cold cache (PyTorch is GBs); it is bounded all the same.
INSTALL_TIMEOUT = 3600.0


def cache_dir() -> Path:
    """Binaries and venvs outlive a checkout: they sit in the user's cache, keyed by content."""
    root = os.environ.get("TRAINDEPLOY_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "traindeploy"


@contextlib.contextmanager
def locked(path: Path):
    """One build at a time per cache entry, across processes (parallel test runs, make run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def venv_key(requirements: Path, base: Path | None = None) -> str:
    """The requirements decide the packages; the interpreter's minor version decides the wheels."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"\0python{sys.version_info.major}.{sys.version_info.minor}".encode())
    if base is not None:
        digest.update(b"\0base\0" + str(base).encode())
    return digest.hexdigest()[:16]


def python_for(requirements: Path, name: str | None = None, base: Path | None = None) -> Path:
    """The python of a venv with `requirements` installed; builds it on a miss (one process at a
    time). `base` is the python of a venv whose packages this one also sees."""
    # examples/trainer/requirements.txt is the "trainer" venv (the name the test tiers give it).
    name = name or (requirements.parent.name if requirements.stem == "requirements" else requirements.stem)
    target = cache_dir() / "venvs" / f"{name}-{venv_key(requirements, base)}"
    python = target / "bin" / "python"
    if (target / MARKER).is_file():
        return python
    with locked(target.with_suffix(".lock")):
        if (target / MARKER).is_file():
            return python
        # A venv is not relocatable (scripts carry its absolute path), so it is built in place; a
        # directory without the marker is a build that was interrupted and starts again.
        if target.exists():
            shutil.rmtree(target)
        started = time.monotonic()
        log.warning("installing %s into %s; a cold install can take minutes", requirements, target)
        subprocess.run([base_python(), "-m", "venv", str(target)], check=True, timeout=300)
        if base is not None:
            (site_packages(python) / "zz-traindeploy-base.pth").write_text(f"{site_packages(base)}\n")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True, timeout=INSTALL_TIMEOUT)
        subprocess.run([*pip, "install", "--quiet", "-r", str(requirements)], check=True,
                       timeout=INSTALL_TIMEOUT)
        (target / MARKER).write_text(requirements.read_text())
        log.warning("%s ready in %.0fs (%.2f GB)", target.name, time.monotonic() - started,
                    directory_size(target) / 1e9)
    return python


def site_packages(python: Path) -> Path:
    """The site-packages of the venv `python` belongs to."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return python.parents[1] / "lib" / version / "site-packages"


def directory_size(path: Path) -> int:
    """Bytes used by the regular files under `path` (links not followed)."""
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())


def base_python() -> str:
    """The interpreter that made this venv (or this interpreter), so a new venv does not nest."""
    return getattr(sys, "_base_executable", None) or sys.executable
