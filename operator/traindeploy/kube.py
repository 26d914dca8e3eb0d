"""The operator's few Kubernetes calls (sent by `traindeploy.apiserver`), each bounded by a
timeout, with the apiserver's answers sorted by type, as `k8s.io/apimachinery/pkg/api/errors`
does: by HTTP status and the Status object's `reason` and `details`, never by message text.

| error           | answer                                                   | what the operator does           |
|-----------------|----------------------------------------------------------|----------------------------------|
| NotFound        | 404 naming an object                                     | reads as "missing"               |
| KindNotServed   | 404 naming no object (no such resource: CRD missing)     | holds the cycle, backs off       |
| Forbidden       | 403                                                      | holds the cycle, backs off       |
| AlreadyExists   | 409 reason AlreadyExists                                 | reads what exists                |
| Conflict        | 409 (stale resourceVersion)                              | re-reads and recomputes at once  |
| Invalid         | 422, with the fields in `details.causes`                 | fails the cycle, naming the field|
| Refused         | any other 4xx (400, 413 too large, ...)                  | fails the cycle, keeping message |
| KubeUnavailable | 429, 5xx, connection errors                              | holds the cycle, backs off       |
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from traindeploy import metrics
from traindeploy.apiserver import ApiError, ApiServer, Kind, Unreachable
from traindeploy.diff import drift, without_nones
from traindeploy.secrets import decode_data

log = logging.getLogger(__name__)


class KubeError(Exception):
    """A request the apiserver did not carry out. `message` keeps the apiserver's own words."""

    def __init__(self, what: str, message: str, status: int | None = None, reason: str = "",
                 fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"{what}: {message}")
        self.what, self.message, self.status, self.reason, self.fields = what, message, status, reason, fields


class NotFound(KubeError):
    pass


class KindNotServed(KubeError):
    """The cluster serves no such resource: the CRD of a child kind is not installed."""


class Forbidden(KubeError):
    pass


class AlreadyExists(KubeError):
    pass


class Conflict(KubeError):
    """The object changed since it was read (resourceVersion precondition failed)."""


class Invalid(KubeError):
    """The object failed validation; `fields` are the paths the apiserver named."""


class Refused(KubeError):
    """Any other refusal: retrying the same request cannot succeed."""


class KubeUnavailable(KubeError):
    """The apiserver could not be reached, or answered 5xx/429: back off and retry."""


def classify(what: str, error: ApiError) -> KubeError:
    """The typed error for an apiserver answer."""
    code, reason, details = error.status, error.reason, error.details
    args = (what, error.message, code, reason)
    if code == 429 or code >= 500:
        return KubeUnavailable(*args)
    if code == 404:
        return NotFound(*args) if details.get("name") else KindNotServed(*args)
    if code == 403:
        return Forbidden(*args)
    if code == 409:
        return AlreadyExists(*args) if reason == "AlreadyExists" else Conflict(*args)
    if code == 422:
        fields = tuple(c["field"] for c in details.get("causes") or [] if c.get("field"))
        return Invalid(*args, fields=fields)
    return Refused(*args)


# etcd's default request limit (--max-request-bytes, 1.5 MiB). A larger object is answered with
# HTTP 500 and no Status reason (gRPC ResourceExhausted), which reads like an outage: such an
# object is refused here, before it is sent, so the cycle fails instead of retrying forever.
MAX_OBJECT_BYTES = 1572864


CRD = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition")
POD = Kind("", "v1", "pods", "Pod")
SECRET = Kind("", "v1", "secrets", "Secret")
CONFIG_MAP = Kind("", "v1", "configmaps", "ConfigMap")
# What the Kubernetes client's custom objects API sends a dict patch as: keys set replace, keys
# set to null are removed, lists are replaced whole.
MERGE_PATCH = "application/merge-patch+json"


def kept(body: Mapping[str, Any]) -> str:
    """What the operator keeps of a watched object: its compact JSON without `managedFields`
    (often the larger part of an object, never read). A string takes about a tenth of the
    memory of the parsed object, and parsing it again per read costs less than the deep copy
    a caller who may edit the object would need anyway."""
    metadata = {key: value for key, value in (body.get("metadata") or {}).items() if key != "managedFields"}
    return json.dumps({**body, "metadata": metadata}, separators=(",", ":"))


class WatchedObjects(Protocol):
    """What `read_watched` reads: `informer.ChildCache`, keyed also by its `label`."""

    label: str

    def synced_for(self, namespace: str) -> bool: ...

    def get(self, key: tuple) -> tuple[str, ...] | None: ...


class Kube:
    def __init__(self, api: ApiServer, timeout: float = 10.0) -> None:
        self.api = api
        self.timeout = timeout
        # Kinds read from what the operator's watches delivered instead of from the apiserver.
        self.watched: dict[tuple[str, str], WatchedObjects] = {}

    def read_watched(self, kind: Kind, indexed: WatchedObjects) -> None:
        """Reads of `kind` come from `indexed` from now on: what the operator's informer of its
        own children holds (`informer.ChildCache`), filled by a list and kept current by a
        watch, so a name it lacks is one that does not exist (or whose creation the watch has
        not delivered yet: `ensure` then meets AlreadyExists and reads the object). Its keys are
        (namespace, name) and, for `list` by its `label`, (namespace, label, value); its values are
        what `kept` makes of each object. Namespaces it has not listed (`synced_for`) are read
        from the apiserver."""
        self.watched[(kind.group, kind.plural)] = indexed

    def _indexed(self, kind: Kind, key: tuple) -> list[dict] | None:
        """The objects the cache holds under `key`, parsed from what it keeps (`kept`), so callers
        may edit them; None when `kind` is not watched in that namespace."""
        indexed = self.watched.get((kind.group, kind.plural))
        if indexed is None or not indexed.synced_for(key[0]):
            return None
        return [json.loads(obj) for obj in indexed.get(key) or ()]

    def _call(self, what: str, method: str, path: str, **options) -> dict:
        """One apiserver request, timed in `traindeploy_dependency_request_duration_seconds` with
        its result: ok, or the error's type (not_found, conflict, kube_unavailable, ...)."""
        with metrics.dependency_request("kubernetes") as outcome:
            try:
                return self.api.request(method, path, timeout=self.timeout, **options)
            except ApiError as error:
                typed = classify(what, error)
                outcome["result"] = metrics.snake(type(typed).__name__)
                raise typed from None
            except Unreachable as error:
                outcome["result"] = "kube_unavailable"
                raise KubeUnavailable(what, str(error)) from None

    def get(self, kind: Kind, namespace: str, name: str) -> dict | None:
        watched = self._indexed(kind, (namespace, name))
        if watched is not None:
            return watched[0] if watched else None
        return self._get(kind, namespace, name)

    def _get(self, kind: Kind, namespace: str, name: str) -> dict | None:
        try:
            return self._call(f"get {kind.kind} {namespace}/{name}", "GET", kind.path(namespace, name))
        except NotFound:
            return None

    def get_cluster(self, kind: Kind, name: str) -> dict | None:
        """A cluster-scoped custom object (a ClusterTrainingRuntime), or None when missing."""
        try:
            return self._call(f"get {kind.kind} {name}", "GET", kind.path(None, name))
        except NotFound:
            return None

    def crd(self, name: str) -> dict | None:
        """The CustomResourceDefinition `name` (`<plural>.<group>`) as served, or None when missing."""
        return self.get_cluster(CRD, name)

    def list(self, kind: Kind, namespace: str, label_selector: str) -> list[dict]:
        """The objects of a kind with the labels: from the index when it is keyed by that label,
        else from the apiserver's watch cache."""
        label, _, value = label_selector.partition("=")
        indexed = self.watched.get((kind.group, kind.plural))
        watched = self._indexed(kind, (namespace, label, value)) if indexed is not None and label == indexed.label else None
        if watched is not None:
            return watched
        found = self._call(f"list {kind.kind} in {namespace}", "GET", kind.path(namespace),
                           query={"labelSelector": label_selector, "resourceVersion": "0"})
        return found.get("items") or []

    def pods(self, namespace: str, label_selector: str) -> list[dict]:
        """The pods with the labels, as the API writes them (camelCase dicts), from the
        apiserver's watch cache."""
        found = self._call(f"list Pods in {namespace}", "GET", POD.path(namespace),
                           query={"labelSelector": label_selector, "resourceVersion": "0"})
        return found.get("items") or []

    def ensure(self, kind: Kind, desired: dict, owned: tuple[str, ...] = ("spec",)) -> tuple[dict, str]:
        """Creates `desired` when missing; patches the owned top-level fields (and our labels and
        annotations) when they drifted. Returns the object and what was done: created, patched or
        unchanged."""
        meta = desired["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        size = len(json.dumps(desired, separators=(",", ":")))
        if size > MAX_OBJECT_BYTES:
            raise Refused(f"create or patch {kind.kind} {namespace}/{name}",
                          f"the object is too large for etcd ({size} bytes, at most {MAX_OBJECT_BYTES})", 413)
        existing = self.get(kind, namespace, name)
        if existing is None:
            try:
                created = self._call(f"create {kind.kind} {namespace}/{name}", "POST", kind.path(namespace),
                                     body=without_nones(desired))
                return created, "created"
            except AlreadyExists:  # created concurrently, by a run that died before recording it, or
                # by ourselves a moment ago, before the watch delivered it: read the apiserver.
                existing = self._get(kind, namespace, name)
                if existing is None:
                    raise
                return existing, "unchanged"
        patch = {key: desired[key] for key in owned if key in desired
                 and drift(desired[key], existing.get(key))}
        for field in ("labels", "annotations"):
            if drift(meta.get(field) or {}, existing["metadata"].get(field) or {}):
                patch.setdefault("metadata", {})[field] = meta[field]
        if not patch:
            return existing, "unchanged"
        patched = self._call(f"patch {kind.kind} {namespace}/{name}", "PATCH", kind.path(namespace, name),
                             body=patch, content_type=MERGE_PATCH)
        return patched, "patched"

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        try:
            self._call(f"delete {kind.kind} {namespace}/{name}", "DELETE", kind.path(namespace, name))
        except NotFound:
            pass

    def replace_status(self, kind: Kind, namespace: str, name: str, status: dict, resource_version: str) -> dict:
        """Writes the whole status (the operator owns all of it; a merge patch would leave keys of
        a finished cycle behind). The write succeeds only if the object is still at
        `resource_version`, the one the status was computed from; otherwise `Conflict`."""
        body = {"apiVersion": kind.api_version, "kind": kind.kind,
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
                "status": status}
        return self._call(f"write status of {kind.kind} {namespace}/{name}", "PUT",
                          kind.path(namespace, name, "status"), body=body)

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The decoded data of a Secret, or None when it does not exist. Values stay in memory."""
        try:
            secret = self._call(f"get Secret {namespace}/{name}", "GET", SECRET.path(namespace, name))
        except NotFound:
            return None
        return decode_data(secret.get("data"))

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            config_map = self._call(f"get ConfigMap {namespace}/{name}", "GET", CONFIG_MAP.path(namespace, name))
        except NotFound:
            return None
        return dict(config_map.get("data") or {})
