"""The real MLflow server the tests use: traindeploy.dev's, from the test venv's `mlflow`.

Command line: `python -m harness.mlflow_server up`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from traindeploy.dev.mlflow_server import MlflowServer

__all__ = ["MlflowServer"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.mlflow_server",
                                     description="Start a local MLflow server and keep it up until interrupted.")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with MlflowServer(workdir=args.workdir, port=args.port) as server:
        print(f"export MLFLOW_TRACKING_URI={server.url}", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
