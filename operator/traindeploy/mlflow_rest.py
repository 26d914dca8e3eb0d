"""MLflow tracking and registry over REST, one client per TrainDeploy.

Why not `MlflowClient`: it reads the server address and credentials from process-wide environment
variables, and its retries (7 tries, 120 s timeout by default) are tuned for scripts, not for an
operator. One operator serves many TrainDeploys, each with its own credentials Secret, and a
reconcile must fail fast and back off through kopf. So this module speaks the REST API of
MLflow 3.x (checked against the 3.17.2 server) with `requests`:

- every request has an explicit timeout;
- only reads are retried, a bounded number of times with exponential backoff; a write that times
  out is not retried here, because the caller's next reconcile finds what it made (find, then
  create) and a blind retry could make it twice;
- failures are classified: `MlflowUnavailable` (try again later) or `MlflowApiError` (the server
  answered no; `.error_code` says why);
- credentials travel in a header per request, never in the session, the URL, a log line or an
  exception message.

Dicts returned here are normalised (plain keys, tags as a dict, metrics as floats), so callers do
not depend on the protobuf JSON shapes.
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from traindeploy import metrics
from traindeploy.secrets import MLFLOW_SECRET_KEYS as SECRET_KEYS
from traindeploy.secrets import decode_data

log = logging.getLogger(__name__)

API_PREFIX = "/api/2.0/mlflow"

# Server messages can quote SQL and stack traces; status conditions only need the gist.
_MAX_MESSAGE = 300
# Pages of search results read before giving up: a find that stops early could make the caller
# create a duplicate, so running past this is an error, not a silent "not found".
_MAX_PAGES = 50
_PAGE_SIZE = 1000
_LOGGED_MODEL_PAGE_SIZE = 100
_USER_AGENT = "traindeploy-operator"

# What MLflow's own client assumes when an error body has no error_code.
_CODE_FOR_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_CONFLICT",
}

# Error codes MLflow's server sends for a failure of its own store, not of the request: a locked
# database is TEMPORARILY_UNAVAILABLE (HTTP 503), and every other SQLAlchemy error (a full
# connection pool: "QueuePool limit ... reached") is BAD_REQUEST with HTTP 400
# (mlflow/store/db/utils.py, `_get_managed_session_maker`). The tracking and registry endpoints the
# operator calls raise BAD_REQUEST for nothing else, so a stated BAD_REQUEST is retried later.
_STORE_FAILURE_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "BAD_REQUEST"})

_LOGGED_MODEL_STATUS = {
    "LOGGED_MODEL_STATUS_UNSPECIFIED": "UNSPECIFIED",
    "LOGGED_MODEL_PENDING": "PENDING",
    "LOGGED_MODEL_READY": "READY",
    "LOGGED_MODEL_UPLOAD_FAILED": "FAILED",
}


class MlflowUnavailable(Exception):
    """The server could not be reached or was overloaded (refused, reset, timeout, 5xx, 429).

    Transient by nature: the caller backs off and reconciles again later. `retry_after` is the
    server's Retry-After in seconds (0 when it sent none).
    """

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MlflowApiError(Exception):
    """The server answered with a non-2xx status that retrying will not change."""

    def __init__(self, message: str, *, error_code: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status


class MlflowUnauthorized(MlflowApiError):
    """HTTP 401/403: the credentials are missing, wrong or lack a permission. Not final: a fixed
    Secret makes the same request succeed."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a TrainDeploy's credentials Secret holds. The repr names what is set, never values.

    Precedence follows MLflow's client (so the operator and the trainer pods, which read the same
    Secret through environment variables, act as the same identity): basic auth when both username
    and password are set, else a bearer token.
    """

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        shown = [f"{name}=<redacted>" for name in ("token", "username", "password") if getattr(self, name)]
        return f"Credentials({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> "Credentials":
        """Read a Kubernetes Secret's `.data` (base64 values) with the MLFLOW_TRACKING_* keys."""
        values = decode_data(data, SECRET_KEYS)
        return cls(token=values.get("MLFLOW_TRACKING_TOKEN"), username=values.get("MLFLOW_TRACKING_USERNAME"),
                   password=values.get("MLFLOW_TRACKING_PASSWORD"))

    def headers(self) -> dict[str, str]:
        """The Authorization header, built here so its value is always valid ASCII.

        requests would raise an error quoting the whole header (the secret) for a value with a
        newline, which is what a Secret made with `echo` holds; so such values are refused first,
        with a message that names the key only.
        """
        if self.username and self.password:
            pair = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        if self.token:
            if not (self.token.isascii() and self.token.isprintable() and self.token.strip() == self.token
                    and " " not in self.token):
                raise ValueError("MLFLOW_TRACKING_TOKEN has whitespace, control or non-ASCII characters; "
                                 "fix the credentials Secret")
            return {"Authorization": f"Bearer {self.token}"}
        return {}


def _base_url(tracking_uri: str) -> str:
    """http(s)://host[:port][/prefix] without a trailing slash, query or fragment."""
    parts = urllib.parse.urlsplit(tracking_uri.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("MLflow tracking URI must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would end up in status, events and logs.
        raise ValueError("MLflow tracking URI must not contain credentials; use the credentials Secret")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def mlflow_artifacts_to_storage(uri: str, destination: str) -> str:
    """Map `mlflow-artifacts:/<path>` to where the server stores it (`--artifacts-destination`).

    With a proxied artifact store, both a LoggedModel's artifact_location and a version's download
    URI are `mlflow-artifacts:/...`, which only the MLflow server can resolve; KServe's storage
    initializer needs the real location. Other URIs are returned unchanged.
    """
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "mlflow-artifacts":
        return uri
    return destination.rstrip("/") + "/" + parsed.path.lstrip("/")


# --- search filters --------------------------------------------------------------------------


def _quote_key(key: str) -> str | None:
    """`key` or `` `key` `` as MLflow's filter parser reads it; None if it cannot be written."""
    if key.replace("_", "").isalnum() and key.isascii():
        return key
    if "`" in key:
        return None
    return f"`{key}`"


def _quote_value(value: str) -> str | None:
    """A literal MLflow's filter parser reads back unchanged, or None when none exists.

    The parser strips the outer quotes and does no unescaping, so a value can only be written
    with a quote character it does not contain; a trailing backslash would escape the closing
    quote. Values that cannot be written are matched on the client instead.
    """
    if value.endswith("\\"):
        return None
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _filter(attributes: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """AND-ed equality clauses for what can be written; the rest is checked on the client."""
    clauses = []
    for key, value in attributes.items():
        literal = _quote_value(value)
        if literal is not None:
            clauses.append(f"{key} = {literal}")
    for key, value in tags.items():
        quoted_key, literal = _quote_key(key), _quote_value(value)
        if quoted_key is not None and literal is not None:
            clauses.append(f"tags.{quoted_key} = {literal}")
    return " AND ".join(clauses)


def _has_tags(found: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(found.get(key) == value for key, value in wanted.items())


# --- normalising the wire shapes -------------------------------------------------------------


def _key_values(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {item["key"]: item.get("value", "") for item in items or []}


def _latest_metrics(items: list[dict[str, Any]] | None) -> dict[str, float]:
    """Key -> latest value. The server already sends one per key; guard anyway by (step, time)."""
    best: dict[str, tuple[int, int, float]] = {}
    for item in items or []:
        # Protobuf JSON writes NaN and infinities as strings; float() reads both forms.
        entry = (int(item.get("step", 0)), int(item.get("timestamp", 0)), float(item.get("value", 0.0)))
        key = item["key"]
        if key not in best or entry[:2] >= best[key][:2]:
            best[key] = entry
    return {key: entry[2] for key, entry in best.items()}


def _run(raw: dict[str, Any]) -> dict[str, Any]:
    info, data = raw.get("info", {}), raw.get("data", {})
    outputs = raw.get("outputs", {}).get("model_outputs", [])
    return {
        "run_id": info.get("run_id") or info.get("run_uuid", ""),
        "run_name": info.get("run_name", ""),
        "experiment_id": info.get("experiment_id", ""),
        "status": info.get("status", ""),
        "lifecycle_stage": info.get("lifecycle_stage", ""),
        "start_time": int(info.get("start_time", 0)),
        "end_time": int(info["end_time"]) if "end_time" in info else None,
        "artifact_uri": info.get("artifact_uri", ""),
        "metrics": _latest_metrics(data.get("metrics")),
        "params": _key_values(data.get("params")),
        "tags": _key_values(data.get("tags")),
        "model_outputs": [output["model_id"] for output in outputs if output.get("model_id")],
    }


def _logged_model(raw: dict[str, Any]) -> dict[str, Any]:
    info = raw.get("info", {})
    status = info.get("status", "LOGGED_MODEL_STATUS_UNSPECIFIED")
    return {
        "model_id": info.get("model_id", ""),
        "name": info.get("name", ""),
        "experiment_id": info.get("experiment_id", ""),
        # The entity calls it artifact_location; the wire calls it artifact_uri.
        "artifact_location": info.get("artifact_uri", ""),
        "status": _LOGGED_MODEL_STATUS.get(status, status),
        "source_run_id": info.get("source_run_id", ""),
        "creation_timestamp": int(info.get("creation_timestamp_ms", 0)),
        "tags": _key_values(info.get("tags")),
    }


def _model_id_from_source(source: str) -> str | None:
    """`models:/m-...` names a LoggedModel; `models:/<name>/<version>` does not."""
    if source.startswith("models:/"):
        rest = source[len("models:/"):]
        if rest.startswith("m-") and "/" not in rest and "@" not in rest:
            return rest
    return None


def _model_version(raw: dict[str, Any]) -> dict[str, Any]:
    source = raw.get("source", "")
    return {
        "name": raw.get("name", ""),
        "version": str(raw.get("version", "")),
        "status": raw.get("status", ""),
        "status_message": raw.get("status_message", ""),
        "source": source,
        "run_id": raw.get("run_id", ""),
        # The 3.17.2 SQL store does not keep model_id, so recover it from a models:/ source.
        "model_id": raw.get("model_id") or _model_id_from_source(source),
        "description": raw.get("description", ""),
        "creation_timestamp": int(raw.get("creation_timestamp", 0)),
        "tags": _key_values(raw.get("tags")),
        "aliases": list(raw.get("aliases", [])),
    }


def _field(payload: dict[str, Any], key: str, endpoint: str) -> Any:
    """`payload[key]`, or INVALID_RESPONSE when a proxy or another server answered 2xx without it."""
    if key not in payload:
        raise MlflowApiError(f"{endpoint}: answer has no {key!r}; is the tracking URI an MLflow server?",
                             error_code="INVALID_RESPONSE")
    return payload[key]


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": str(value)} for key, value in tags.items()]


# --- the client ------------------------------------------------------------------------------


class MlflowRest:
    """A synchronous MLflow REST client for one tracking URI and one set of credentials."""

    def __init__(self, tracking_uri: str, credentials: Credentials | None = None, *,
                 timeout: float = 10.0, session: requests.Session | None = None,
                 retries: int = 2, backoff: float = 0.5, max_backoff: float = 5.0) -> None:
        self._base = _base_url(tracking_uri)
        # Built (and checked) once, sent per request: a shared session must not carry one
        # TrainDeploy's credentials into another's requests.
        self._auth_headers = (credentials or Credentials()).headers()
        self._timeout = timeout
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._retries = max(0, retries)
        self._backoff = backoff
        self._max_backoff = max_backoff

    def __repr__(self) -> str:
        return f"MlflowRest({self._base!r}, auth={'yes' if self._auth_headers else 'no'})"

    @property
    def base_url(self) -> str:
        return self._base

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> "MlflowRest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ---

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 body: Mapping[str, Any] | None = None, read: bool) -> dict[str, Any]:
        """One call with classification; reads are retried with capped exponential backoff."""
        url = self._base + path
        attempts = 1 + (self._retries if read else 0)
        for attempt in range(attempts):
            try:
                return self._once(method, url, path, params, body)
            except MlflowUnavailable as exc:
                if attempt + 1 >= attempts:
                    raise
                delay = min(self._backoff * 2 ** attempt, self._max_backoff)
                delay = max(delay, min(exc.retry_after, self._max_backoff))
                log.warning("MLflow %s %s unavailable (%s); retry %d/%d in %.1fs",
                            method, path, exc, attempt + 1, attempts - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _once(self, method: str, url: str, path: str, params: Mapping[str, Any] | None,
              body: Mapping[str, Any] | None) -> dict[str, Any]:
        with metrics.dependency_request("mlflow") as outcome:
            try:
                return self._once_unmeasured(method, url, path, params, body)
            except MlflowUnavailable:
                outcome["result"] = "unavailable"
                raise
            except MlflowUnauthorized:
                outcome["result"] = "unauthorized"
                raise
            except MlflowApiError as exc:
                outcome["result"] = "not_found" if exc.status == 404 else "refused"
                raise

    def _once_unmeasured(self, method: str, url: str, path: str, params: Mapping[str, Any] | None,
                         body: Mapping[str, Any] | None) -> dict[str, Any]:
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT, **self._auth_headers}
        started = time.monotonic()
        try:
            response = self._session.request(method, url, params=params, json=body, headers=headers,
                                             timeout=self._timeout)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            # Refused, reset (also mid-body), TLS, timeouts. The text names host, port and path
            # (no credentials: they are never in the URL).
            raise MlflowUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except requests.RequestException as exc:
            # Other request errors may quote headers; name the kind only and drop the chain.
            raise MlflowApiError(f"{method} {path}: request failed ({type(exc).__name__})",
                                 error_code="REQUEST_FAILED") from None
        elapsed_ms = (time.monotonic() - started) * 1000
        log.debug("MLflow %s %s -> %d in %.0f ms", method, path, response.status_code, elapsed_ms)
        status = response.status_code
        if 200 <= status < 300:
            if not response.content:
                return {}
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                raise MlflowApiError(f"{method} {path}: HTTP {status} without a JSON object; "
                                     "is the tracking URI an MLflow server?",
                                     error_code="INVALID_RESPONSE", status=status)
            return payload
        error_code, message, stated = self._error_details(response)
        text = f"{method} {path}: HTTP {status} {error_code}" + (f": {message}" if message else "")
        if status == 429 or status >= 500 or (stated and error_code in _STORE_FAILURE_CODES):
            raise MlflowUnavailable(text, retry_after=_retry_after(response))
        if status in (401, 403):
            raise MlflowUnauthorized(text, error_code=error_code, status=status)
        raise MlflowApiError(text, error_code=error_code, status=status)

    @staticmethod
    def _error_details(response: requests.Response) -> tuple[str, str, bool]:
        """The error code, the message, and whether the server stated the code (a body without
        one, an HTML page from a proxy, gets the code MLflow's client assumes for the status)."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("error_code"):
            message = str(payload.get("message", ""))
            if len(message) > _MAX_MESSAGE:
                message = message[:_MAX_MESSAGE] + "..."
            return str(payload["error_code"]), message, True
        status = response.status_code
        return _CODE_FOR_STATUS.get(status, "INTERNAL_ERROR" if status >= 500 else f"HTTP_{status}"), "", False

    def _get(self, endpoint: str, **params: Any) -> dict[str, Any]:
        return self._request("GET", f"{API_PREFIX}/{endpoint}", params=params, read=True)

    def _post(self, endpoint: str, body: Mapping[str, Any], *, read: bool = False) -> dict[str, Any]:
        return self._request("POST", f"{API_PREFIX}/{endpoint}", body=body, read=read)

    def _search(self, method: str, endpoint: str, request: dict[str, Any],
                items: str) -> Iterator[dict[str, Any]]:
        """Every result of a paged search, reading at most _MAX_PAGES pages."""
        for _ in range(_MAX_PAGES):
            if method == "GET":
                page = self._get(endpoint, **request)
            else:
                page = self._post(endpoint, request, read=True)
            yield from page.get(items, [])
            token = page.get("next_page_token")
            if not token:
                return
            request = {**request, "page_token": token}
        raise MlflowApiError(f"{endpoint}: more than {_MAX_PAGES} pages of results; narrow the search",
                             error_code="TOO_MANY_RESULTS")

    # --- health ---

    def health(self) -> bool:
        """True when the server answers GET /health with 200 (one try: a probe, not a reconcile)."""
        try:
            response = self._session.get(self._base + "/health", headers={"User-Agent": _USER_AGENT},
                                         timeout=self._timeout)
        except requests.RequestException as exc:
            log.debug("MLflow health check failed: %s", type(exc).__name__)
            return False
        return response.status_code == 200

    # --- experiments and runs ---

    def ensure_experiment(self, name: str) -> tuple[str, bool]:
        """Experiment id for `name`, and whether this call created it (a new experiment holds no
        runs to look for). Created first, read when it exists: a new TrainDeploy's experiment
        never exists, so reading first would cost a request on every first cycle. Safe when two
        reconciles create it at the same moment."""
        try:
            created = self._post("experiments/create", {"name": name})
            return str(_field(created, "experiment_id", "experiments/create")), True
        except MlflowApiError as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        experiment = self._experiment_by_name(name)
        if experiment is None:
            raise MlflowApiError(f"experiment {name!r} exists but cannot be read",
                                 error_code="RESOURCE_DOES_NOT_EXIST")
        if experiment.get("lifecycle_stage") == "deleted":
            # A deleted experiment keeps its name; new runs in it are refused.
            raise MlflowApiError(f"experiment {name!r} is deleted; restore it or choose another name",
                                 error_code="INVALID_STATE")
        return str(experiment["experiment_id"]), False

    def _experiment_by_name(self, name: str) -> dict[str, Any] | None:
        try:
            found = self._get("experiments/get-by-name", experiment_name=name)
            return _field(found, "experiment", "experiments/get-by-name")
        except MlflowApiError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def find_run(self, experiment_id: str, tags: dict[str, str]) -> dict[str, Any] | None:
        """The oldest active run carrying all `tags`: the one a restarted operator adopts.

        Oldest first (start_time, then run_id as the server orders ties), so every reconcile
        picks the same run even if a race once made two.
        """
        request = {
            "experiment_ids": [experiment_id],
            "filter": _filter({}, tags),
            "run_view_type": "ACTIVE_ONLY",
            "max_results": _PAGE_SIZE,
            "order_by": ["attributes.start_time ASC"],
        }
        for raw in self._search("POST", "runs/search", request, "runs"):
            run = _run(raw)
            if _has_tags(run["tags"], tags):
                return run
        return None

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> dict[str, Any]:
        """A RUNNING run with `tags`; start_time is set so find_run's oldest-first order holds."""
        body = {"experiment_id": experiment_id, "run_name": run_name,
                "start_time": int(time.time() * 1000), "tags": _tag_list(tags)}
        return _run(_field(self._post("runs/create", body), "run", "runs/create"))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return _run(_field(self._get("runs/get", run_id=run_id), "run", "runs/get"))

    def end_run(self, run_id: str, status: str = "KILLED") -> None:
        """Ends a run that is still RUNNING (its cycle was superseded or its TrainDeploy deleted);
        a run that already ended keeps its own status."""
        if self.get_run(run_id).get("status") != "RUNNING":
            return
        self._post("runs/update", {"run_id": run_id, "status": status, "end_time": int(time.time() * 1000)})

    def logged_model_for_run(self, run: dict[str, Any], name: str | None = None) -> dict[str, Any] | None:
        """The MLflow 3 LoggedModel the run produced, READY ones first, then the newest.

        Looks for models whose source_run_id is the run (what `log_model` inside the run makes),
        then falls back to the run's outputs. `name` is the `name=` given to `log_model`. `run`
        needs `run_id` and `experiment_id`; without `model_outputs` the run is read for the
        fallback only, so a caller that knows both ids need not read it first.
        """
        attributes = {"source_run_id": run["run_id"]}
        if name is not None:
            attributes["name"] = name
        request = {"experiment_ids": [run["experiment_id"]], "filter": _filter(attributes, {}),
                   "max_results": _LOGGED_MODEL_PAGE_SIZE}
        found = self._search("POST", "logged-models/search", request, "models")
        candidates = [model for model in map(_logged_model, found) if model["source_run_id"] == run["run_id"]]
        if not candidates:
            outputs = run["model_outputs"] if "model_outputs" in run else \
                self.get_run(run["run_id"]).get("model_outputs", [])
            for model_id in outputs:
                try:
                    endpoint = f"logged-models/{urllib.parse.quote(model_id, safe='')}"
                    candidates.append(_logged_model(_field(self._get(endpoint), "model", endpoint)))
                except MlflowApiError as exc:
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
        if name is not None:
            candidates = [model for model in candidates if model["name"] == name]
        if not candidates:
            return None
        return max(candidates, key=lambda model: (model["status"] == "READY", model["creation_timestamp"]))

    # --- registry ---

    def ensure_registered_model(self, name: str, description: str = "") -> None:
        """Create the registered model unless it exists (one request either way); concurrent
        creators both succeed."""
        body: dict[str, Any] = {"name": name}
        if description:
            body["description"] = description
        try:
            self._post("registered-models/create", body)
        except MlflowApiError as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def find_model_version(self, name: str, tags: dict[str, str]) -> dict[str, Any] | None:
        """The lowest-numbered version of `name` carrying all `tags`, aliases included."""
        request = {"filter": _filter({"name": name}, tags), "max_results": _PAGE_SIZE,
                   "order_by": ["version_number ASC"]}
        for raw in self._search("GET", "model-versions/search", request, "model_versions"):
            version = _model_version(raw)
            if version["name"] == name and _has_tags(version["tags"], tags):
                # Search results leave out aliases; a get fills them in.
                return self.get_model_version(name, version["version"])
        return None

    def create_model_version(self, name: str, source: str, run_id: str, *, model_id: str | None,
                             tags: dict[str, str], description: str = "") -> dict[str, Any]:
        """Register `source`. For a LoggedModel pass source `models:/<model_id>` and its model_id.

        The 3.17.2 server refuses a `models:/<id>` source without a matching model_id.
        """
        body: dict[str, Any] = {"name": name, "source": source, "tags": _tag_list(tags)}
        if run_id:
            body["run_id"] = run_id
        if model_id:
            body["model_id"] = model_id
        if description:
            body["description"] = description
        created = self._post("model-versions/create", body)
        return _model_version(_field(created, "model_version", "model-versions/create"))

    def get_model_version(self, name: str, version: str) -> dict[str, Any]:
        raw = self._get("model-versions/get", name=name, version=str(version))
        return _model_version(_field(raw, "model_version", "model-versions/get"))

    def download_uri(self, name: str, version: str) -> str:
        """Where the version's files are (a `mlflow-artifacts:/` URI when the server proxies them)."""
        raw = self._get("model-versions/get-download-uri", name=name, version=str(version))
        return str(_field(raw, "artifact_uri", "model-versions/get-download-uri"))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` at `version`; an alias names one version, so this moves it."""
        self._post("registered-models/alias", {"name": name, "alias": alias, "version": str(version)})

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version `alias` points to, or None when there is no such alias (or model).

        The server answers an unknown alias with INVALID_PARAMETER_VALUE (HTTP 400), not
        RESOURCE_DOES_NOT_EXIST, which it uses for an unknown registered model.
        """
        try:
            raw = self._get("registered-models/alias", name=name, alias=alias)
        except MlflowApiError as exc:
            if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise
        return str(_field(raw, "model_version", "registered-models/alias")["version"])

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._post("model-versions/set-tag",
                   {"name": name, "version": str(version), "key": key, "value": str(value)})


def _retry_after(response: requests.Response) -> float:
    """Seconds from a numeric Retry-After header; 0 when absent or a date."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0
