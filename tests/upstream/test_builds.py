"""The upstream tier's binaries: pinned releases, built from their own wrapper modules, cached."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from harness import tools
from harness.upstream import KWOK_MODULE_PATH, TRAINING_OPERATOR_MODULE_PATH
from harness.upstream_katib import KATIB_MODULE_PATH
from harness.upstream_kserve import KSERVE_MODULE_PATH
from harness.upstream_trainer import JOBSET_MODULE_PATH, TRAINER_MODULE_PATH

PINNED = {tools.KWOK: (KWOK_MODULE_PATH, "v0.8.0"),
          tools.TRAINING_OPERATOR: (TRAINING_OPERATOR_MODULE_PATH, "v1.9.2"),
          tools.KATIB: (KATIB_MODULE_PATH, "v0.19.0"),
          tools.KSERVE: (KSERVE_MODULE_PATH, "v0.20.0"),
          tools.TRAINER: (TRAINER_MODULE_PATH, "v2.3.0")}


def _required(go_mod: str, module_path: str) -> str | None:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module_path)}\s+(v\S+)", go_mod, re.MULTILINE)
    return match.group(1) if match else None


@pytest.mark.parametrize("build", list(PINNED), ids=lambda build: build.name)
def test_wrapper_requires_the_pinned_release(build):
    module_path, version = PINNED[build]
    go_mod = (build.module / "go.mod").read_text()
    line = rf"^\s*(require\s+)?{re.escape(module_path)}\s+{re.escape(version)}\s*$"
    assert re.search(line, go_mod, re.MULTILINE)
    assert tools.go_module_dir(build, module_path).name == f"{module_path.rsplit('/', 1)[1]}@{version}"


def test_jobset_is_the_release_trainer_requires():
    """JobSet runs at the version Trainer v2.3.0's own go.mod requires, not one of our choosing."""
    trainer_go_mod = (tools.go_module_dir(tools.TRAINER, TRAINER_MODULE_PATH) / "go.mod").read_text()
    ours = (tools.TRAINER.module / "go.mod").read_text()
    assert _required(ours, JOBSET_MODULE_PATH) == _required(trainer_go_mod, JOBSET_MODULE_PATH) == "v0.12.0"


@pytest.mark.parametrize("build", list(PINNED), ids=lambda build: build.name)
def test_cache_key_follows_the_wrappers_go_sum(build, tmp_path):
    module = tmp_path / build.name
    shutil.copytree(build.module, module)
    assert tools.go_build_key(build, module) == tools.go_build_key(build)
    with open(module / "go.sum", "a") as go_sum:
        go_sum.write("example.com/changed v1.0.0 h1:AAAA=\n")
    assert tools.go_build_key(build, module) != tools.go_build_key(build)


def test_binaries_are_cached_and_report_their_versions(upstream_control_plane, kwok, training_operator):
    assert kwok.bin_dir == tools.kwok_bin_dir()
    assert training_operator.bin_dir == tools.training_operator_bin_dir()
    version = subprocess.run([str(kwok.bin_dir / "kwok"), "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version.startswith("kwok version v0.8.0")
    # kube-scheduler comes from the control plane's own build, at the same Kubernetes release.
    scheduler = subprocess.run([str(upstream_control_plane.bin_dir / "kube-scheduler"), "--version"],
                               capture_output=True, text=True, check=True).stdout
    assert scheduler.strip() == f"Kubernetes {tools.kubernetes_version()}"
