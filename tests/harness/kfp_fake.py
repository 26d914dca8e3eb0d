"""A test double of the Kubeflow Pipelines API server (REST `/apis/v2beta1`), on loopback.

The KFP backend cannot run in tests, so this server stands in for it. It follows the real server
as read from kubeflow/pipelines (`backend/src/apiserver`) and the `kfp-server-api` 2.17.3 models:

- Responses are protobuf JSON as the real gateway writes them (`UseProtoNames`, no unpopulated
  fields): snake_case keys, empty strings / zero numbers / empty lists / zero enums left out,
  int64 as strings, timestamps RFC 3339 at second precision. Timestamp fields the server always
  sets (`created_at`, `scheduled_at`, `finished_at`, `last_run_created_at`) are present even when
  zero, as `1970-01-01T00:00:00Z`, exactly like the real server for a run that has not finished.
- Request bodies are decoded like protojson with `DiscardUnknown: false`: snake_case or
  lowerCamelCase keys, unknown keys rejected with 400, a oneof set twice rejected with 400.
- Errors are google.rpc.Status bodies with the gRPC code mapped to HTTP as grpc-gateway does.
  KFP's own errors carry one detail, the user-facing google.rpc.Status, packed in an Any.
- Filters (`filter` query parameter) are a JSON `Filter`: operation as number or name, value key in
  either spelling; string comparisons ignore case, as KFP's MySQL store does.
- Pagination is keyset pagination on (sort field, id) with an opaque base64 page token, default
  page size 20, maximum 200; a token given with a different filter or sort is rejected.

    with KfpFake() as fake:
        fake.url                                   # http://127.0.0.1:PORT
        fake.set_run_state(run_id, "SUCCEEDED")    # what the persistence agent would report

`MESSAGES` and `ENUMS` below are the wire schema; the tests check them against the
`kfp_server_api` models field by field.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

API = "/apis/v2beta1"

# --- wire schema -------------------------------------------------------------------------------
# Message and enum names are the kfp_server_api model class names. Field types: string, bool,
# int32, int64 (a JSON string on the wire), timestamp, struct (any JSON object), value (any JSON
# value), enum:<Enum>, msg:<Message>, list:<type>, map:<type> (string keys).

MESSAGES: dict[str, dict[str, str]] = {
    "V2beta1Run": {
        "experiment_id": "string",
        "run_id": "string",
        "display_name": "string",
        "storage_state": "enum:V2beta1RunStorageState",
        "description": "string",
        "pipeline_version_id": "string",
        "pipeline_spec": "struct",
        "pipeline_version_reference": "msg:V2beta1PipelineVersionReference",
        "runtime_config": "msg:V2beta1RuntimeConfig",
        "service_account": "string",
        "created_at": "timestamp",
        "scheduled_at": "timestamp",
        "finished_at": "timestamp",
        "state": "enum:V2beta1RuntimeState",
        "error": "msg:GoogleRpcStatus",
        "run_details": "msg:V2beta1RunDetails",
        "recurring_run_id": "string",
        "state_history": "list:msg:V2beta1RuntimeStatus",
        "plugins_input": "map:value",
        "plugins_output": "map:msg:V2beta1PluginOutput",
    },
    "V2beta1PipelineVersionReference": {"pipeline_id": "string", "pipeline_version_id": "string"},
    "V2beta1RuntimeConfig": {"parameters": "map:value", "pipeline_root": "string"},
    "V2beta1RuntimeStatus": {
        "update_time": "timestamp",
        "state": "enum:V2beta1RuntimeState",
        "error": "msg:GoogleRpcStatus",
    },
    "GoogleRpcStatus": {"code": "int32", "message": "string", "details": "list:msg:ProtobufAny"},
    # An Any is open: "@type" plus the packed message's own fields (protojson embeds them).
    "ProtobufAny": {"@type": "string", "type_url": "string", "value": "string"},
    "V2beta1RunDetails": {
        "pipeline_context_id": "int64",
        "pipeline_run_context_id": "int64",
        "task_details": "list:msg:V2beta1PipelineTaskDetail",
    },
    "V2beta1PipelineTaskDetail": {
        "run_id": "string",
        "task_id": "string",
        "display_name": "string",
        "create_time": "timestamp",
        "start_time": "timestamp",
        "end_time": "timestamp",
        "executor_detail": "msg:V2beta1PipelineTaskExecutorDetail",
        "state": "enum:V2beta1RuntimeState",
        "execution_id": "int64",
        "error": "msg:GoogleRpcStatus",
        "inputs": "map:msg:V2beta1ArtifactList",
        "outputs": "map:msg:V2beta1ArtifactList",
        "parent_task_id": "string",
        "state_history": "list:msg:V2beta1RuntimeStatus",
        "pod_name": "string",
        "child_tasks": "list:msg:PipelineTaskDetailChildTask",
    },
    "V2beta1PipelineTaskExecutorDetail": {
        "main_job": "string",
        "pre_caching_check_job": "string",
        "failed_main_jobs": "list:string",
        "failed_pre_caching_check_jobs": "list:string",
    },
    "V2beta1ArtifactList": {"artifact_ids": "list:int64"},
    "PipelineTaskDetailChildTask": {"task_id": "string", "pod_name": "string"},
    "V2beta1PluginOutput": {
        "entries": "map:msg:V2beta1MetadataValue",
        "state": "enum:V2beta1PluginState",
        "state_message": "string",
    },
    "V2beta1MetadataValue": {"value": "value", "render_type": "enum:MetadataValueRenderType"},
    "V2beta1Experiment": {
        "experiment_id": "string",
        "display_name": "string",
        "description": "string",
        "created_at": "timestamp",
        "namespace": "string",
        "storage_state": "enum:V2beta1ExperimentStorageState",
        "last_run_created_at": "timestamp",
    },
    "V2beta1ListRunsResponse": {
        "runs": "list:msg:V2beta1Run",
        "total_size": "int32",
        "next_page_token": "string",
    },
    "V2beta1ListExperimentsResponse": {
        "experiments": "list:msg:V2beta1Experiment",
        "total_size": "int32",
        "next_page_token": "string",
    },
    "V2beta1GetHealthzResponse": {"multi_user": "bool", "pipeline_store": "string"},
    "V2beta1Filter": {"predicates": "list:msg:V2beta1Predicate"},
    "V2beta1Predicate": {
        "operation": "enum:V2beta1PredicateOperation",
        "key": "string",
        "int_value": "int32",
        "long_value": "int64",
        "string_value": "string",
        "timestamp_value": "timestamp",
        "int_values": "msg:PredicateIntValues",
        "long_values": "msg:PredicateLongValues",
        "string_values": "msg:PredicateStringValues",
    },
    "PredicateIntValues": {"values": "list:int32"},
    "PredicateLongValues": {"values": "list:int64"},
    "PredicateStringValues": {"values": "list:string"},
}

# protobuf oneofs: at most one member may be set.
ONEOFS: dict[str, tuple[str, ...]] = {
    "V2beta1Run": ("pipeline_spec", "pipeline_version_reference"),
    "V2beta1Predicate": ("int_value", "long_value", "string_value", "timestamp_value",
                         "int_values", "long_values", "string_values"),
}

ENUMS: dict[str, dict[str, int]] = {
    "V2beta1RuntimeState": {
        "RUNTIME_STATE_UNSPECIFIED": 0, "PENDING": 1, "RUNNING": 2, "SUCCEEDED": 3, "SKIPPED": 4,
        "FAILED": 5, "CANCELING": 6, "CANCELED": 7, "PAUSED": 8,
    },
    "V2beta1RunStorageState": {"STORAGE_STATE_UNSPECIFIED": 0, "AVAILABLE": 1, "ARCHIVED": 2},
    "V2beta1ExperimentStorageState": {"STORAGE_STATE_UNSPECIFIED": 0, "AVAILABLE": 1, "ARCHIVED": 2},
    # filter.proto skips 4.
    "V2beta1PredicateOperation": {
        "OPERATION_UNSPECIFIED": 0, "EQUALS": 1, "NOT_EQUALS": 2, "GREATER_THAN": 3,
        "GREATER_THAN_EQUALS": 5, "LESS_THAN": 6, "LESS_THAN_EQUALS": 7, "IN": 8, "IS_SUBSTRING": 9,
    },
    "V2beta1PluginState": {
        "PLUGIN_STATE_UNSPECIFIED": 0, "PLUGIN_RUNNING": 1, "PLUGIN_SUCCEEDED": 2, "PLUGIN_FAILED": 3,
    },
    "MetadataValueRenderType": {"UNSPECIFIED": 0, "URL": 1},
}

RUNTIME_STATES = tuple(ENUMS["V2beta1RuntimeState"])
TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
# States from which KFP's run store lets TerminateRun move a run to CANCELING.
TERMINABLE_STATES = frozenset({"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "PAUSED"})

# Filterable / sortable API keys -> how to read the value off a stored record.
RUN_KEYS = {
    "run_id": "run_id", "id": "run_id", "display_name": "display_name", "name": "display_name",
    "created_at": "created_at", "finished_at": "finished_at", "scheduled_at": "scheduled_at",
    "description": "description", "storage_state": "storage_state", "state": "state",
    "status": "state", "namespace": "_namespace", "experiment_id": "experiment_id",
    "recurring_run_id": "recurring_run_id", "pipeline_id": "_pipeline_id",
}
EXPERIMENT_KEYS = {
    "id": "experiment_id", "experiment_id": "experiment_id", "name": "display_name",
    "display_name": "display_name", "created_at": "created_at",
    "last_run_created_at": "last_run_created_at", "description": "description",
    "namespace": "namespace", "storage_state": "storage_state",
}
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
DEFAULT_SERVICE_ACCOUNT = "pipeline-runner"
DEFAULT_EXPERIMENT_NAME = "Default"

# google.rpc.Code -> HTTP status, as grpc-gateway's HTTPStatusFromCode.
_HTTP_FROM_CODE = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409,
    11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED = 3, 5, 6, 7
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 12, 13, 14, 16


class ApiError(Exception):
    """A gRPC-status error as the KFP server returns it: `message` is the wrapped internal chain,
    `user_message` the external message KFP packs into the single google.rpc.Status detail."""

    def __init__(self, code: int, message: str, user_message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.user_message = user_message

    def body(self) -> dict:
        status: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.user_message is not None:
            status["details"] = [{"@type": "type.googleapis.com/google.rpc.Status",
                                  "code": self.code, "message": self.user_message}]
        return status

    @property
    def http_status(self) -> int:
        return _HTTP_FROM_CODE.get(self.code, 500)


def _invalid(message: str, user_message: str | None = None) -> ApiError:
    return ApiError(INVALID_ARGUMENT, message, user_message if user_message is not None else message)


# --- protojson-like decoding and encoding ---------------------------------------------------------

def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> int:
    """Seconds since the epoch; fractions are dropped as the KFP store keeps whole seconds."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a time zone offset")
    return int(parsed.timestamp())


def decode(message: str, data: Any, where: str = "") -> dict:
    """A JSON object -> snake_case dict of typed values, rejecting what protojson rejects."""
    if not isinstance(data, dict):
        raise _invalid(f"proto: syntax error: {where or message}: expected a JSON object")
    fields = MESSAGES[message]
    if message == "ProtobufAny":
        if not isinstance(data.get("@type"), str) or not data["@type"]:
            raise _invalid(f"proto: {where}: google.protobuf.Any is missing @type")
        return dict(data)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key if key in fields else next((f for f in fields if _camel(f) == key), None)
        if name is None:
            raise _invalid(f'proto: (line 1:1): unknown field "{key}"')
        if name in out:
            raise _invalid(f'proto: (line 1:1): duplicate field "{key}"')
        if value is None and fields[name] != "value":
            continue  # protojson: null means "not set"
        out[name] = _decode_value(fields[name], value, f"{where}.{name}" if where else name)
    members = [f for f in ONEOFS.get(message, ()) if f in out]
    if len(members) > 1:
        raise _invalid(f"proto: (line 1:1): error parsing \"{members[1]}\", oneof is already set")
    return out


def _decode_value(kind: str, value: Any, where: str) -> Any:
    def wrong(expected: str) -> ApiError:
        return _invalid(f"proto: (line 1:1): invalid value for {expected} field {where}: {json.dumps(value)}")

    if kind.startswith("list:"):
        if not isinstance(value, list):
            raise wrong("repeated")
        return [_decode_value(kind[5:], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind.startswith("map:"):
        if not isinstance(value, dict):
            raise wrong("map")
        return {str(k): _decode_value(kind[4:], v, f"{where}[{k}]") for k, v in value.items()}
    if kind.startswith("msg:"):
        return decode(kind[4:], value, where)
    if kind.startswith("enum:"):
        values = ENUMS[kind[5:]]
        if isinstance(value, str) and value in values:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            for name, number in values.items():
                if number == value:
                    return name
        raise wrong(f"enum {kind[5:]}")
    if kind == "string":
        if not isinstance(value, str):
            raise wrong("string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong("bool")
        return value
    if kind in ("int32", "int64"):
        if isinstance(value, bool):
            raise wrong(kind)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise wrong(kind) from None
        raise wrong(kind)
    if kind == "timestamp":
        if not isinstance(value, str):
            raise wrong("google.protobuf.Timestamp")
        try:
            return parse_rfc3339(value)
        except ValueError:
            raise wrong("google.protobuf.Timestamp") from None
    if kind == "struct":
        if not isinstance(value, dict):
            raise wrong("google.protobuf.Struct")
        return copy.deepcopy(value)
    if kind == "value":
        return copy.deepcopy(value)
    raise AssertionError(f"unknown field type {kind}")


def render(message: str, data: dict) -> dict:
    """A stored record -> the JSON the real gateway writes (unpopulated fields left out)."""
    if message == "ProtobufAny":
        return copy.deepcopy(data)
    out: dict[str, Any] = {}
    for name, kind in MESSAGES[message].items():
        if name not in data or data[name] is None:
            continue
        rendered = _render_value(kind, data[name])
        if rendered is not _UNSET:
            out[name] = rendered
    return out


_UNSET = object()


def _render_value(kind: str, value: Any) -> Any:
    if kind.startswith("list:"):
        return [_render_value(kind[5:], v) for v in value] if value else _UNSET
    if kind.startswith("map:"):
        return {k: _render_value(kind[4:], v) for k, v in value.items()} if value else _UNSET
    if kind.startswith("msg:"):
        return render(kind[4:], value)  # a set message is written even when empty
    if kind.startswith("enum:"):
        return _UNSET if ENUMS[kind[5:]].get(value, 0) == 0 else value
    if kind == "timestamp":
        return rfc3339(int(value))  # a set Timestamp is written even at the epoch
    if kind == "int64":
        return str(value) if value else _UNSET
    if kind in ("int32", "string", "bool"):
        return value if value else _UNSET
    return copy.deepcopy(value)  # struct / value


# --- filters and pagination ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Predicate:
    operation: str
    key: str
    value: Any  # int, str, or a tuple for IN


_SCALAR_OPS = {"EQUALS", "NOT_EQUALS", "GREATER_THAN", "GREATER_THAN_EQUALS", "LESS_THAN",
               "LESS_THAN_EQUALS"}


def parse_filter(text: str, keys: dict[str, str]) -> tuple[_Predicate, ...]:
    """The `filter` query parameter -> predicates, with the real server's 400s."""
    if not text:
        return ()
    user = f"failed to parse valid filter from {text!r}"
    try:
        raw = json.loads(unquote(text))
    except ValueError as exc:
        raise _invalid(f"Invalid input error: {user}: {exc}", user) from None
    decoded = decode("V2beta1Filter", raw, "filter")
    predicates = []
    for item in decoded.get("predicates", []):
        operation = item.get("operation", "OPERATION_UNSPECIFIED")
        key = item.get("key", "")
        value_field = next((f for f in ONEOFS["V2beta1Predicate"] if f in item), None)
        if value_field is None:
            raise _invalid("Invalid input error: Error using Filter.Predicate.Value with <nil>")
        value = item[value_field]
        if value_field.endswith("_values"):
            value = tuple(value.get("values", []))
        if not key:
            raise _invalid(f"Invalid input error: Predicate key cannot be empty for operation "
                           f"{operation} and value {value}")
        if operation == "OPERATION_UNSPECIFIED":
            raise _invalid("Invalid input error: Error using Filter.Predicate.Operation with "
                           "v2beta1.Predicate_Operation")
        if operation == "IN" and not isinstance(value, tuple):
            raise _invalid(f"Invalid input error: cannot use IN operator with scalar type "
                           f"{type(value).__name__}")
        if operation in _SCALAR_OPS and isinstance(value, tuple):
            raise _invalid(f"Invalid input error: cannot use scalar operator {operation} on "
                           f"array type")
        if operation == "IS_SUBSTRING" and not isinstance(value, str):
            raise _invalid(f"Invalid input error: cannot use non string value type with "
                           f"operator {operation}")
        if key not in keys:
            raise _invalid(f'Invalid input error: no support for filtering on unrecognized field "{key}"')
        predicates.append(_Predicate(operation, key, value))
    return tuple(predicates)


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _matches(record: dict, predicates: tuple[_Predicate, ...], keys: dict[str, str]) -> bool:
    for p in predicates:
        field = record.get(keys[p.key])
        if field is None:
            field = "" if isinstance(p.value, str) or (isinstance(p.value, tuple) and p.value
                                                         and isinstance(p.value[0], str)) else 0
        have, want = _fold(field), _fold(p.value)
        if p.operation == "IN":
            ok = have in {_fold(v) for v in p.value}
        elif p.operation == "IS_SUBSTRING":
            ok = isinstance(have, str) and want in have
        else:
            if type(have) is not type(want) and not (isinstance(have, int) and isinstance(want, int)):
                have, want = str(have), str(want)
            ok = {
                "EQUALS": have == want, "NOT_EQUALS": have != want,
                "GREATER_THAN": have > want, "GREATER_THAN_EQUALS": have >= want,
                "LESS_THAN": have < want, "LESS_THAN_EQUALS": have <= want,
            }[p.operation]
        if not ok:
            return False
    return True


def _parse_sort(sort_by: str, keys: dict[str, str]) -> tuple[str, bool]:
    parts = sort_by.lower().split()
    if len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
        raise _invalid(f'Invalid input error: Received invalid sort by format "{sort_by}". Supported '
                       f'format: "field_name", "field_name desc", or "field_name asc"')
    field = parts[0] if parts else "created_at"
    if field not in keys:
        raise _invalid(f"Invalid input error: Invalid sorting field: {field!r}")
    return keys[field], len(parts) == 2 and parts[1] == "desc"


def paginate(records: list[dict], *, keys: dict[str, str], id_field: str, query: dict[str, str]
             ) -> tuple[list[dict], int, str]:
    """Filter, sort and cut one page the way KFP's list store does; returns (page, total, token)."""
    raw_size = query.get("page_size", "") or "0"
    try:
        page_size = int(raw_size)
    except ValueError:
        raise _invalid(f'parsing field "page_size": strconv.ParseInt: parsing {raw_size!r}: '
                       f"invalid syntax") from None
    if page_size < 0:
        raise _invalid(f"Invalid input error: The page size should be greater than 0. Got {page_size}")
    page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    filter_text = query.get("filter", "")
    sort_by = query.get("sort_by", "")
    token_text = query.get("page_token", "")
    token: dict | None = None
    if token_text:
        try:
            token = json.loads(base64.b64decode(token_text, validate=True))
            assert isinstance(token, dict) and {"SortByFieldName", "IsDesc", "Filter"} <= set(token)
        except Exception:
            raise _invalid("InvalidInputError: Invalid package token.", "Invalid package token.") from None
    predicates = parse_filter(filter_text, keys)
    sort_field, desc = _parse_sort(sort_by, keys)
    canonical = [[p.operation, p.key, list(p.value) if isinstance(p.value, tuple) else p.value]
                 for p in predicates]
    if token is not None:
        if (sort_by or filter_text) and (
                [sort_field, desc, canonical] != [token["SortByFieldName"], token["IsDesc"], token["Filter"]]):
            raise _invalid("Invalid input error: page token does not match the supplied sort by "
                           "and/or filtering criteria. Either specify the same criteria or leave "
                           "the latter empty if page token is specified.")
        sort_field, desc = token["SortByFieldName"], token["IsDesc"]
        predicates = tuple(_Predicate(o, k, tuple(v) if isinstance(v, list) else v)
                           for o, k, v in token["Filter"])
        canonical = token["Filter"]
    matched = [r for r in records if _matches(r, predicates, keys)]
    total = len(matched)

    def order(record: dict) -> tuple:
        value = record.get(sort_field)
        return (_fold(value) if value is not None else "", record[id_field])

    matched.sort(key=order, reverse=desc)
    if token is not None:
        start = (token["SortByFieldValue"], token["KeyFieldValue"])
        matched = [r for r in matched if (order(r) <= start if desc else order(r) >= start)]
    page, rest = matched[:page_size], matched[page_size:]
    next_token = ""
    if rest:
        first = order(rest[0])
        next_token = base64.b64encode(json.dumps({
            "SortByFieldName": sort_field, "SortByFieldValue": first[0], "KeyFieldName": id_field,
            "KeyFieldValue": first[1], "IsDesc": desc, "Filter": canonical,
        }).encode()).decode()
    return page, total, next_token


# --- the server ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KfpRequest:
    """One request as the fake saw it; an Authorization value is replaced by its scheme."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


def _redact(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in headers.items():
        if key.lower() == "authorization":
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} <redacted>".strip()
        out[key] = value
    return out


class KfpFake:
    """A threaded HTTP server that answers like a single-user KFP API server (multi_user=False)
    or a multi-user one. All state is behind one lock; test controls may be called from any
    thread while clients talk to the server."""

    def __init__(self, *, multi_user: bool = False, port: int = 0) -> None:
        self.multi_user = multi_user
        self._port = port
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._runs: dict[str, dict] = {}
        self._experiments: dict[str, dict] = {}
        self._pipeline_versions: dict[tuple[str, str], dict] = {}
        self._requests: list[KfpRequest] = []
        self._connections: set[socket.socket] = set()
        self._token: str | None = None
        self._outage = False
        self._delay = 0.0
        self._clock_offset = 0
        self._context_ids = 1000
        if not multi_user:
            # The real server creates this at start-up in single-user mode; runs without an
            # experiment land in it.
            self._add_experiment(DEFAULT_EXPERIMENT_NAME,
                                 "All runs created without specifying an experiment will be grouped here.", "")

    # -- lifecycle --

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("KfpFake is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "KfpFake":
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="kfp-fake", daemon=True)
        self._thread.start()
        log.info("KFP fake up at %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in set_delay
        server.shutdown()
        server.server_close()
        # Keep-alive connections outlive the listening socket: cut them, as a dead server would.
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "KfpFake":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls --

    @property
    def runs(self) -> dict[str, dict]:
        """run_id -> the run exactly as GET /runs/{id} would return it."""
        with self._lock:
            return {rid: render("V2beta1Run", r) for rid, r in self._runs.items()}

    @property
    def experiments(self) -> dict[str, dict]:
        """experiment_id -> the experiment as GET /experiments/{id} would return it."""
        with self._lock:
            return {eid: render("V2beta1Experiment", e) for eid, e in self._experiments.items()}

    @property
    def requests(self) -> list[KfpRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def require_token(self, token: str | None) -> None:
        """Answer 401 without a bearer token and 403 with a different one (None: no auth)."""
        with self._lock:
            self._token = token

    def outage(self, on: bool) -> None:
        """While on, every request gets 503 UNAVAILABLE."""
        with self._lock:
            self._outage = on

    def set_delay(self, seconds: float) -> None:
        """Every answer waits this long first: for client timeout tests."""
        with self._lock:
            self._delay = max(0.0, seconds)

    def advance(self, seconds: int) -> None:
        """Move the fake's clock forward (KFP keeps whole seconds; ordering tests need steps)."""
        with self._lock:
            self._clock_offset += int(seconds)

    def now(self) -> int:
        with self._lock:
            return int(time.time()) + self._clock_offset

    def add_pipeline_version(self, pipeline_spec: dict, pipeline_id: str | None = None,
                             pipeline_version_id: str | None = None) -> tuple[str, str]:
        """Register an uploaded pipeline version so runs can reference it."""
        key = (pipeline_id or str(uuid.uuid4()), pipeline_version_id or str(uuid.uuid4()))
        with self._lock:
            self._pipeline_versions[key] = copy.deepcopy(pipeline_spec)
        return key

    def set_run_state(self, run_id: str, state: str, error_message: str | None = None,
                      error_code: int = 2) -> dict:
        """Report a new runtime state the way KFP's persistence agent would: state and
        state_history, run_details once the run has started, finished_at on a terminal state,
        error as a google.rpc.Status. Returns the run as the API shows it."""
        if state not in ENUMS["V2beta1RuntimeState"]:
            raise ValueError(f"unknown V2beta1RuntimeState {state!r}; one of {RUNTIME_STATES}")
        with self._lock:
            run = self._runs[run_id]
            now = self.now()
            entry: dict[str, Any] = {"update_time": now, "state": state}
            if error_message is not None:
                run["error"] = {"code": error_code, "message": error_message}
                entry["error"] = dict(run["error"])
            run["state"] = state
            run.setdefault("state_history", []).append(entry)
            if state in TERMINAL_STATES:
                run["finished_at"] = now
            if state != "PENDING" and "run_details" not in run:
                self._context_ids += 3
                run["run_details"] = {
                    "pipeline_context_id": self._context_ids - 2,
                    "pipeline_run_context_id": self._context_ids - 1,
                    "task_details": [{
                        "run_id": run_id, "task_id": str(uuid.uuid4()),
                        "display_name": _pipeline_name(run) or "pipeline",
                        "create_time": now, "start_time": now, "end_time": 0,
                        "state": state, "execution_id": self._context_ids,
                        "state_history": [{"update_time": now, "state": state}],
                    }],
                }
            if "run_details" in run:
                task = run["run_details"]["task_details"][0]
                task["state"] = state
                if task["state_history"][-1]["state"] != state:
                    task["state_history"].append({"update_time": now, "state": state})
                if state in TERMINAL_STATES:
                    task["end_time"] = now
            return render("V2beta1Run", run)

    # -- storage helpers (lock held) --

    def _add_experiment(self, name: str, description: str, namespace: str) -> dict:
        now = self.now()
        experiment = {
            "experiment_id": str(uuid.uuid4()), "display_name": name, "description": description,
            "created_at": now, "namespace": namespace, "storage_state": "AVAILABLE",
            "last_run_created_at": 0,
        }
        self._experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _default_experiment(self) -> dict:
        for experiment in self._experiments.values():
            if experiment["display_name"] == DEFAULT_EXPERIMENT_NAME and not experiment["namespace"]:
                return experiment
        return self._add_experiment(DEFAULT_EXPERIMENT_NAME, "", "")

    def _experiment(self, experiment_id: str, doing: str) -> dict:
        experiment = self._experiments.get(experiment_id)
        if experiment is None:
            user = f"Experiment {experiment_id} not found"
            raise ApiError(NOT_FOUND, f"{doing}: ResourceNotFoundError: {user}", user)
        return experiment

    def _run(self, run_id: str, doing: str) -> dict:
        run = self._runs.get(run_id)
        if run is None:
            user = f"Run {run_id} not found"
            raise ApiError(NOT_FOUND, f"{doing}: Failed to fetch run {run_id}: ResourceNotFoundError: {user}", user)
        return run

    # -- request handling --

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               raw_body: bytes) -> tuple[int, dict]:
        """Route one request; returns (HTTP status, JSON body)."""
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body.decode("utf-8", "replace")
        with self._lock:
            self._requests.append(KfpRequest(method, path, query, _redact(headers), body))
            delay, outage, token = self._delay, self._outage, self._token
        if delay and self._stopping.wait(delay):
            return 503, ApiError(UNAVAILABLE, "server shutting down").body()
        if outage:
            return 503, ApiError(UNAVAILABLE, "connection error: desc = \"transport: Error while dialing: "
                                              "dial tcp 127.0.0.1:8887: connect: connection refused\"").body()
        try:
            if token is not None:
                self._check_token(headers, token)
            return 200, self._route(method, path, {k: v[-1] for k, v in query.items()}, raw_body)
        except ApiError as err:
            return err.http_status, err.body()

    @staticmethod
    def _check_token(headers: dict[str, str], token: str) -> None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given:
            user = "Request header error: there is no user identity header."
            raise ApiError(UNAUTHENTICATED, f"Unauthenticated: {user}", user)
        if given.strip() != token:
            user = "Failed to authorize with API: the bearer token is not authorized"
            raise ApiError(PERMISSION_DENIED, f"PermissionDenied: {user}", user)

    def _route(self, method: str, path: str, query: dict[str, str], raw_body: bytes) -> dict:
        if not path.startswith(API + "/"):
            raise ApiError(NOT_FOUND, "Not Found")
        rest = path[len(API) + 1:]
        parts = rest.split("/")
        if rest == "healthz":
            # Served by a hand-written handler in the real server, for any method.
            return {"commit_sha": "unknown", "tag_name": "unknown", "multi_user": self.multi_user,
                    "pipeline_store": "database"}
        routes: dict[tuple[str, str], Callable[..., dict]] = {}
        target = ""
        if parts[0] == "experiments" and len(parts) == 1:
            routes = {("GET", ""): self._list_experiments, ("POST", ""): self._create_experiment}
        elif parts[0] == "experiments" and len(parts) == 2 and parts[1]:
            target, _, verb = parts[1].partition(":")
            routes = {("GET", ""): self._get_experiment, ("DELETE", ""): self._delete_experiment,
                      ("POST", "archive"): self._archive_experiment,
                      ("POST", "unarchive"): self._unarchive_experiment}
            routes = {k: v for k, v in routes.items() if k[1] == verb}
        elif parts[0] == "runs" and len(parts) == 1:
            routes = {("GET", ""): self._list_runs, ("POST", ""): self._create_run}
        elif parts[0] == "runs" and len(parts) == 2 and parts[1]:
            target, _, verb = parts[1].partition(":")
            routes = {("GET", ""): self._get_run, ("DELETE", ""): self._delete_run,
                      ("POST", "terminate"): self._terminate_run, ("POST", "archive"): self._archive_run,
                      ("POST", "unarchive"): self._unarchive_run}
            routes = {k: v for k, v in routes.items() if k[1] == verb}
        handler = next((h for (m, _), h in routes.items() if m == method), None)
        if handler is None:
            if routes:
                raise ApiError(UNIMPLEMENTED, "Method Not Allowed")
            raise ApiError(NOT_FOUND, "Not Found")
        with self._lock:
            if method == "POST" and not target:
                return handler(query, raw_body)
            return handler(target, query) if target else handler(query)

    @staticmethod
    def _body(message: str, raw_body: bytes) -> dict:
        if not raw_body.strip():
            return {}  # grpc-gateway treats an empty body as an empty message
        try:
            data = json.loads(raw_body)
        except ValueError as exc:
            raise _invalid(f"proto: syntax error (line 1:1): {exc}") from None
        return decode(message, data)

    # experiments

    def _list_experiments(self, query: dict[str, str]) -> dict:
        namespace = query.get("namespace", "") if self.multi_user else ""
        if self.multi_user and not namespace:
            raise _invalid("List experiments failed: Failed to authorize with API: Invalid input error: "
                           "An experiment cannot have an empty namespace in multi-user mode",
                           "An experiment cannot have an empty namespace in multi-user mode")
        records = [e for e in self._experiments.values() if e["namespace"] == namespace]
        page, total, token = paginate(records, keys=EXPERIMENT_KEYS, id_field="experiment_id", query=query)
        return render("V2beta1ListExperimentsResponse", {
            "experiments": page, "total_size": total, "next_page_token": token})

    def _create_experiment(self, query: dict[str, str], raw_body: bytes) -> dict:
        data = self._body("V2beta1Experiment", raw_body)
        name = data.get("display_name", "")
        namespace = data.get("namespace", "") if self.multi_user else ""
        if not name:
            raise _invalid("Failed to create a experiment: [ExperimentServer]: Failed to create a "
                           "experiment due to conversion error: Invalid input error: Experiment "
                           "must have a non-empty name", "Experiment must have a non-empty name")
        if self.multi_user and not namespace:
            raise _invalid("Failed to create a experiment: Failed to authorize the request: Invalid input "
                           "error: An experiment cannot have an empty namespace in multi-user mode",
                           "An experiment cannot have an empty namespace in multi-user mode")
        # A unique index on (Name, Namespace) under a case-insensitive collation.
        if any(e["display_name"].lower() == name.lower() and e["namespace"] == namespace
               for e in self._experiments.values()):
            user = (f"Failed to create a new experiment. The name {name} already exists. Please "
                    f"specify a new name")
            raise ApiError(ALREADY_EXISTS, f"Failed to create a experiment: Already exist error: {user}", user)
        return render("V2beta1Experiment", self._add_experiment(name, data.get("description", ""), namespace))

    def _get_experiment(self, experiment_id: str, query: dict[str, str]) -> dict:
        return render("V2beta1Experiment", self._experiment(experiment_id, "Failed to fetch experiment"))

    def _delete_experiment(self, experiment_id: str, query: dict[str, str]) -> dict:
        self._experiment(experiment_id, "Failed to delete experiment")
        del self._experiments[experiment_id]
        return {}

    def _archive_experiment(self, experiment_id: str, query: dict[str, str]) -> dict:
        self._experiment(experiment_id, "Failed to archive experiment")["storage_state"] = "ARCHIVED"
        for run in self._runs.values():  # archiving an experiment archives its runs
            if run["experiment_id"] == experiment_id:
                run["storage_state"] = "ARCHIVED"
        return {}

    def _unarchive_experiment(self, experiment_id: str, query: dict[str, str]) -> dict:
        self._experiment(experiment_id, "Failed to unarchive experiment")["storage_state"] = "AVAILABLE"
        return {}

    # runs

    def _list_runs(self, query: dict[str, str]) -> dict:
        experiment_id = query.get("experiment_id", "")
        records = list(self._runs.values())
        if experiment_id:
            self._experiment(experiment_id, "Failed to list runs: Failed to list runs due to error "
                                            f"fetching namespace for experiment {experiment_id}. Try "
                                            "filtering based on namespace: Failed to get experiment")
            records = [r for r in records if r["experiment_id"] == experiment_id]
        elif self.multi_user:
            namespace = query.get("namespace", "")
            if not namespace:
                raise _invalid("Failed to list runs: Invalid input error: A run cannot have an empty "
                               "namespace in multi-user mode",
                               "A run cannot have an empty namespace in multi-user mode")
            records = [r for r in records if r["_namespace"] == namespace]
        page, total, token = paginate(records, keys=RUN_KEYS, id_field="run_id", query=query)
        return render("V2beta1ListRunsResponse", {"runs": page, "total_size": total, "next_page_token": token})

    def _create_run(self, query: dict[str, str], raw_body: bytes) -> dict:
        data = self._body("V2beta1Run", raw_body)
        if not data.get("display_name"):
            # KFP's converter wraps this invalid-input error in an internal one: HTTP 500.
            raise ApiError(INTERNAL, "Failed to create a new run: CreateJob(job.ToV2())Failed to create a "
                                     "run due to conversion error: InternalServerError: Failed to convert a "
                                     "API run detail to its internal representation: Invalid input error: "
                                     "Run name cannot be empty", "Internal Server Error")
        pipeline_id = ""
        if "pipeline_version_reference" in data:
            ref = data["pipeline_version_reference"]
            key = (ref.get("pipeline_id", ""), ref.get("pipeline_version_id", ""))
            if key not in self._pipeline_versions:
                user = f"PipelineVersion {key[1]} not found"
                raise ApiError(NOT_FOUND, f"Failed to create a new run: Failed to create a run: "
                                          f"ResourceNotFoundError: {user}", user)
            pipeline_id = key[0]
        elif "pipeline_spec" in data:
            problem = _pipeline_spec_problem(data["pipeline_spec"])
            if problem:
                raise _invalid(f"Failed to create a new run: Failed to create a run: Invalid input error: "
                               f"{problem}", problem)
        else:
            user = "Failed to create a run due to empty pipeline spec and pipeline version reference"
            raise _invalid(f"Failed to create a new run: Invalid input error: {user}", user)
        experiment_id = data.get("experiment_id") or query.get("experiment_id", "")
        if experiment_id:
            experiment = self._experiment(
                experiment_id, "Failed to create a new run: Failed to create a run due to invalid "
                               "experimentId and namespace combination: Failed to get experiment")
        elif self.multi_user:
            raise _invalid("Failed to create a new run: Invalid input error: A run cannot have an empty "
                           "namespace in multi-user mode",
                           "A run cannot have an empty namespace in multi-user mode")
        else:
            experiment = self._default_experiment()
        if experiment["storage_state"] == "ARCHIVED":
            user = f"Experiment {experiment['experiment_id']} is archived"
            raise ApiError(9, f"Failed to create a new run: {user}", user)
        now = self.now()
        run: dict[str, Any] = {
            "run_id": str(uuid.uuid4()),
            "experiment_id": experiment["experiment_id"],
            "display_name": data["display_name"],
            "description": data.get("description", ""),
            "service_account": data.get("service_account") or DEFAULT_SERVICE_ACCOUNT,
            "storage_state": "AVAILABLE",
            "created_at": now, "scheduled_at": now, "finished_at": 0,
            "state": "PENDING",
            "state_history": [{"update_time": now, "state": "PENDING"}],
            "_namespace": experiment["namespace"],
            "_pipeline_id": pipeline_id,
        }
        for name in ("pipeline_spec", "pipeline_version_reference"):
            if name in data:
                run[name] = data[name]
        config = data.get("runtime_config") or {}
        if config.get("parameters") or config.get("pipeline_root"):
            run["runtime_config"] = config
        self._runs[run["run_id"]] = run
        experiment["last_run_created_at"] = now
        return render("V2beta1Run", run)

    def _get_run(self, run_id: str, query: dict[str, str]) -> dict:
        return render("V2beta1Run", self._run(run_id, "Failed to get a run"))

    def _delete_run(self, run_id: str, query: dict[str, str]) -> dict:
        self._run(run_id, "Failed to delete a run")
        del self._runs[run_id]
        return {}

    def _terminate_run(self, run_id: str, query: dict[str, str]) -> dict:
        run = self._run(run_id, "Failed to terminate a run")
        if run.get("state", "RUNTIME_STATE_UNSPECIFIED") not in TERMINABLE_STATES:
            user = f"Failed to terminate run {run_id}. Row not found."
            raise _invalid(f"Failed to terminate a run: Invalid input error: {user}", user)
        self.set_run_state(run_id, "CANCELING")
        return {}

    def _archive_run(self, run_id: str, query: dict[str, str]) -> dict:
        self._run(run_id, "Failed to archive a run")["storage_state"] = "ARCHIVED"
        return {}

    def _unarchive_run(self, run_id: str, query: dict[str, str]) -> dict:
        run = self._run(run_id, "Failed to unarchive a run")
        experiment = self._experiments.get(run["experiment_id"])
        if experiment is not None and experiment["storage_state"] == "ARCHIVED":
            user = f"Failed to unarchive run {run_id} as experiment {experiment['experiment_id']} is archived"
            raise ApiError(9, f"Failed to unarchive a run: {user}", user)
        run["storage_state"] = "AVAILABLE"
        return {}


def _pipeline_name(run: dict) -> str:
    spec = run.get("pipeline_spec") or {}
    spec = spec.get("pipeline_spec", spec)
    return ((spec.get("pipelineInfo") or {}).get("name")) or ""


def _pipeline_spec_problem(spec: dict) -> str:
    """Why the API server's template parser would refuse this inline spec ('' if it would not)."""
    if "pipeline_spec" in spec:  # the pipeline spec + platform spec form of kfp-kubernetes
        unknown = set(spec) - {"pipeline_spec", "platform_spec"}
        if unknown:
            return f"unknown keys next to pipeline_spec: {sorted(unknown)}"
        spec = spec["pipeline_spec"]
        if not isinstance(spec, dict):
            return "pipeline_spec must be an object"
    info = spec.get("pipelineInfo")
    if not isinstance(info, dict) or not info.get("name"):
        return "invalid v2 pipeline spec: pipelineInfo.name is empty"
    if not isinstance(spec.get("root"), dict):
        return "invalid v2 pipeline spec: root is missing"
    return ""


def _handler_for(fake: KfpFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients with a Session expect
        server_version = "kfp-fake"
        # One send per answer and no Nagle: otherwise delayed ACKs add ~40 ms to each request.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            status, body = fake.handle(self.command, split.path, parse_qs(split.query, keep_blank_values=True),
                                       dict(self.headers.items()), raw)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        def setup(self) -> None:
            super().setup()
            with fake._lock:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake._connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("kfp-fake: " + format, *args)

    return Handler


__all__ = ["KfpFake", "KfpRequest", "ApiError", "MESSAGES", "ENUMS", "ONEOFS", "RUNTIME_STATES",
           "TERMINAL_STATES", "decode", "render"]
