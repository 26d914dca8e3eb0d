"""The tests' control plane: traindeploy.dev's ControlPlane with the binaries the harness built
(tests/controlplane, cached by go.sum hash) and the kubectl it downloaded.

    with ControlPlane() as cp:
        cp.kubeconfig          # admin kubeconfig (bearer token, verified TLS)
        cp.install_all_crds()  # our CRDs and the upstream child CRDs

Command line: `python -m harness.controlplane up` starts one and prints its KUBECONFIG.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from harness import tools
from harness.paths import OUR_CRDS, upstream_crds_dir
from traindeploy.dev import controlplane
from traindeploy.dev.controlplane import KCM_CONTROLLERS


class ControlPlane(controlplane.ControlPlane):
    def __init__(self, workdir: Path | None = None, bin_dir: Path | None = None,
                 kubectl: Path | None = None, *, scheduler: bool = False,
                 controllers: str = KCM_CONTROLLERS) -> None:
        super().__init__(workdir, bin_dir or tools.controlplane_bin_dir(),
                         kubectl or tools.kube_tools_dir() / "kubectl",
                         scheduler=scheduler, controllers=controllers)

    def apiserver(self, connections: int = 4):
        """The operator's own apiserver client (`traindeploy.apiserver`) on this control plane's
        admin kubeconfig, whatever $KUBECONFIG names (the upstream tier runs a second cluster)."""
        from unittest import mock

        from traindeploy.apiserver import ApiServer

        with mock.patch.dict("os.environ", {"KUBECONFIG": str(self.kubeconfig)}):
            return ApiServer.from_environment(connections)

    def install_all_crds(self) -> list[str]:
        return self.install_crds(OUR_CRDS, upstream_crds_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.controlplane",
                                     description="Start a local control plane and keep it up until interrupted.")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workdir", type=Path, help="keep state here instead of a temporary directory")
    parser.add_argument("--no-crds", action="store_true", help="do not install our and upstream CRDs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with ControlPlane(workdir=args.workdir) as cp:
        if not args.no_crds:
            print(f"installed {len(cp.install_all_crds())} CRDs", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
