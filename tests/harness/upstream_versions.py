"""Tagged upstream releases whose data files the version-difference tests read: each supported
version of KServe and Kubeflow Trainer where the API the operator writes differs.

The Go module proxy serves every tag as a module, CRDs and sources included, so these come from
the Go module cache like the upstream tier's (none is copied into the project). `download()` runs
before pytest (`python -m harness.tools --test-tiers`); `release_dir()` in a test only reads the
cache (GOPROXY=off).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

KSERVE = "github.com/kserve/kserve"
TRAINER = "github.com/kubeflow/trainer/v2"

# v0.15.0 reports no status.deploymentMode, v0.15.2 reports it in the legacy names, v0.16.0
# brings Knative/Standard; v0.20.0 is the newest. The proxy serves no v0.15.1.
# Trainer v2.0/v2.1 have no runtimePatches or activeDeadlineSeconds; v2.2 and v2.3 have both.
RELEASES: dict[str, tuple[str, ...]] = {
    KSERVE: ("v0.15.0", "v0.15.2", "v0.16.0", "v0.20.0"),
    TRAINER: ("v2.0.0", "v2.1.0", "v2.2.0", "v2.3.0"),
}


def _download(module: str, version: str, offline: bool) -> Path:
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    if offline:
        env["GOPROXY"] = "off"
    # Outside any module: `go mod download module@version` then needs no go.mod.
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=scratch, env=env,
                                capture_output=True, text=True, timeout=600)
    found = json.loads(result.stdout or "{}")
    directory = found.get("Dir")
    if result.returncode != 0 or not directory or not Path(directory).is_dir():
        raise RuntimeError(f"{module}@{version} is not in the Go module cache"
                           f"{'; run `python -m harness.tools --test-tiers` first' if offline else ''}: "
                           f"{found.get('Error') or result.stderr.strip()}")
    return Path(directory)


def release_dir(module: str, version: str) -> Path:
    """The module cache's copy of `module` at `version`; never downloads."""
    return _download(module, version, offline=True)


def download() -> list[Path]:
    """Fetches every release in RELEASES into the module cache (a no-op when they are there)."""
    return [_download(module, version, offline=False) for module, versions in RELEASES.items()
            for version in versions]
