"""The pipeline stage's Kubeflow Pipelines client: REST `/apis/v2beta1`, synchronous, `requests` only.

Why not `kfp.Client`: it pulls the whole SDK into the operator image, its constructor calls healthz
with 5 s sleeps, and its waits never end for a CANCELED run. The operator needs six calls, each with
a timeout, and a clear split between "try again later" and "this is wrong":

- `KfpUnavailable`: no answer, a timeout, HTTP 5xx or 429. The reconcile backs off and retries.
- `KfpError`: any other non-2xx answer, with the server's google.rpc.Status message.

Idempotent GETs are retried a few times with a short backoff; POSTs are tried once, because the
reconcile loop is the retry: it looks the run up by its deterministic display name (`find_run`)
before it creates one (`create_run`), so a create whose answer was lost is found next time.

The bearer token goes into one request header and nowhere else: not into logs, messages or repr.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

import requests
import yaml

from traindeploy import metrics
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED, ChildState

log = logging.getLogger(__name__)

API_PREFIX = "/apis/v2beta1"
# V2beta1PredicateOperation EQUALS, sent as a number like kfp.Client does.
_EQUALS = 1
# gRPC code names for messages (google.rpc.Code).
_CODE_NAMES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}
_MAX_MESSAGE = 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class KfpUnavailable(Exception):
    """KFP did not answer usefully (connection refused, timeout, 5xx, 429): back off, retry later."""


class KfpError(Exception):
    """KFP answered with a real error (4xx). `status` is the HTTP status, `code` the gRPC code."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class KfpClient:
    """Synchronous client for the few KFP v2beta1 calls a pipeline stage needs."""

    GET_ATTEMPTS = 3          # bounded: 3 tries, sleeps 0.2 s then 0.4 s
    BACKOFF_SECONDS = 0.2
    PAGE_SIZE = 100
    MAX_PAGES = 100           # a broken server handing out tokens forever cannot hang a reconcile

    def __init__(self, endpoint: str, *, token: str | None = None, timeout: float = 10.0,
                 session: requests.Session | None = None) -> None:
        base = endpoint.strip().rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"KFP endpoint must be an http(s) URL, got {endpoint!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoint = base
        self._api = base + API_PREFIX
        self._token = token
        self._timeout = timeout
        self._session = session or requests.Session()
        self._owns_session = session is None

    def __repr__(self) -> str:
        return f"KfpClient({self.endpoint!r}, token={'set' if self._token else 'none'})"

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> "KfpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls --

    def healthz(self) -> dict:
        """`{multi_user, pipeline_store, ...}`; a cheap reachability and auth check."""
        return self._request("GET", "/healthz")

    def ensure_experiment(self, display_name: str, namespace: str | None = None,
                          description: str = "") -> str:
        """The id of the experiment with this display name, created if missing. Safe to call on
        every reconcile: a create that races another one (409) is answered by looking again."""
        found = self._find_experiment(display_name, namespace)
        if found is not None:
            return found["experiment_id"]
        body: dict[str, Any] = {"display_name": display_name}
        if description:
            body["description"] = description
        if namespace:
            body["namespace"] = namespace
        try:
            created = self._request("POST", "/experiments", body=body)
        except KfpError as err:
            if err.status != 409:
                raise
            found = self._find_experiment(display_name, namespace)
            if found is None:
                raise
            return found["experiment_id"]
        experiment_id = created.get("experiment_id")
        if not experiment_id:
            raise KfpError(f"KFP created experiment {display_name!r} but returned no experiment_id")
        log.info("Created KFP experiment %r (%s)", display_name, experiment_id)
        return experiment_id

    def find_run(self, experiment_id: str, display_name: str) -> dict | None:
        """The newest run in the experiment whose display name is exactly this one, or None.
        The server's EQUALS ignores case, so the match is checked again here."""
        best: dict | None = None
        params = {
            "experiment_id": experiment_id,
            "filter": _equals_filter("display_name", display_name),
            "sort_by": "created_at desc",
        }
        for run in self._list("/runs", "runs", params):
            if run.get("display_name") != display_name:
                continue
            if best is None or _created(run) > _created(best):
                best = run
        return best

    def create_run(self, experiment_id: str, display_name: str, pipeline_spec: dict,
                   parameters: dict, description: str = "") -> dict:
        """Start a run of an inline compiled pipeline (as `load_pipeline_package` returns it) with
        `runtime_config.parameters`; returns the V2beta1Run. Tried once: see the module doc."""
        body: dict[str, Any] = {
            "display_name": display_name,
            "experiment_id": experiment_id,
            "pipeline_spec": pipeline_spec,
            "runtime_config": {"parameters": dict(parameters or {})},
        }
        if description:
            body["description"] = description
        run = self._request("POST", "/runs", body=body)
        if not run.get("run_id"):
            raise KfpError(f"KFP created run {display_name!r} but returned no run_id")
        log.info("Created KFP run %r (%s) in experiment %s", display_name, run["run_id"], experiment_id)
        return run

    def get_run(self, run_id: str) -> dict:
        return self._request("GET", f"/runs/{quote(run_id, safe='')}")

    def terminate_run(self, run_id: str) -> None:
        """Ask KFP to stop the run. A run that has already finished or is already being canceled
        counts as done: KFP answers 400 for those, which is not an error for the caller."""
        try:
            self._request("POST", f"/runs/{quote(run_id, safe='')}:terminate")
        except KfpError as err:
            if err.status != 400:
                raise
            state = self.get_run(run_id).get("state", "")
            if state not in ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED", "CANCELING"):
                raise
        log.info("Terminated KFP run %s", run_id)

    # -- plumbing --

    def _find_experiment(self, display_name: str, namespace: str | None) -> dict | None:
        params = {"filter": _equals_filter("display_name", display_name)}
        if namespace:
            params["namespace"] = namespace
        folded = None
        for experiment in self._list("/experiments", "experiments", params):
            name = experiment.get("display_name", "")
            if name == display_name:
                return experiment
            if folded is None and name.lower() == display_name.lower():
                folded = experiment  # KFP's name index ignores case: this one blocks a create
        return folded

    def _list(self, path: str, key: str, params: dict[str, str]) -> Iterator[dict]:
        """Every item of a list call, following next_page_token (sent with the same filter and
        sort, as the server requires)."""
        params = {**params, "page_size": str(self.PAGE_SIZE)}
        for _ in range(self.MAX_PAGES):
            page = self._request("GET", path, params=params)
            yield from page.get(key) or []  # an empty list is left out of the JSON
            token = page.get("next_page_token")
            if not token:
                return
            params = {**params, "page_token": token}
        raise KfpError(f"KFP {path} listing did not end after {self.MAX_PAGES} pages")

    def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                 body: dict | None = None) -> dict:
        url = self._api + path
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        attempts = self.GET_ATTEMPTS if method == "GET" else 1
        failure: KfpUnavailable | None = None
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                response = self._session.request(
                    method, url, params=params, json=body, headers=headers,
                    timeout=self._timeout, allow_redirects=False)
            except requests.Timeout:
                failure = KfpUnavailable(f"KFP {method} {path}: no answer within {self._timeout:g}s")
                _measure("unavailable", started)
            except requests.ConnectionError as exc:
                failure = KfpUnavailable(f"KFP {method} {path}: cannot connect to {self.endpoint}: "
                                         f"{_root_cause(exc)}")
                _measure("unavailable", started)
            except requests.RequestException as exc:
                failure = KfpUnavailable(f"KFP {method} {path}: {type(exc).__name__}")
                _measure("unavailable", started)
            else:
                _measure(_result_of(response.status_code), started)
                log.debug("KFP %s %s -> %s in %.2fs", method, path, response.status_code,
                          time.monotonic() - started)
                status = response.status_code
                if 200 <= status < 300:
                    return _json_object(response, method, path)
                detail = _error_message(response)
                if status == 429 or status >= 500:
                    failure = KfpUnavailable(f"KFP {method} {path}: HTTP {status}{detail}")
                elif 300 <= status < 400:
                    raise KfpError(f"KFP {method} {path}: HTTP {status} redirect to "
                                   f"{response.headers.get('Location', '?')} (an authenticating proxy "
                                   f"in front of KFP? use the in-cluster API endpoint or a token)",
                                   status=status)
                else:
                    raise KfpError(f"KFP {method} {path}: HTTP {status}{detail}", status=status,
                                   code=_error_code(response))
            if attempt < attempts:
                delay = self.BACKOFF_SECONDS * 2 ** (attempt - 1)
                log.debug("%s; retry %d/%d in %.1fs", failure, attempt, attempts - 1, delay)
                time.sleep(delay)
        assert failure is not None
        raise failure


def _result_of(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    if status == 429 or status >= 500:
        return "unavailable"
    return "not_found" if status == 404 else "refused"


def _measure(result: str, started: float) -> None:
    """Each request (each attempt of a retried read) in traindeploy_dependency_request_duration_seconds."""
    metrics.DEPENDENCY_REQUESTS.labels("kfp", result).observe(time.monotonic() - started)


def _equals_filter(key: str, value: str) -> str:
    """A V2beta1Filter as kfp.Client writes it: operation as a number, camelCase value key."""
    return json.dumps({"predicates": [{"operation": _EQUALS, "key": key, "stringValue": value}]})


def _created(run: dict) -> datetime:
    """created_at as a datetime (the epoch when absent or unreadable), for picking the newest."""
    text = str(run.get("created_at") or "")
    # Python's parser takes at most microseconds; protobuf JSON may carry nanoseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return _EPOCH
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}"[:300]


def _json_object(response: requests.Response, method: str, path: str) -> dict:
    if not response.content:
        return {}
    try:
        data = response.json()
    except ValueError:
        raise KfpError(f"KFP {method} {path}: HTTP {response.status_code} but the body is not JSON "
                       f"({response.headers.get('Content-Type', 'no content type')}); is the endpoint "
                       f"the KFP API server?", status=response.status_code) from None
    if not isinstance(data, dict):
        raise KfpError(f"KFP {method} {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _status_body(response: requests.Response) -> dict | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error_code(response: requests.Response) -> int | None:
    body = _status_body(response)
    code = body.get("code") if body else None
    return code if isinstance(code, int) else None


def _error_message(response: requests.Response) -> str:
    """': CODE_NAME: message' from a google.rpc.Status body, or a short text excerpt."""
    body = _status_body(response)
    if body is None:
        text = response.text.strip().replace("\n", " ")
        return f": {text[:200]}" if text else ""
    message = body.get("message") or body.get("error") or ""
    if not message:
        for detail in body.get("details") or []:
            if isinstance(detail, dict) and detail.get("message"):
                message = detail["message"]
                break
    code = body.get("code")
    name = _CODE_NAMES.get(code, "") if isinstance(code, int) else ""
    prefix = f": {name}" if name else ""
    return f"{prefix}: {str(message)[:_MAX_MESSAGE]}" if message else prefix


# -- compiled packages --------------------------------------------------------------------------

class _PackageLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings: a package must stay JSON for the run body."""


_PackageLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_pipeline_package(text: str) -> dict:
    """A compiled KFP v2 package (YAML or JSON) -> the `pipeline_spec` of a run body.

    One document is the PipelineSpec itself. Two documents (kfp-kubernetes adds a PlatformSpec
    after the PipelineSpec) become `{"pipeline_spec": ..., "platform_spec": ...}`, as kfp.Client
    sends them. Anything else raises ValueError saying what is wrong."""
    try:
        documents = [d for d in yaml.load_all(text, Loader=_PackageLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"pipeline package is not valid YAML or JSON: {exc}") from None
    if not documents:
        raise ValueError("pipeline package is empty")
    if len(documents) > 2:
        raise ValueError(f"pipeline package has {len(documents)} YAML documents; a compiled KFP v2 "
                         f"package has one (PipelineSpec) or two (PipelineSpec, PlatformSpec)")
    first = documents[0]
    if len(documents) == 1 and isinstance(first, dict) and "pipeline_spec" in first:
        # Already in the run-body form.
        unknown = set(first) - {"pipeline_spec", "platform_spec"}
        if unknown:
            raise ValueError(f"pipeline package has unknown keys next to pipeline_spec: {sorted(unknown)}")
        _check_pipeline_spec(first["pipeline_spec"])
        if "platform_spec" in first:
            _check_platform_spec(first["platform_spec"])
        return first
    _check_pipeline_spec(first)
    if len(documents) == 1:
        return first
    _check_platform_spec(documents[1])
    return {"pipeline_spec": first, "platform_spec": documents[1]}


def _check_pipeline_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        raise ValueError(f"pipeline package is not a compiled KFP v2 pipeline: expected a mapping, "
                         f"got {type(spec).__name__}")
    if str(spec.get("apiVersion", "")).startswith("argoproj.io") or spec.get("kind") == "Workflow":
        raise ValueError("pipeline package is an Argo Workflow (KFP v1 compiler output); compile the "
                         "pipeline with the KFP v2 SDK")
    info = spec.get("pipelineInfo")
    if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not info["name"]:
        raise ValueError("pipeline package is not a compiled KFP v2 pipeline: pipelineInfo.name is missing")
    if not isinstance(spec.get("root"), dict):
        raise ValueError("pipeline package is not a compiled KFP v2 pipeline: root is missing")
    version = spec.get("schemaVersion")
    if version is not None and not str(version).startswith("2."):
        raise ValueError(f"pipeline package has schemaVersion {version!r}; KFP v2 needs 2.x")


def _check_platform_spec(spec: Any) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("platforms"), dict):
        raise ValueError("the second document of the pipeline package is not a PlatformSpec "
                         "(a mapping with 'platforms')")


# -- run status ----------------------------------------------------------------------------------

_PHASES = {
    "PENDING": PENDING, "RUNTIME_STATE_UNSPECIFIED": PENDING,
    "RUNNING": RUNNING, "PAUSED": RUNNING, "CANCELING": RUNNING,
    "SUCCEEDED": SUCCEEDED, "SKIPPED": SUCCEEDED,
    "FAILED": FAILED, "CANCELED": FAILED,
}


def run_state(run: dict) -> ChildState:
    """Where a V2beta1Run stands. A missing state is RUNTIME_STATE_UNSPECIFIED (the server leaves
    zero enums out), which is still pending. Reasons are `Run` + the state in title case
    (RunRunning, RunFailed, RunCanceled); a failure's message is the run's error message."""
    state = run.get("state") or "RUNTIME_STATE_UNSPECIFIED"
    run_id = run.get("run_id", "")
    outputs = {"runId": run_id, "state": state}
    phase = _PHASES.get(state)
    if phase is None:
        return ChildState(PENDING, "RunStateUnknown", f"KFP run {run_id} reports unknown state {state}",
                          outputs)
    if state == "RUNTIME_STATE_UNSPECIFIED":
        return ChildState(PENDING, "RunPending", "", outputs)
    reason = "Run" + state.title()
    if phase != FAILED:
        return ChildState(phase, reason, "", outputs)
    message = ((run.get("error") or {}).get("message") or "").strip()
    if not message:
        for entry in reversed(run.get("state_history") or []):
            message = ((entry.get("error") or {}).get("message") or "").strip()
            if message:
                break
    if not message:
        message = f"KFP run {run_id} ended in state {state}"
    return ChildState(FAILED, reason, message[:_MAX_MESSAGE], outputs)


def run_url(ui_endpoint: str, run_id: str) -> str:
    """The KFP UI page of the run."""
    return f"{ui_endpoint.rstrip('/')}/#/runs/details/{run_id}"
