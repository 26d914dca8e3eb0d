"""Command line entry point: `python -m traindeploy` or `traindeploy`.

Every option of `run` can also come from the environment, so that a container (the Helm chart's
Deployment) configures the operator the same way it configures everything else. A flag on the
command line wins over its variable.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping

from traindeploy import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

ENV_LOG_LEVEL = "TRAINDEPLOY_LOG_LEVEL"
ENV_LOG_FORMAT = "TRAINDEPLOY_LOG_FORMAT"
ENV_WATCH_NAMESPACES = "TRAINDEPLOY_WATCH_NAMESPACES"

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"

_ENVIRONMENT_HELP = f"""\
environment:
  {ENV_LOG_LEVEL}         default for --log-level
  {ENV_LOG_FORMAT}        default for --log-format
  {ENV_WATCH_NAMESPACES}  comma-separated namespaces, default for --namespace
  TRAINDEPLOY_MLFLOW_TRACKING_URI, TRAINDEPLOY_KFP_ENDPOINT, ... operator settings
                                (see traindeploy/config.py)
"""


def _one_of(choices: tuple[str, ...], what: str, variable: str):
    """An argparse type that accepts any letter case, for flags and environment values alike
    (argparse passes a string default through the type too)."""

    def parse(value: str) -> str:
        normalised = value.strip().lower()
        if normalised not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {value!r} from the flag or ${variable} (choose from {', '.join(choices)})")
        return normalised

    parse.__name__ = what  # argparse names the type in its error messages
    return parse


# A namespace's name: a DNS-1123 label.
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def namespaces_from_env(environ: Mapping[str, str]) -> list[str]:
    """`a, b,,c` -> [a, b, c]; unset or blank means the whole cluster."""
    raw = environ.get(ENV_WATCH_NAMESPACES, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


# The `dev` extra's packages that `traindeploy dev` imports (pyproject.toml).
DEV_EXTRA = ("kubernetes", "optuna", "cmaes")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="traindeploy",
        description="TrainDeploy operator: reconciles TrainDeploy resources into pipeline runs, "
        "tuning experiments, training jobs, MLflow model versions and KServe services.",
    )
    parser.add_argument("--version", action="version", version=f"traindeploy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the operator against the current kubeconfig or in-cluster",
        description="Run the operator: in-cluster with its ServiceAccount, or with $KUBECONFIG.",
        epilog=_ENVIRONMENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--namespace", "-n", action="append", default=None, metavar="NAMESPACE",
                     help=f"watch only this namespace (repeatable; default: ${ENV_WATCH_NAMESPACES}, "
                     "else the whole cluster)")
    run.add_argument("--liveness", default=DEFAULT_LIVENESS, metavar="URL",
                     help="liveness endpoint served by the operator (default: %(default)s)")
    run.add_argument("--log-level", type=_one_of(LOG_LEVELS, "log level", ENV_LOG_LEVEL),
                     default=env.get(ENV_LOG_LEVEL) or "info", metavar="{" + ",".join(LOG_LEVELS) + "}",
                     help=f"least severe level logged (default: ${ENV_LOG_LEVEL}, else info)")
    run.add_argument("--log-format", type=_one_of(LOG_FORMATS, "log format", ENV_LOG_FORMAT),
                     default=env.get(ENV_LOG_FORMAT) or "text", metavar="{" + ",".join(LOG_FORMATS) + "}",
                     help="text for people; json for log collectors: one object per line with "
                     f"time, level, logger and message (default: ${ENV_LOG_FORMAT}, else text)")
    # Kept for people and scripts used to it (the end-to-end tests among them).
    run.add_argument("--verbose", "-v", action="store_true", help="same as --log-level=debug")

    # The arguments only: the command itself needs the `dev` extra, which the operator's image lacks.
    from traindeploy.dev import arguments as dev_arguments

    dev_arguments.build_parser(commands.add_parser(
        "dev", help="the whole lifecycle for real on this machine, no cluster needed",
        description=(dev_arguments.__doc__ or "").split("\n\n", 1)[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "run":
        from traindeploy.runner import run_operator

        namespaces = args.namespace if args.namespace else namespaces_from_env(env)
        for name in namespaces:
            if not NAMESPACE_NAME.fullmatch(name):
                # kopf would take a pattern, but the informers of the children list exact names.
                parser.error(f"--namespace {name!r}: not a namespace name (patterns are not supported)")
        return run_operator(namespaces=namespaces, liveness=args.liveness,
                            log_level="debug" if args.verbose else args.log_level,
                            log_format=args.log_format)
    if args.command == "dev":
        try:
            from traindeploy.dev import command as dev_command
        except ImportError as missing:
            if missing.name and missing.name.split(".")[0] in DEV_EXTRA:
                print(f"traindeploy dev needs {missing.name.split('.')[0]}: pip install 'traindeploy[dev]'",
                      file=sys.stderr)
                return 1
            raise
        return dev_command.run(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
