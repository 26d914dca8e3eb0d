"""A local Kubeflow Pipelines endpoint: the v2beta1 REST API on 127.0.0.1, runs executed by `kfp.local`.

The operator's `traindeploy.kfp.KfpClient` talks to it exactly as to a KFP API server. Creating a
run writes the inline compiled pipeline (`pipeline_spec`, and `platform_spec` when kfp-kubernetes
added one) to the run's directory and executes it with the KFP SDK's local runner
(`kfp.local.SubprocessRunner`) in a process of the venv that holds the SDK (`kfp_python`: the SDK
pins clash with the operator's venv). That process reports back on a pipe (see kfp_local_run.py),
and the run moves through the states a KFP server reports:

    PENDING   created; waiting for a slot (max_parallel_runs) or for the SDK to load
    RUNNING   the local runner is executing the pipeline's tasks
    SUCCEEDED every task succeeded
    FAILED    a task failed, or the runner could not start; `error` says why and where the log is
    CANCELING terminate asked for; the run's process group has been sent SIGTERM
    CANCELED  the run's processes are gone

Each run has a directory `<workdir>/runs/<run_id>/`: `pipeline.yaml` and `parameters.json` as run,
`log.txt` (the runner's and every task's output), `outputs/` (kfp.local's pipeline root: one folder
per task with its artifacts and executor output) and `result.json` (final state and the pipeline's
outputs). Its path is logged when the run starts and named in a failed run's error message; GET /
lists every run with its directory. `runtime_config.pipeline_root` is kept but not used: outputs
always go to the run's directory. Deleting a run forgets it and leaves its files.
`run_details.task_details` has one entry per task the runner started, with its own states.

The wire is what kfp-server-api models and the real gateway write: snake_case keys, unset and
empty fields left out, timestamps RFC 3339 at whole seconds (`finished_at` is the epoch until the
run ends), errors as google.rpc.Status with grpc-gateway's HTTP status. It is a single-user
server (`multi_user: false`): a namespace on an experiment or a list is accepted and ignored, as
the real single-user server does. Experiments and runs are kept in `<workdir>/state.json`, so an
endpoint started again on the same workdir knows its runs; a run that was still going when the
endpoint stopped is FAILED.

It binds 127.0.0.1 and asks for no credentials: whoever can reach it can run code (a pipeline is
code), so keep it on loopback.

Served: healthz; experiments list, create, get; runs list, create (inline `pipeline_spec` only),
get, terminate, archive, unarchive, delete. Anything else under /apis/v2beta1 answers 404.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import yaml

log = logging.getLogger(__name__)

API = "/apis/v2beta1"
RUNNER_SCRIPT = Path(__file__).with_name("kfp_local_run.py")

TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
DEFAULT_EXPERIMENT = "Default"
DEFAULT_SERVICE_ACCOUNT = "pipeline-runner"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200

# google.rpc.Code values used here, and grpc-gateway's HTTP status for each.
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION = 3, 5, 6, 9
UNKNOWN, UNIMPLEMENTED, INTERNAL = 2, 12, 13
_HTTP_STATUS = {INVALID_ARGUMENT: 400, NOT_FOUND: 404, ALREADY_EXISTS: 409, FAILED_PRECONDITION: 400,
                UNKNOWN: 500, UNIMPLEMENTED: 501, INTERNAL: 500}

# V2beta1PredicateOperation: kfp.Client sends the number, the proto JSON allows the name.
_OPERATIONS = {1: "EQUALS", 2: "NOT_EQUALS", 3: "GREATER_THAN", 5: "GREATER_THAN_EQUALS",
               6: "LESS_THAN", 7: "LESS_THAN_EQUALS", 8: "IN", 9: "IS_SUBSTRING"}
_VALUE_KEYS = {"string_value": "stringValue", "int_value": "intValue", "long_value": "longValue",
               "timestamp_value": "timestampValue", "string_values": "stringValues",
               "int_values": "intValues", "long_values": "longValues"}

# Request bodies: the fields of V2beta1Run / V2beta1Experiment (snake_case, or lowerCamelCase as
# protojson also accepts). Unknown fields are refused, as the real server's decoder does.
_RUN_FIELDS = {"experiment_id", "run_id", "display_name", "storage_state", "description",
               "pipeline_version_id", "pipeline_spec", "pipeline_version_reference", "runtime_config",
               "service_account", "created_at", "scheduled_at", "finished_at", "state", "error",
               "run_details", "recurring_run_id", "state_history", "plugins_input", "plugins_output"}
_EXPERIMENT_FIELDS = {"experiment_id", "display_name", "description", "created_at", "namespace",
                      "storage_state", "last_run_created_at"}
# Filter and sort keys -> the stored field.
_RUN_KEYS = {"run_id": "run_id", "id": "run_id", "display_name": "display_name", "name": "display_name",
             "created_at": "created_at", "scheduled_at": "scheduled_at", "finished_at": "finished_at",
             "description": "description", "state": "state", "status": "state",
             "storage_state": "storage_state", "experiment_id": "experiment_id"}
_EXPERIMENT_KEYS = {"experiment_id": "experiment_id", "id": "experiment_id", "display_name": "display_name",
                    "name": "display_name", "created_at": "created_at", "description": "description",
                    "last_run_created_at": "last_run_created_at", "storage_state": "storage_state"}
_TIME_FIELDS = frozenset({"created_at", "scheduled_at", "finished_at", "last_run_created_at"})


class ApiError(Exception):
    """An answer other than 200: a google.rpc.Status with the gRPC code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    def body(self) -> dict:
        # KFP packs the user-facing status into the one detail as well.
        return {"code": self.code, "message": self.message,
                "details": [{"@type": "type.googleapis.com/google.rpc.Status", "code": self.code,
                             "message": self.message}]}


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> int:
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return int(parsed.timestamp())


def _snake(data: dict, fields: set[str], what: str) -> dict:
    """A request body with protojson's two spellings folded to snake_case; unknown keys refused;
    null means unset."""
    camel = {_camel(name): name for name in fields}
    out = {}
    for key, value in data.items():
        name = key if key in fields else camel.get(key)
        if name is None:
            raise ApiError(INVALID_ARGUMENT, f'proto: (line 1:1): unknown field "{key}" in {what}')
        if value is not None:
            out[name] = value
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# --- rendering: the gateway leaves unset fields out ---------------------------------------------

# Timestamps of the messages served (kept as whole seconds); messages rendered field by field.
# Everything else (pipeline_spec, runtime_config, error) is passed through as it is.
_TIMESTAMPS = _TIME_FIELDS | {"update_time", "create_time", "start_time", "end_time"}
_MESSAGES = frozenset({"state_history", "run_details", "task_details"})


def _render(record: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key.startswith("_"):
            continue
        if key in _TIMESTAMPS:
            out[key] = rfc3339(int(value))  # always-set timestamps appear even at the epoch
        elif value in ("", None, [], {}, "RUNTIME_STATE_UNSPECIFIED") or (type(value) is int and value == 0):
            continue
        elif key in _MESSAGES:
            out[key] = [_render(v) for v in value] if isinstance(value, list) else _render(value)
        else:
            out[key] = value
    return out


# --- filters, sorting, pages --------------------------------------------------------------------

def _predicates(text: str, keys: dict[str, str]) -> list[tuple[str, str, Any]]:
    """The `filter` query parameter (a JSON V2beta1Filter) -> (operation, field, value) triples."""
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: failed to parse valid filter from {text!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("predicates", []), list):
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: failed to parse valid filter from {text!r}")
    out = []
    for item in data.get("predicates", []):
        if not isinstance(item, dict):
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: a filter predicate must be an object")
        operation = item.get("operation")
        if isinstance(operation, int) and not isinstance(operation, bool):
            operation = _OPERATIONS.get(operation)
        if not isinstance(operation, str) or operation not in _OPERATIONS.values():
            raise ApiError(INVALID_ARGUMENT, f"Invalid input error: unsupported filter operation "
                                             f"{item.get('operation')!r}")
        key = item.get("key", "")
        if key not in keys:
            raise ApiError(INVALID_ARGUMENT, f'Invalid input error: no support for filtering on '
                                             f'unrecognized field "{key}"')
        present = [snake for snake, camel in _VALUE_KEYS.items() if snake in item or camel in item]
        if len(present) != 1:
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: a filter predicate needs exactly one value")
        value = item.get(present[0], item.get(_VALUE_KEYS[present[0]]))
        if present[0].endswith("_values"):
            value = tuple((value or {}).get("values", [])) if isinstance(value, dict) else None
            if value is None or operation != "IN":
                raise ApiError(INVALID_ARGUMENT, f"Invalid input error: cannot use {operation} with a list value")
        elif operation == "IN":
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: cannot use IN operator with a scalar value")
        field = keys[key]
        try:
            if present[0] == "timestamp_value":
                value = _parse_rfc3339(str(value))
            elif present[0] in ("int_value", "long_value"):
                value = int(value)
            elif present[0] == "string_value" and field in _TIME_FIELDS:
                value = _parse_rfc3339(str(value))
        except ValueError:
            raise ApiError(INVALID_ARGUMENT, f"Invalid input error: bad value {value!r} for {key}") from None
        out.append((operation, field, value))
    return out


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value  # KFP's store compares case-insensitively


def _matches(record: dict, predicates: list[tuple[str, str, Any]]) -> bool:
    for operation, field, want in predicates:
        have = _fold(record.get(field, ""))
        if operation == "IN":
            ok = have in {_fold(v) for v in want}
        elif operation == "IS_SUBSTRING":
            ok = isinstance(have, str) and str(_fold(want)) in have
        else:
            want = _fold(want)
            if type(have) is not type(want):
                have, want = str(have), str(want)
            ok = {"EQUALS": have == want, "NOT_EQUALS": have != want, "GREATER_THAN": have > want,
                  "GREATER_THAN_EQUALS": have >= want, "LESS_THAN": have < want,
                  "LESS_THAN_EQUALS": have <= want}[operation]
        if not ok:
            return False
    return True


def _page(records: list[dict], query: dict[str, str], keys: dict[str, str], id_field: str,
          ) -> tuple[list[dict], int, str]:
    """Filter, sort and cut one page; the token is opaque and bound to the filter and sort it came
    with. (The real store pages by key; an offset is enough for one local user.)"""
    try:
        size = int(query.get("page_size") or 0)
    except ValueError:
        raise ApiError(INVALID_ARGUMENT, f"parsing field \"page_size\": {query.get('page_size')!r} is not a number") from None
    if size < 0:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: The page size should be greater than 0. Got {size}")
    size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    filter_text, sort_by = query.get("filter", ""), query.get("sort_by", "")
    offset = 0
    if query.get("page_token"):
        try:
            token = json.loads(base64.urlsafe_b64decode(query["page_token"].encode()))
            offset = int(token["offset"])
            if (filter_text or sort_by) and (token["filter"], token["sort_by"]) != (filter_text, sort_by):
                raise ApiError(INVALID_ARGUMENT, "Invalid input error: page token does not match the "
                                                 "supplied sort by and/or filtering criteria")
            filter_text, sort_by = token["filter"], token["sort_by"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(INVALID_ARGUMENT, "InvalidInputError: Invalid package token.") from None
    parts = sort_by.split()
    if len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")) or (
            parts and parts[0] not in keys):
        raise ApiError(INVALID_ARGUMENT, f'Invalid input error: Received invalid sort by format "{sort_by}"')
    field = keys[parts[0]] if parts else "created_at"
    descending = len(parts) == 2 and parts[1].lower() == "desc"
    predicates = _predicates(filter_text, keys)
    matched = [r for r in records if _matches(r, predicates)]
    matched.sort(key=lambda r: (_fold(r.get(field, "")), r[id_field]), reverse=descending)
    page = matched[offset:offset + size]
    token = ""
    if offset + size < len(matched):
        token = base64.urlsafe_b64encode(json.dumps(
            {"offset": offset + size, "filter": filter_text, "sort_by": sort_by}).encode()).decode()
    return page, len(matched), token


# --- the endpoint ---------------------------------------------------------------------------------

class KfpEndpoint:
    """The local KFP API server. `start()` binds 127.0.0.1 (port 0: any free port), `url` is then
    the endpoint for `KfpClient`; `stop()` ends every run's processes and the server.

    kfp_python: the interpreter of a venv with the KFP SDK (`kfp`), which runs the pipelines.
    workdir: where runs keep their files and the endpoint its state.
    use_venv: kfp.local's SubprocessRunner option. False (the default) runs every task with
        kfp_python, so nothing is downloaded for a pipeline whose components only need the SDK;
        a component's `packages_to_install` is then pip-installed into that venv. True makes
        kfp.local build a fresh venv per task, which needs PyPI (it also upgrades pip there).
    max_parallel_runs: runs executing at once; later ones stay PENDING until a slot is free.
    env: extra environment for the runs' processes (for example PIP_NO_INDEX=1 to stay offline).
    cancel_grace: seconds between SIGTERM and SIGKILL when a run is terminated or the endpoint stops.
    """

    def __init__(self, kfp_python: Path, workdir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 use_venv: bool = False, max_parallel_runs: int = 2,
                 env: Mapping[str, str] | None = None, cancel_grace: float = 5.0) -> None:
        if max_parallel_runs < 1:
            raise ValueError("max_parallel_runs must be at least 1")
        self.kfp_python = Path(kfp_python).absolute()  # not resolved: a venv's python is a link
        self.workdir = Path(workdir).absolute()
        self._host, self._port = host, port
        self.use_venv = use_venv
        self.max_parallel_runs = max_parallel_runs
        self._env = dict(env or {})
        self.cancel_grace = cancel_grace
        self._lock = threading.RLock()
        self._slots = threading.Condition(self._lock)
        self._executing = 0
        self._experiments: dict[str, dict] = {}
        self._runs: dict[str, dict] = {}
        self._processes: dict[str, subprocess.Popen] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None

    # -- lifecycle --

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("KfpEndpoint is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def run_dir(self, run_id: str) -> Path:
        """The directory of a run's files (see the module doc)."""
        return self.workdir / "runs" / run_id

    def start(self) -> "KfpEndpoint":
        if self._server is not None:
            return self
        if not self.kfp_python.is_file():
            raise FileNotFoundError(f"KFP SDK python {self.kfp_python} does not exist")
        (self.workdir / "runs").mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._stopping = False
            self._load()
        server = ThreadingHTTPServer((self._host, self._port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._server_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                               name="kfp-endpoint", daemon=True)
        self._server_thread.start()
        log.info("Local KFP endpoint listening on %s (runs in %s)", self.url, self.workdir / "runs")
        return self

    def stop(self) -> None:
        """Stop the server, then every run still going: SIGTERM to its process group, SIGKILL
        after cancel_grace. Such runs end FAILED (the endpoint, not the user, stopped them)."""
        with self._lock:
            self._stopping = True
            self._slots.notify_all()
            processes = dict(self._processes)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for process in processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.cancel_grace
        for process in processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
        for thread in list(self._threads.values()):
            thread.join(timeout=self.cancel_grace + 5)
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
            self._server_thread = None

    def __enter__(self) -> "KfpEndpoint":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state (lock held) --

    def _now(self) -> int:
        return int(time.time())

    def _save(self) -> None:
        state = {"experiments": list(self._experiments.values()), "runs": list(self._runs.values())}
        path = self.workdir / "state.json"
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state))
        os.replace(partial, path)

    def _load(self) -> None:
        path = self.workdir / "state.json"
        self._experiments, self._runs = {}, {}
        if path.is_file():
            try:
                state = json.loads(path.read_text())
                self._experiments = {e["experiment_id"]: e for e in state["experiments"]}
                self._runs = {r["run_id"]: r for r in state["runs"]}
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("Ignoring unreadable %s (%s); starting with no runs", path, exc)
                self._experiments, self._runs = {}, {}
            for run in self._runs.values():
                if run["state"] not in TERMINAL_STATES:
                    self._set_state(run, "FAILED", "The local KFP endpoint stopped before the run finished")
        if not any(e["display_name"] == DEFAULT_EXPERIMENT for e in self._experiments.values()):
            # The single-user server creates it at start-up; runs without an experiment go there.
            self._add_experiment(DEFAULT_EXPERIMENT,
                                 "All runs created without specifying an experiment will be grouped here.")
        self._save()

    def _add_experiment(self, name: str, description: str) -> dict:
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": name, "description": description,
                      "created_at": self._now(), "namespace": "", "storage_state": "AVAILABLE",
                      "last_run_created_at": 0}
        self._experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _set_state(self, run: dict, state: str, error: str | None = None) -> None:
        now = self._now()
        entry: dict[str, Any] = {"update_time": now, "state": state}
        if error is not None:
            run["error"] = {"code": UNKNOWN, "message": error}
            entry["error"] = dict(run["error"])
        run["state"] = state
        run["state_history"].append(entry)
        if state in TERMINAL_STATES:
            run["finished_at"] = now
        self._save()

    def _experiment(self, experiment_id: str) -> dict:
        experiment = self._experiments.get(experiment_id)
        if experiment is None:
            raise ApiError(NOT_FOUND, f"Failed to get experiment: ResourceNotFoundError: "
                                      f"Experiment {experiment_id} not found")
        return experiment

    def _run(self, run_id: str) -> dict:
        run = self._runs.get(run_id)
        if run is None:
            raise ApiError(NOT_FOUND, f"Failed to fetch run {run_id}: ResourceNotFoundError: Run {run_id} not found")
        return run

    # -- requests --

    def index(self) -> str:
        """GET /: the runs in plain words (the operator links runs to <endpoint>/#/runs/details/<id>,
        the KFP UI's address; the fragment never reaches a server, so this page lists them all)."""
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r["created_at"], reverse=True)
            lines = [f"Local KFP endpoint (kfp.local); API at {API}; {len(runs)} runs, newest first", ""]
            for run in runs:
                lines.append(f"{rfc3339(run['created_at'])}  {run['state']:<10} {run['display_name']}  "
                             f"{run['run_id']}")
                lines.append(f"    {self.run_dir(run['run_id'])}")
                if run.get("error"):
                    lines.append(f"    {run['error']['message']}")
        return "\n".join(lines) + "\n"

    def handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, dict]:
        try:
            return 200, self._route(method, path, query, raw)
        except ApiError as err:
            return err.http_status, err.body()
        except Exception as exc:  # noqa: BLE001 - a bug here must answer, not hang the client
            log.exception("Local KFP endpoint failed on %s %s", method, path)
            return 500, ApiError(INTERNAL, f"Internal error: {type(exc).__name__}").body()

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> dict:
        if not path.startswith(API + "/"):
            raise ApiError(NOT_FOUND, "Not Found")
        parts = path[len(API) + 1:].split("/")
        if parts == ["healthz"]:
            return {"commit_sha": "local", "tag_name": "traindeploy-dev-kfp.local",
                    "multi_user": False, "pipeline_store": "database"}
        target, verb = "", ""
        if len(parts) == 2 and parts[1]:
            target, _, verb = parts[1].partition(":")
        routes: dict[tuple[str, str, bool], Callable[..., dict]] = {
            ("experiments", "GET", False): lambda: self._list_experiments(query),
            ("experiments", "POST", False): lambda: self._create_experiment(_body(raw)),
            ("experiments", "GET", True): lambda: self._get_experiment(target),
            ("runs", "GET", False): lambda: self._list_runs(query),
            ("runs", "POST", False): lambda: self._create_run(_body(raw), query),
            ("runs", "GET", True): lambda: self._get_run(target),
            ("runs", "DELETE", True): lambda: self._delete_run(target),
        }
        verbs = {"terminate": self._terminate_run, "archive": self._archive_run,
                 "unarchive": self._unarchive_run}
        if len(parts) not in (1, 2) or parts[0] not in ("experiments", "runs") or (len(parts) == 2 and not target):
            raise ApiError(NOT_FOUND, "Not Found")
        if verb:
            if parts[0] != "runs" or verb not in verbs or method != "POST":
                raise ApiError(NOT_FOUND, "Not Found")
            return verbs[verb](target)
        handler = routes.get((parts[0], method, bool(target)))
        if handler is None:
            raise ApiError(UNIMPLEMENTED, "Method Not Allowed")
        return handler()

    def _list_experiments(self, query: dict[str, str]) -> dict:
        with self._lock:
            records = list(self._experiments.values())
            page, total, token = _page(records, query, _EXPERIMENT_KEYS, "experiment_id")
            return _render({"experiments": [_render(e) for e in page], "total_size": total,
                            "next_page_token": token})

    def _create_experiment(self, body: dict) -> dict:
        data = _snake(body, _EXPERIMENT_FIELDS, "V2beta1Experiment")
        name = data.get("display_name", "")
        if not isinstance(name, str) or not name:
            raise ApiError(INVALID_ARGUMENT, "Failed to create a experiment: Invalid input error: "
                                             "Experiment must have a non-empty name")
        with self._lock:
            # A unique index on the name under a case-insensitive collation, as in KFP's store.
            if any(e["display_name"].lower() == name.lower() for e in self._experiments.values()):
                raise ApiError(ALREADY_EXISTS, f"Failed to create a new experiment. The name {name} "
                                               f"already exists. Please specify a new name")
            experiment = self._add_experiment(name, str(data.get("description", "")))
            self._save()
            return _render(experiment)

    def _get_experiment(self, experiment_id: str) -> dict:
        with self._lock:
            return _render(self._experiment(experiment_id))

    def _list_runs(self, query: dict[str, str]) -> dict:
        with self._lock:
            records = list(self._runs.values())
            experiment_id = query.get("experiment_id", "")
            if experiment_id:
                self._experiment(experiment_id)
                records = [r for r in records if r["experiment_id"] == experiment_id]
            page, total, token = _page(records, query, _RUN_KEYS, "run_id")
            return _render({"runs": [_render(r) for r in page], "total_size": total,
                            "next_page_token": token})

    def _get_run(self, run_id: str) -> dict:
        with self._lock:
            return _render(self._run(run_id))

    def _create_run(self, body: dict, query: dict[str, str]) -> dict:
        data = _snake(body, _RUN_FIELDS, "V2beta1Run")
        if not data.get("display_name"):
            # The real server wraps this invalid input in an internal error: HTTP 500.
            raise ApiError(INTERNAL, "Failed to create a new run: Invalid input error: Run name cannot be empty")
        if "pipeline_version_reference" in data:
            raise ApiError(INVALID_ARGUMENT, "Failed to create a new run: the local KFP endpoint runs "
                                             "inline pipeline specs only (pipeline_spec), not uploaded "
                                             "pipeline versions")
        spec = data.get("pipeline_spec")
        if spec is None:
            raise ApiError(INVALID_ARGUMENT, "Failed to create a new run: Invalid input error: Failed to "
                                             "create a run due to empty pipeline spec and pipeline "
                                             "version reference")
        documents = _pipeline_documents(spec)
        config = data.get("runtime_config") or {}
        if not isinstance(config, dict):
            raise ApiError(INVALID_ARGUMENT, "runtime_config must be an object")
        config = _snake(config, {"parameters", "pipeline_root"}, "V2beta1RuntimeConfig")
        parameters = config.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ApiError(INVALID_ARGUMENT, "runtime_config.parameters must be an object")
        with self._lock:
            experiment_id = str(data.get("experiment_id") or query.get("experiment_id", ""))
            if experiment_id:
                experiment = self._experiment(experiment_id)
            else:
                experiment = next(e for e in self._experiments.values()
                                  if e["display_name"] == DEFAULT_EXPERIMENT)
            if experiment["storage_state"] == "ARCHIVED":
                raise ApiError(FAILED_PRECONDITION, f"Experiment {experiment['experiment_id']} is archived")
            now = self._now()
            run: dict[str, Any] = {
                "experiment_id": experiment["experiment_id"],
                "run_id": str(uuid.uuid4()),
                "display_name": str(data["display_name"]),
                "storage_state": "AVAILABLE",
                "description": str(data.get("description", "")),
                "pipeline_spec": spec,
                "runtime_config": {k: v for k, v in config.items() if v},
                "service_account": str(data.get("service_account") or DEFAULT_SERVICE_ACCOUNT),
                "created_at": now, "scheduled_at": now, "finished_at": 0,
                "state": "PENDING",
                "state_history": [{"update_time": now, "state": "PENDING"}],
            }
            directory = self.run_dir(run["run_id"])
            (directory / "outputs").mkdir(parents=True)
            (directory / "tmp").mkdir()
            (directory / "pipeline.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
            (directory / "parameters.json").write_text(json.dumps(parameters, indent=2))
            self._runs[run["run_id"]] = run
            experiment["last_run_created_at"] = now
            self._save()
            thread = threading.Thread(target=self._execute, args=(run["run_id"],),
                                      name=f"kfp-run-{run['run_id'][:8]}", daemon=True)
            self._threads[run["run_id"]] = thread
            thread.start()
            log.info("KFP run %r (%s) created; files in %s", run["display_name"], run["run_id"], directory)
            return _render(run)

    def _terminate_run(self, run_id: str) -> dict:
        with self._lock:
            run = self._run(run_id)
            if run["state"] not in ("PENDING", "RUNNING", "PAUSED", "RUNTIME_STATE_UNSPECIFIED"):
                # What KFP's run store answers when no row may move to CANCELING.
                raise ApiError(INVALID_ARGUMENT, f"Failed to terminate run {run_id}. Row not found.")
            self._set_state(run, "CANCELING")
            process = self._processes.get(run_id)
            self._slots.notify_all()  # a run waiting for a slot sees it
        if process is not None:
            _signal_group(process, signal.SIGTERM)
            _kill_later(process, self.cancel_grace)
        log.info("KFP run %s terminated", run_id)
        return {}

    def _archive_run(self, run_id: str) -> dict:
        with self._lock:
            self._run(run_id)["storage_state"] = "ARCHIVED"
            self._save()
        return {}

    def _unarchive_run(self, run_id: str) -> dict:
        with self._lock:
            run = self._run(run_id)
            if self._experiment(run["experiment_id"])["storage_state"] == "ARCHIVED":
                raise ApiError(FAILED_PRECONDITION, f"Failed to unarchive run {run_id} as experiment "
                                                    f"{run['experiment_id']} is archived")
            run["storage_state"] = "AVAILABLE"
            self._save()
        return {}

    def _delete_run(self, run_id: str) -> dict:
        with self._lock:
            self._run(run_id)
            process = self._processes.get(run_id)
            del self._runs[run_id]
            self._slots.notify_all()
            self._save()
        if process is not None:
            _signal_group(process, signal.SIGKILL)
        return {}

    # -- execution --

    def _execute(self, run_id: str) -> None:
        """One run: wait for a slot, start the local runner, follow its reports to the end."""
        with self._lock:
            while self._executing >= self.max_parallel_runs and not self._stopping and (
                    self._runs.get(run_id, {}).get("state") == "PENDING"):
                self._slots.wait(timeout=1.0)
            run = self._runs.get(run_id)
            if run is None or run["state"] != "PENDING" or self._stopping:
                self._finish_unstarted(run)
                self._threads.pop(run_id, None)
                return
            self._executing += 1
        try:
            self._follow(run_id)
        finally:
            with self._lock:
                self._executing -= 1
                self._processes.pop(run_id, None)
                self._threads.pop(run_id, None)
                self._slots.notify_all()

    def _finish_unstarted(self, run: dict | None) -> None:
        if run is None:
            return  # deleted while waiting
        if run["state"] == "CANCELING":
            self._set_state(run, "CANCELED")
        elif self._stopping and run["state"] == "PENDING":
            self._set_state(run, "FAILED", "The local KFP endpoint stopped before the run started")

    def _follow(self, run_id: str) -> None:
        directory = self.run_dir(run_id)
        read_fd, write_fd = os.pipe()
        command = [str(self.kfp_python), str(RUNNER_SCRIPT),
                   "--package", str(directory / "pipeline.yaml"),
                   "--parameters", str(directory / "parameters.json"),
                   "--pipeline-root", str(directory / "outputs"),
                   "--workspace", str(directory / "workspace"),
                   "--use-venv", "true" if self.use_venv else "false",
                   "--report-fd", str(write_fd)]
        try:
            with open(directory / "log.txt", "ab") as logfile:
                # Its own session: one process group holds the runner and every task it starts.
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=logfile,
                                           stderr=subprocess.STDOUT, cwd=directory, env=self._run_env(directory),
                                           pass_fds=(write_fd,), start_new_session=True)
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self._end(run_id, {"state": "FAILED", "error": f"cannot start the KFP local runner "
                                                          f"{self.kfp_python}: {exc}"}, directory)
            return
        os.close(write_fd)  # the runner holds the only write end: its exit ends the reports
        with self._lock:
            self._processes[run_id] = process
            stop = self._stopping or self._runs.get(run_id, {}).get("state") != "PENDING"
        if stop:  # terminated, deleted or the endpoint stopping while the process started
            _signal_group(process, signal.SIGTERM)
            _kill_later(process, self.cancel_grace)
        final: dict = {}
        with os.fdopen(read_fd, "r") as reports:
            for line in reports:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("task"):
                    self._task_state(run_id, str(message["task"]), str(message.get("state", "")))
                elif message.get("state") == "RUNNING":
                    with self._lock:
                        run = self._runs.get(run_id)
                        if run is not None and run["state"] == "PENDING":
                            self._set_state(run, "RUNNING")
                elif message.get("state") in ("SUCCEEDED", "FAILED"):
                    final = message
        code = process.wait()
        # Its tasks are in its process group; none may outlive the run.
        _signal_group(process, signal.SIGKILL)
        if not final and self._stopping:
            final = {"state": "FAILED", "error": "The local KFP endpoint stopped while the run was running"}
        elif not final:
            final = {"state": "FAILED",
                     "error": f"the KFP local runner exited with code {code} before reporting a result"}
        self._end(run_id, final, directory)

    def _task_state(self, run_id: str, name: str, state: str) -> None:
        """A task's report -> run_details.task_details, as KFP's persistence agent fills them."""
        if state not in ("RUNNING", "SUCCEEDED", "FAILED"):
            return
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return
            tasks = run.setdefault("run_details", {}).setdefault("task_details", [])
            task = next((t for t in tasks if t["display_name"] == name and t["state"] == "RUNNING"), None)
            now = self._now()
            if task is None:
                task = {"run_id": run_id, "task_id": str(uuid.uuid4()), "display_name": name,
                        "create_time": now, "start_time": now, "end_time": 0, "state": "RUNNING",
                        "state_history": [{"update_time": now, "state": "RUNNING"}]}
                tasks.append(task)
            if state != task["state"]:
                task["state"] = state
                task["state_history"].append({"update_time": now, "state": state})
            if state in TERMINAL_STATES:
                task["end_time"] = now
            self._save()

    def _end(self, run_id: str, final: dict, directory: Path) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return
            if run["state"] == "CANCELING":
                state, error = "CANCELED", None
            else:
                state = final["state"]
                error = None
                if state == "FAILED":
                    error = f"{final.get('error') or 'the pipeline failed'} (log: {directory / 'log.txt'})"
            now = self._now()
            for task in (run.get("run_details") or {}).get("task_details", []):
                if task["state"] not in TERMINAL_STATES:  # cut short with the run
                    task["state"] = "CANCELED" if state == "CANCELED" else "FAILED"
                    task["state_history"].append({"update_time": now, "state": task["state"]})
                    task["end_time"] = now
            self._set_state(run, state, error)
            (directory / "result.json").write_text(json.dumps(
                {"state": state, "error": error, "outputs": final.get("outputs", {})}, indent=2))
        log.info("KFP run %s %s (%s)", run_id, state, directory)

    def _run_env(self, directory: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
        env.update({"PYTHONUNBUFFERED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                    # components' `mktemp -d` program folders stay in the run's directory
                    "TMPDIR": str(directory / "tmp")})
        env.update(self._env)
        return env


def _pipeline_documents(spec: Any) -> list[dict]:
    """The inline spec of a run body -> the YAML documents of a compiled package (PipelineSpec,
    then PlatformSpec if there is one); 400 for what the real server's template parser refuses."""
    if not isinstance(spec, dict):
        raise ApiError(INVALID_ARGUMENT, "pipeline_spec must be an object")
    documents = [spec]
    if "pipeline_spec" in spec:
        unknown = set(spec) - {"pipeline_spec", "platform_spec"}
        if unknown:
            raise ApiError(INVALID_ARGUMENT, f"Invalid input error: unknown keys next to pipeline_spec: "
                                             f"{sorted(unknown)}")
        documents = [spec["pipeline_spec"]] + ([spec["platform_spec"]] if spec.get("platform_spec") else [])
        if not all(isinstance(d, dict) for d in documents):
            raise ApiError(INVALID_ARGUMENT, "pipeline_spec and platform_spec must be objects")
    info = documents[0].get("pipelineInfo")
    if not isinstance(info, dict) or not info.get("name"):
        raise ApiError(INVALID_ARGUMENT, "Invalid input error: invalid v2 pipeline spec: pipelineInfo.name is empty")
    if not isinstance(documents[0].get("root"), dict):
        raise ApiError(INVALID_ARGUMENT, "Invalid input error: invalid v2 pipeline spec: root is missing")
    return documents


def _body(raw: bytes) -> dict:
    if not raw.strip():
        return {}  # grpc-gateway reads an empty body as an empty message
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(INVALID_ARGUMENT, f"proto: syntax error (line 1:1): {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(INVALID_ARGUMENT, "proto: syntax error (line 1:1): expected a JSON object")
    return data


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """Signal the run's process group (the runner and every task it started)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_later(process: subprocess.Popen, grace: float) -> None:
    """SIGKILL the process group after `grace` seconds if its leader still runs (what is left of
    the group once the leader is gone is killed by the thread that reaped it)."""
    def kill() -> None:
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL)

    timer = threading.Timer(grace, kill)
    timer.daemon = True
    timer.start()


def _handler_for(endpoint: KfpEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for clients with a requests.Session
        server_version = "traindeploy-kfp-local"
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            if self.command == "GET" and split.path == "/":
                status, payload, kind = 200, endpoint.index().encode(), "text/plain; charset=utf-8"
            else:
                status, body = endpoint.handle(self.command, split.path, query, raw)
                payload, kind = json.dumps(body).encode(), "application/json"
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("kfp-endpoint: " + format, *args)

    return Handler


__all__ = ["KfpEndpoint", "ApiError", "RUNNER_SCRIPT", "TERMINAL_STATES"]
