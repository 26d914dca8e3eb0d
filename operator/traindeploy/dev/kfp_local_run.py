"""Run one compiled KFP pipeline with the SDK's local runner; executed by the KFP SDK's python.

`KfpEndpoint` (kfp_endpoint.py) starts this file as a script with the interpreter of the venv that
holds the KFP SDK, never imports it: the SDK's pins clash with the operator's venv, so only the
standard library and `kfp` are used here, and `kfp` only inside `main`.

    python kfp_local_run.py --package pipeline.yaml --parameters parameters.json \
        --pipeline-root outputs --workspace workspace --use-venv false --report-fd 3

What the endpoint learns comes as JSON lines on the file descriptor `--report-fd` (the pipeline's
own output, and the components', is this process's stdout, which the endpoint sends to the run's
log file):

    {"state": "RUNNING"}                                       the SDK is loaded, the pipeline starts
    {"task": "make-dataset", "state": "RUNNING"}               a task starts (then SUCCEEDED / FAILED)
    {"state": "SUCCEEDED", "outputs": {...}}                   every task succeeded
    {"state": "FAILED", "error": "..."}                        a task or the pipeline failed

A process that ends without a final line (killed, or broken before it could report) is a failure
the endpoint words itself.
"""

import argparse
import io
import json
import os
import re
import sys
import threading
import traceback
from collections import deque

_TAIL_LINES = 400
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Tee(io.TextIOBase):
    """stdout that also keeps its last lines, to word a failure from the task's own traceback."""

    def __init__(self, stream):
        self._stream = stream
        self._partial = ""
        self.lines = deque(maxlen=_TAIL_LINES)

    def write(self, text):
        self._stream.write(text)
        self._stream.flush()
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(_ANSI.sub("", line) for line in done)
        return len(text)

    def flush(self):
        self._stream.flush()


def last_exception(lines):
    """The final line of the last Python traceback in `lines` ("ValueError: ..."), or ''.

    A traceback's exception line is the first line after its header that has the header's own
    indentation (the local runner indents a task's output by four spaces); a chained exception
    ("During handling of ...") starts a new traceback, so the last one wins."""
    lines = list(lines)
    for start in range(len(lines) - 1, -1, -1):
        header = lines[start]
        if header.strip() != "Traceback (most recent call last):":
            continue
        indent = len(header) - len(header.lstrip())
        for line in lines[start + 1:]:
            if line.strip() and len(line) - len(line.lstrip()) == indent:
                return line.strip()
        return ""
    return ""


def _jsonable(value):
    """Pipeline outputs: parameters as they are, artifacts as their name, uri and metadata."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "uri"):
        return {"name": getattr(value, "name", ""), "uri": value.uri,
                "metadata": _jsonable(dict(getattr(value, "metadata", {}) or {}))}
    return repr(value)


def follow_tasks(send):
    """Report each task's start and end. kfp.local has no hook for this, so its one function that
    runs a task of a DAG (both orchestrators call it, the parallel one from threads) is wrapped;
    an SDK without it runs the pipeline just the same, without task reports."""
    try:
        from kfp.local import status
        from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils
    except ImportError:
        return
    original = OrchestratorUtils.__dict__.get("execute_single_task")
    if not isinstance(original, classmethod):
        return
    run_task = original.__func__

    def execute_single_task(cls, *args, **kwargs):
        name = kwargs.get("task_name", args[0] if args else "")
        send(task=name, state="RUNNING")
        try:
            outputs, task_status = run_task(cls, *args, **kwargs)
        except BaseException:
            send(task=name, state="FAILED")
            raise
        send(task=name, state="SUCCEEDED" if task_status == status.Status.SUCCESS else "FAILED")
        return outputs, task_status

    OrchestratorUtils.execute_single_task = classmethod(execute_single_task)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="compiled pipeline YAML (one or two documents)")
    parser.add_argument("--parameters", required=True, help="JSON object of pipeline parameters")
    parser.add_argument("--pipeline-root", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--use-venv", choices=("true", "false"), default="false")
    parser.add_argument("--report-fd", type=int, required=True)
    args = parser.parse_args(argv)

    report = os.fdopen(args.report_fd, "w", buffering=1)
    report_lock = threading.Lock()

    def send(**message):
        with report_lock:
            report.write(json.dumps(message) + "\n")
            report.flush()

    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        from kfp import local
        from kfp.components import load_component_from_file
        try:  # plain log files: the local runner colours names and states unconditionally
            from kfp.local import logging_utils
            for name in ("CYAN", "GREEN", "RED", "MAGENTA", "RESET"):
                if hasattr(logging_utils.Color, name):
                    setattr(logging_utils.Color, name, "")
        except ImportError:
            pass
        follow_tasks(send)

        with open(args.parameters) as handle:
            parameters = json.load(handle)
        os.makedirs(args.workspace, exist_ok=True)
        local.init(runner=local.SubprocessRunner(use_venv=args.use_venv == "true"),
                   pipeline_root=args.pipeline_root, workspace_root=args.workspace,
                   raise_on_error=True)
        pipeline = load_component_from_file(args.package)
        send(state="RUNNING")
        print(f"Running pipeline {pipeline.name!r} with parameters {json.dumps(parameters)}", flush=True)
        task = pipeline(**parameters)
    except BaseException as exc:  # noqa: BLE001 - every way out is reported, then re-raised if fatal
        before = list(tee.lines)
        traceback.print_exc(file=tee)
        # kfp.local's RuntimeErrors say what failed in words; other exceptions need their type.
        text = str(exc) if type(exc) is RuntimeError else f"{type(exc).__name__}: {exc}"
        summary = _ANSI.sub("", text).strip()
        cause = last_exception(before) if isinstance(exc, RuntimeError) else ""
        # A failed task: kfp.local's own RuntimeError names the task; the task's traceback says why.
        error = f"{summary} {cause}".strip() if cause and cause != summary else summary
        send(state="FAILED", error=error)
        if not isinstance(exc, Exception):
            raise
        return 1
    outputs = _jsonable(dict(getattr(task, "outputs", None) or {}))
    send(state="SUCCEEDED", outputs=outputs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
