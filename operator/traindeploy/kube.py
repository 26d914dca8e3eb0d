"""The operator's few Kubernetes calls, each bounded by a timeout, with errors sorted into
"try again later" (KubeUnavailable) and "this will not work" (KubeError)."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from traindeploy.diff import drift

log = logging.getLogger(__name__)


class KubeUnavailable(Exception):
    """The apiserver could not be reached or answered 5xx/429: back off and retry."""


class KubeError(Exception):
    """A request the apiserver refused (for example, a child kind whose CRD is not installed)."""


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


class Kube:
    def __init__(self, api_client: client.ApiClient, timeout: float = 10.0) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.timeout = timeout

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as error:
            if error.status in (429,) or (error.status or 0) >= 500:
                raise KubeUnavailable(f"{what}: HTTP {error.status} {error.reason}") from None
            raise
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeUnavailable(f"{what}: {type(error).__name__}: {error}") from None

    def get(self, kind: Kind, namespace: str, name: str) -> dict | None:
        try:
            return self._call(f"get {kind.kind} {namespace}/{name}", self.custom.get_namespaced_custom_object,
                              kind.group, kind.version, namespace, kind.plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise KubeError(f"get {kind.kind} {namespace}/{name}: {_message(error)}") from None

    def ensure(self, kind: Kind, desired: dict, owned: tuple[str, ...] = ("spec",)) -> tuple[dict, str]:
        """Creates `desired` when missing; patches the owned top-level fields (and our labels and
        annotations) when they drifted. Returns the object and what was done: created, patched or
        unchanged."""
        meta = desired["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        existing = self.get(kind, namespace, name)
        if existing is None:
            try:
                created = self._call(f"create {kind.kind} {namespace}/{name}",
                                     self.custom.create_namespaced_custom_object,
                                     kind.group, kind.version, namespace, kind.plural, desired)
                return created, "created"
            except ApiException as error:
                if error.status == 409:  # created concurrently, or by a run that died before recording it
                    existing = self.get(kind, namespace, name)
                    if existing is not None:
                        return existing, "unchanged"
                if error.status == 404:
                    raise KubeError(f"{kind.kind} ({kind.api_version}) is not served by this cluster: "
                                    f"is its CRD installed?") from None
                raise KubeError(f"create {kind.kind} {namespace}/{name}: {_message(error)}") from None
        patch = {key: desired[key] for key in owned if key in desired
                 and drift(desired[key], existing.get(key))}
        for field in ("labels", "annotations"):
            if drift(meta.get(field) or {}, existing["metadata"].get(field) or {}):
                patch.setdefault("metadata", {})[field] = meta[field]
        if not patch:
            return existing, "unchanged"
        try:
            patched = self._call(f"patch {kind.kind} {namespace}/{name}",
                                 self.custom.patch_namespaced_custom_object,
                                 kind.group, kind.version, namespace, kind.plural, name, patch)
        except ApiException as error:
            raise KubeError(f"patch {kind.kind} {namespace}/{name}: {_message(error)}") from None
        return patched, "patched"

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        try:
            self._call(f"delete {kind.kind} {namespace}/{name}", self.custom.delete_namespaced_custom_object,
                       kind.group, kind.version, namespace, kind.plural, name)
        except ApiException as error:
            if error.status != 404:
                raise KubeError(f"delete {kind.kind} {namespace}/{name}: {_message(error)}") from None

    def replace_status(self, kind: Kind, namespace: str, name: str, status: dict) -> dict:
        """Writes the whole status: the operator owns all of it, and a merge patch would leave
        keys of a finished cycle behind."""
        patch = [{"op": "add", "path": "/status", "value": status}]
        try:
            return self._call(f"write status of {kind.kind} {namespace}/{name}",
                              self.custom.patch_namespaced_custom_object_status,
                              kind.group, kind.version, namespace, kind.plural, name, patch,
                              _content_type="application/json-patch+json")
        except ApiException as error:
            raise KubeError(f"write status of {kind.kind} {namespace}/{name}: {_message(error)}") from None

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The decoded data of a Secret, or None when it does not exist. Values stay in memory."""
        try:
            secret = self._call(f"get Secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise KubeError(f"get Secret {namespace}/{name}: {_message(error)}") from None
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            config_map = self._call(f"get ConfigMap {namespace}/{name}", self.core.read_namespaced_config_map,
                                    name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise KubeError(f"get ConfigMap {namespace}/{name}: {_message(error)}") from None
        return dict(config_map.data or {})


def _message(error: ApiException) -> str:
    import json

    try:
        return json.loads(error.body).get("message") or str(error.reason)
    except (TypeError, ValueError):
        return f"HTTP {error.status} {error.reason}"
