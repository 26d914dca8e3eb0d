"""`traindeploy dev [MANIFEST...]`: the whole lifecycle for real on this machine.

It starts, on 127.0.0.1 only: a Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager) with the TrainDeploy CRD and the child CRDs, a real MLflow server
(SQLite, local artifacts), a local KFP endpoint, and the operator itself, unchanged
(`python -m traindeploy run`). In place of the children's controllers, local executors do the
real work: training jobs run as local processes, Katib trials run with Optuna's suggestions,
pipelines run with `kfp.local`, InferenceServices are served by MLServer behind a router that
splits traffic as Knative does. Then it applies the manifests, shows progress, and once Ready
prints the URL and a `curl` that returns a prediction. Ctrl-C stops every process it started.
"""

# Kept apart from the command, whose modules need the `dev` extra (the kubernetes client among
# them): `traindeploy run` builds its parser with this one, and the operator's image has no extra.

from __future__ import annotations

import argparse
import os
from pathlib import Path


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="traindeploy dev")
    parser.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST",
                        help="TrainDeploy manifests (and Secrets they use) to apply")
    parser.add_argument("--dev-config", type=Path, metavar="FILE",
                        help="images as local code (default: the nearest traindeploy-dev.yaml above the "
                        "first manifest)")
    parser.add_argument("--image", action="append", default=[], metavar="IMAGE=DIR[:REQUIREMENTS]",
                        help="run IMAGE's /app from DIR with REQUIREMENTS installed (repeatable)")
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--kubeconfig", type=Path, help="use this cluster instead of a local control plane "
                        "(its CRDs must be installed)")
    parser.add_argument("--control-plane-bin", type=Path, default=os.environ.get("TRAINDEPLOY_DEV_BIN"),
                        help="directory with etcd, kube-apiserver and kube-controller-manager "
                        "(default: $TRAINDEPLOY_DEV_BIN)")
    parser.add_argument("--kubectl", type=Path, default=os.environ.get("TRAINDEPLOY_DEV_KUBECTL"),
                        help="kubectl binary (default: $TRAINDEPLOY_DEV_KUBECTL)")
    parser.add_argument("--crds", type=Path, action="append", default=[],
                        help="CRD files or directories to install in the local control plane (repeatable)")
    parser.add_argument("--kfp-python", type=Path, help="python with the KFP SDK, for a local KFP endpoint")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="stop (and clean up) once every TrainDeploy is Ready; exit 1 if one fails")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to Ready before giving up")
    return parser
