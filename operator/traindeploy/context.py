"""What one reconcile pass of one TrainDeploy works with: the object, the status being computed,
the Events to post, the clock, and the outside clients behind small interfaces a test can replace.

The outside calls go through `kube()`, `mlflow()` and `secret()`, which turn the clients' typed
errors into stage results (carried up by `Problem`), so a stage never sees a client exception.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TypeVar

import requests

from traindeploy import GROUP, KIND, PLURAL, VERSION, kube, triggers
from traindeploy import conditions as cond
from traindeploy import lifecycle as lc
from traindeploy.config import OperatorConfig
from traindeploy.kfp import KfpClient
from traindeploy.kube import Kind
from traindeploy.mlflow_rest import (Credentials, MlflowApiError, MlflowRest, MlflowUnauthorized,
                                    MlflowUnavailable)
from traindeploy.results import INVALID_SPEC, Blocked, Fail, Problem, Wait
from traindeploy.secrets import MLFLOW_SECRET_KEYS, SecretDataInvalid, surrounding_whitespace

log = logging.getLogger(__name__)

TRAINDEPLOY = Kind(GROUP, VERSION, PLURAL, KIND)
TAG_PREFIX = "traindeploy.io/"
T = TypeVar("T")


class KubeApi(Protocol):
    def get(self, kind: Kind, namespace: str, name: str) -> dict | None: ...
    def get_cluster(self, kind: Kind, name: str) -> dict | None: ...
    def crd(self, name: str) -> dict | None: ...
    def list(self, kind: Kind, namespace: str, label_selector: str) -> list[dict]: ...
    def pods(self, namespace: str, label_selector: str) -> list[dict]: ...
    def ensure(self, kind: Kind, desired: dict, owned: tuple[str, ...] = ...) -> tuple[dict, str]: ...
    def delete(self, kind: Kind, namespace: str, name: str) -> None: ...
    def replace_status(self, kind: Kind, namespace: str, name: str, status: dict, resource_version: str) -> dict: ...
    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None: ...


def _mlflow_client(uri: str, credentials: Credentials | None, timeout: float, session: requests.Session):
    return MlflowRest(uri, credentials, timeout=timeout, session=session)


def _kfp_client(endpoint: str, token: str | None, timeout: float, session: requests.Session):
    return KfpClient(endpoint, token=token, timeout=timeout, session=session)


@dataclass
class Environment:
    """What a reconciliation may use: the cluster, the configuration, client factories, the clock."""

    kube: KubeApi
    config: OperatorConfig
    http: requests.Session = field(default_factory=requests.Session)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
    mlflow_client: Callable[..., Any] = _mlflow_client  # (uri, credentials, timeout, session) -> MlflowRest
    kfp_client: Callable[..., Any] = _kfp_client  # (endpoint, token, timeout, session) -> KfpClient
    # What the cluster serves, read once per process (the Environment lives as long as the
    # process): the TrainJob CRD's spec fields (stages/trainer_api.py).
    served: dict[str, Any] = field(default_factory=dict)


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


class Pass:
    """One reconcile pass: the TrainDeploy as read, and the status it will have."""

    def __init__(self, td: dict, env: Environment) -> None:
        self.td, self.env = td, env
        self.meta = td["metadata"]
        self.name, self.namespace = self.meta["name"], self.meta["namespace"]
        self.spec = td.get("spec") or {}
        self.old = td.get("status") or {}
        self.status = copy.deepcopy(self.old)
        self.status.setdefault("conditions", [])
        self.now_dt = env.clock()
        self.now = cond.now_rfc3339(self.now_dt)
        self.events: list[Event] = []
        # Canary rollouts this pass ended, (outcome, reason): counted once its status write took.
        self.canary_outcomes: list[tuple[str, str]] = []
        self._secrets: dict[str, dict[str, str] | None] = {}
        self._mlflow: Any = None

    # -- the cycle ---------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self.status["cycle"]["generation"]

    @property
    def cycle(self) -> str:
        return self.status["cycle"].get("label") or triggers.cycle_label(self.generation, 0)

    def record(self, key: str) -> dict:
        """The status record of a stage (status.training, ...), created on first use."""
        return self.status.setdefault(key, {})

    # -- conditions and events ---------------------------------------------------------------------

    def set_condition(self, condition_type: str, status: str, reason: str, message: str) -> None:
        self.status["conditions"] = cond.set_condition(self.status["conditions"], condition_type, status, reason,
                                                       message, self.meta.get("generation", 0), self.now)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def canary_ended(self, outcome: str, reason: str) -> None:
        self.canary_outcomes.append((outcome, reason))

    def created(self, kind: Kind, name: str, action: str) -> None:
        ref = {"apiVersion": kind.api_version, "kind": kind.kind, "name": name}
        children = self.status.setdefault("children", [])
        if ref not in children:
            children.append(ref)
        if action == "created":
            self.event("Normal", "Created", f"Created {kind.kind} {self.namespace}/{name}.")

    def forget_child(self, kind: Kind, name: str) -> None:
        self.status["children"] = [c for c in self.status.get("children", [])
                                   if not (c.get("kind") == kind.kind and c.get("name") == name)]

    def running(self, message: str, started_at: str, timeout: float | None, deadline_reason: str,
                on_timeout: Callable[[], None] | None = None, poll: float | None = None) -> Wait | Fail:
        """In progress, or failed once past its deadline (after `on_timeout` stopped the work)."""
        remaining = None
        if timeout:
            started = cond.parse_time(started_at) or self.now_dt
            remaining = timeout - (self.now_dt - started).total_seconds()
            if remaining <= 0:
                if on_timeout is not None:
                    on_timeout()
                return Fail(deadline_reason, f"{message} Deadline of {int(timeout)}s exceeded.")
        waits = [w for w in (poll, remaining) if w is not None]
        return Wait(message, max(1.0, min(waits)) if waits else None)

    # -- outside systems -----------------------------------------------------------------------------

    def kube(self, call: Callable[[], T]) -> T:
        """A Kubernetes call; its errors become results by type. A conflict is retried once at once
        (the calls re-read before they write)."""
        for attempt in (1, 2):
            try:
                return call()
            except kube.Conflict as error:
                if attempt == 2:
                    raise Problem(Blocked("Conflict", error.message)) from None
            except kube.KubeUnavailable as error:
                raise Problem(Blocked("KubernetesUnavailable", str(error))) from None
            except kube.KindNotServed as error:
                raise Problem(Blocked("ChildKindNotInstalled", f"{error}: is its CRD installed?")) from None
            except kube.Forbidden as error:
                raise Problem(Blocked("Forbidden", f"{error}: check the operator's RBAC.")) from None
            except kube.Invalid as error:
                fields = f" (field {', '.join(error.fields)})" if error.fields else ""
                raise Problem(Fail(INVALID_SPEC, f"{error}{fields}")) from None
            except kube.KubeError as error:
                raise Problem(Fail("KubernetesRefused", str(error))) from None
        raise AssertionError("unreachable")

    def secret(self, name: str, field_path: str) -> dict[str, str]:
        if name not in self._secrets:
            try:
                self._secrets[name] = self.kube(lambda: self.env.kube.secret_data(self.namespace, name))
            except SecretDataInvalid as error:
                raise Problem(Blocked("SecretInvalid", f"{field_path}: Secret {self.namespace}/{name}: {error}.")) \
                    from None
        data = self._secrets[name]
        if data is None:
            raise Problem(Blocked("SecretNotFound", f"{field_path}: Secret {self.namespace}/{name} does not exist."))
        return data

    def secret_values(self, name: str, field_path: str, keys: tuple[str, ...]) -> dict[str, str]:
        """The Secret's values of `keys`; a value with surrounding whitespace (a Secret made with
        `echo`) holds the cycle, naming the key and never the value."""
        data = self.secret(name, field_path)
        for key in keys:
            if key in data and surrounding_whitespace(data[key]):
                raise Problem(Blocked("SecretInvalid", f"{field_path}: key {key} of Secret {self.namespace}/{name} "
                                                       "has leading or trailing whitespace (made with echo?)."))
        return {key: data[key] for key in keys if key in data}

    def mlflow_settings(self) -> tuple[str, str, str | None]:
        mlflow_spec = self.spec.get("mlflow") or {}
        uri = mlflow_spec.get("trackingUri") or self.env.config.mlflow_tracking_uri
        experiment = mlflow_spec.get("experimentName") or f"traindeploy/{self.namespace}/{self.name}"
        secret = (mlflow_spec.get("credentialsSecretRef") or {}).get("name")
        return uri, experiment, secret

    def mlflow(self, call: Callable[[Any], T]) -> T:
        uri, _, secret_name = self.mlflow_settings()
        if self._mlflow is None:
            credentials = None
            if secret_name:
                data = self.secret_values(secret_name, "spec.mlflow.credentialsSecretRef", MLFLOW_SECRET_KEYS)
                credentials = Credentials(token=data.get("MLFLOW_TRACKING_TOKEN"),
                                          username=data.get("MLFLOW_TRACKING_USERNAME"),
                                          password=data.get("MLFLOW_TRACKING_PASSWORD"))
            try:
                self._mlflow = self.env.mlflow_client(uri, credentials, self.env.config.http_timeout, self.env.http)
            except ValueError as error:  # says which key or which part of the URI, never a value
                field_path = "spec.mlflow.credentialsSecretRef" if credentials else "spec.mlflow.trackingUri"
                raise Problem(Blocked("SecretInvalid" if credentials else INVALID_SPEC,
                                      f"{field_path}: {error}.")) from None
        try:
            return call(self._mlflow)
        except MlflowUnavailable as error:
            raise Problem(Blocked("MLflowUnavailable", f"MLflow at {uri} is unavailable: {error}")) from None
        except MlflowUnauthorized as error:
            raise Problem(Blocked("MLflowUnauthorized", f"MLflow at {uri} refused the operator's credentials "
                                                        f"(spec.mlflow.credentialsSecretRef): {error}")) from None
        except MlflowApiError as error:
            raise Problem(Fail("MLflowError", f"MLflow refused a request: {error}")) from None

    def training_env(self, with_run: bool) -> list[dict]:
        uri, experiment, secret_name = self.mlflow_settings()
        keys = sorted(self.secret(secret_name, "spec.mlflow.credentialsSecretRef")) if secret_name else []
        run_id = (self.status.get("training") or {}).get("mlflowRunId") if with_run else None
        return lc.mlflow_env(uri, experiment, run_id, secret_name, [k for k in keys if k in MLFLOW_SECRET_KEYS])

    def identity_tags(self) -> dict[str, str]:
        """The tags that find this cycle's MLflow run and model version again."""
        return {f"{TAG_PREFIX}uid": self.meta["uid"], f"{TAG_PREFIX}cycle": self.cycle}

    def lineage_tags(self) -> dict[str, str]:
        tags = {f"{TAG_PREFIX}namespace": self.namespace, f"{TAG_PREFIX}name": self.name,
                f"{TAG_PREFIX}generation": str(self.generation), **self.identity_tags()}
        for key, record, item in (("kfp-run-id", "pipeline", "runId"), ("katib-best-trial", "tuning", "bestTrialName"),
                                  ("training-job", "training", "name")):
            if (self.status.get(record) or {}).get(item):
                tags[f"{TAG_PREFIX}{key}"] = self.status[record][item]
        return tags
