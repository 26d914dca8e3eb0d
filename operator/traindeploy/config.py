"""Operator configuration, read once at start-up from the environment (the Helm chart sets it)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    # Defaults a TrainDeploy may leave out.
    mlflow_tracking_uri: str | None = None
    # Where a tracking server that proxies artifacts (`mlflow-artifacts:/`) really stores them,
    # e.g. s3://bucket/mlartifacts: KServe's storage initializer cannot read through MLflow.
    mlflow_artifacts_destination: str | None = None
    kfp_endpoint: str | None = None
    kfp_ui_endpoint: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    deployment_mode: str | None = None  # Knative | Standard; None leaves KServe's own default
    # Canary analysis and Standard-mode traffic splitting.
    prometheus_url: str | None = None
    gateway_ref: str | None = None  # "<namespace>/<name>[/<listener>]" of the Gateway HTTPRoutes attach to
    # Outside calls: each request is bounded, and a failing dependency is retried with backoff.
    http_timeout: float = 10.0
    backoff_initial: float = 2.0
    backoff_max: float = 300.0
    # Outside systems that cannot be watched (KFP, MLflow registration) are polled this often
    # while a stage waits on them; Kubernetes children are watched, not polled.
    poll_interval: float = 30.0
    # Passes run in a pool of their own, this many at a time: a pass blocks on the Kubernetes
    # API and MLflow, so threads, not cores, bound it; the pools of both clients hold as many
    # connections.
    reconcile_workers: int = 8
    # A safety net re-reconcile for every TrainDeploy, in case a watch event was missed.
    resync_interval: float = 600.0
    # The operator fails a training stage this long after the job's own activeDeadlineSeconds,
    # in case the training controller never reports it.
    deadline_grace: float = 60.0
    # After a restart, TrainDeploys whose status is current take their first pass within this
    # many seconds, at random, behind those that need work.
    startup_spread: float = 5.0
    # Prometheus metrics, on their own port beside the liveness endpoint (kopf serves only
    # /healthz on its port). Port 0 turns the endpoint off.
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8081
    metrics_path: str = "/metrics"
    # High availability: with leader election on, replicas compete for a Lease; only the holder
    # runs kopf, the others wait. The holder renews every `retry_period`; if it cannot renew
    # within `renew_deadline` it exits (the Deployment restarts it as a standby). A standby takes
    # over once the holder has not renewed for `lease_duration`. renew_deadline < lease_duration,
    # so a leader that lost the Lease has stopped before anyone else may start.
    leader_election: bool = False
    lease_name: str = "traindeploy-operator"
    lease_namespace: str | None = None  # None: the pod's own namespace ($POD_NAMESPACE)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def gateway(self) -> dict | None:
        if not self.gateway_ref:
            return None
        parts = self.gateway_ref.split("/")
        if len(parts) < 2:
            return {"name": parts[0]}
        gateway = {"namespace": parts[0], "name": parts[1]}
        if len(parts) > 2:
            gateway["sectionName"] = parts[2]
        return gateway

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if environ is None else environ

        def number(key: str, default: float) -> float:
            raw = env.get(key)
            return float(raw) if raw not in (None, "") else default

        return cls(
            mlflow_tracking_uri=env.get("TRAINDEPLOY_MLFLOW_TRACKING_URI") or None,
            mlflow_artifacts_destination=env.get("TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION") or None,
            kfp_endpoint=env.get("TRAINDEPLOY_KFP_ENDPOINT") or None,
            kfp_ui_endpoint=env.get("TRAINDEPLOY_KFP_UI_ENDPOINT") or None,
            gpu_resource=env.get("TRAINDEPLOY_GPU_RESOURCE") or cls.gpu_resource,
            deployment_mode=env.get("TRAINDEPLOY_DEPLOYMENT_MODE") or None,
            prometheus_url=env.get("TRAINDEPLOY_PROMETHEUS_URL") or None,
            gateway_ref=env.get("TRAINDEPLOY_GATEWAY") or None,
            http_timeout=number("TRAINDEPLOY_HTTP_TIMEOUT", cls.http_timeout),
            backoff_initial=number("TRAINDEPLOY_BACKOFF_INITIAL", cls.backoff_initial),
            backoff_max=number("TRAINDEPLOY_BACKOFF_MAX", cls.backoff_max),
            poll_interval=number("TRAINDEPLOY_POLL_INTERVAL", cls.poll_interval),
            reconcile_workers=max(1, int(number("TRAINDEPLOY_RECONCILE_WORKERS", cls.reconcile_workers))),
            resync_interval=number("TRAINDEPLOY_RESYNC_INTERVAL", cls.resync_interval),
            deadline_grace=number("TRAINDEPLOY_DEADLINE_GRACE", cls.deadline_grace),
            startup_spread=number("TRAINDEPLOY_STARTUP_SPREAD", cls.startup_spread),
            metrics_address=env.get("TRAINDEPLOY_METRICS_ADDRESS") or cls.metrics_address,
            metrics_port=int(number("TRAINDEPLOY_METRICS_PORT", cls.metrics_port)),
            metrics_path="/" + (env.get("TRAINDEPLOY_METRICS_PATH") or cls.metrics_path).lstrip("/"),
            leader_election=(env.get("TRAINDEPLOY_LEADER_ELECTION") or "").strip().lower() in ("1", "true", "yes"),
            lease_name=env.get("TRAINDEPLOY_LEASE_NAME") or cls.lease_name,
            lease_namespace=env.get("TRAINDEPLOY_LEASE_NAMESPACE") or env.get("POD_NAMESPACE") or None,
            lease_duration=number("TRAINDEPLOY_LEASE_DURATION", cls.lease_duration),
            renew_deadline=number("TRAINDEPLOY_RENEW_DEADLINE", cls.renew_deadline),
            retry_period=number("TRAINDEPLOY_RETRY_PERIOD", cls.retry_period),
        )
