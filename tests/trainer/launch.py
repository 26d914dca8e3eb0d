"""Starting examples/trainer/train.py the way a training pod would, and reading what it prints."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from harness.paths import REPO_ROOT

TRAIN_PY = REPO_ROOT / "examples" / "trainer" / "train.py"

# Katib's default StdOut filter (UPSTREAM.md §1.4), as the metrics collector applies it.
KATIB_METRIC = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")

# What a training pod does not have: anything pointing the child at this test process's MLflow,
# cluster, packages or process group. Tests add what the operator and the Training Operator inject.
_LEAKY = ("MLFLOW_", "PYTHONPATH", "KUBECONFIG", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_", "PET_")


def pod_env(**injected: str) -> dict[str, str]:
    """This machine's environment less the leaky parts, plus `injected`. One thread per process
    keeps a two-process run from fighting over two shared cores."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_LEAKY)}
    return {**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **injected}


def start(python: Path, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(python), str(TRAIN_PY), *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    """stdout and stderr of a trainer that must exit 0 within `timeout` seconds."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"train.py ran over {timeout}s\nstdout:\n{out}\nstderr:\n{err[-4000:]}") from None
    assert proc.returncode == 0, f"train.py exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err[-4000:]}"
    return out, err


def katib_metrics(stdout: str) -> list[dict[str, float]]:
    """One dict per non-empty stdout line: every name=value pair Katib's collector would read."""
    samples = []
    for line in stdout.splitlines():
        if line.strip():
            samples.append({match[0]: float(match[1]) for match in KATIB_METRIC.findall(line)})
    return samples
