"""Command line entry point: `python -m traindeploy` or `traindeploy`."""

from __future__ import annotations

import argparse
import sys

from traindeploy import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="traindeploy",
        description="TrainDeploy operator: reconciles TrainDeploy resources into pipeline runs, "
        "tuning experiments, training jobs, MLflow model versions and KServe services.",
    )
    parser.add_argument("--version", action="version", version=f"traindeploy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the operator against the current kubeconfig or in-cluster")
    run.add_argument("--namespace", "-n", action="append", default=[],
                     help="watch only this namespace (repeatable); default: the whole cluster")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                     help="liveness endpoint URL served by the operator (default: %(default)s)")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "run":
        from traindeploy.runner import run_operator

        return run_operator(namespaces=args.namespace, liveness=args.liveness, verbose=args.verbose)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
