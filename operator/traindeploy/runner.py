"""Starts the kopf operator with TrainDeploy's handlers, and sets up its logging."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
import threading
from typing import TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _object_of(record: logging.LogRecord) -> dict | None:
    """kopf's per-object loggers attach the object they log about as `k8s_ref`."""
    ref = getattr(record, "k8s_ref", None)
    return ref if isinstance(ref, dict) else None


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: [namespace/name] message`, for people reading `kubectl logs`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        ref = _object_of(record)
        if ref and ref.get("name"):
            where = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref["name"]
            record = logging.makeLogRecord({**record.__dict__, "message": f"[{where}] {record.message}"})
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: time (RFC 3339, UTC), level, logger, message;
    `object` when the record is about a Kubernetes object; `exception` with the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = _object_of(record)
        if ref:
            entry["object"] = {key: ref[key] for key in ("apiVersion", "kind", "namespace", "name", "uid")
                               if ref.get(key)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a stray non-JSON argument must never cost a log line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", log_format: str = "text", stream: TextIO | None = None) -> None:
    """Replaces the root handlers with one that writes to `stream` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # asyncio's own debug chatter (selectors, slow callbacks) drowns the operator's; as kopf does,
    # keep it to warnings unless debugging.
    logging.getLogger("asyncio").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def run_operator(namespaces: list[str], liveness: str | None, log_level: str = "info",
                 log_format: str = "text") -> int:
    configure_logging(log_level, log_format)

    import kopf

    import traindeploy.handlers  # noqa: F401  (registers the handlers)
    from traindeploy import metrics
    from traindeploy.config import OperatorConfig

    config = OperatorConfig.from_env()
    if config.metrics_port:
        metrics.serve(config.metrics_address, config.metrics_port, config.metrics_path)
    elector = _elect(config, liveness) if config.leader_election else None
    metrics.LEADER.set(1)
    logging.getLogger(__name__).info(
        "Starting the TrainDeploy operator, watching %s.",
        ", ".join(namespaces) if namespaces else "the whole cluster")
    stopping = threading.Event()
    if elector is not None:
        threading.Thread(target=elector.keep, args=(_lost, stopping), name="lease", daemon=True).start()
    try:
        asyncio.run(kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces or None,
            liveness_endpoint=liveness,
            # kopf's own peering is off: with several replicas, the Lease decides who runs kopf at all.
            standalone=True,
            # What the handlers know of the command line (the login handler sizes kopf's pool by it).
            memo=kopf.Memo(namespaces=tuple(namespaces)),
        ))
    finally:
        stopping.set()
        if elector is not None:
            elector.release()
    return 0


def _elect(config, liveness: str | None):
    """Blocks until this replica holds the Lease. Meanwhile the liveness URL answers, so that the
    kubelet does not restart a healthy standby; kopf serves it once this replica leads."""
    import os

    from traindeploy import leader
    from traindeploy.handlers import _api_client

    namespace = config.lease_namespace
    if not namespace:
        raise SystemExit("leader election needs the Lease's namespace: set $POD_NAMESPACE or "
                         "$TRAINDEPLOY_LEASE_NAMESPACE")
    elector = leader.LeaseElector(_api_client(), namespace, config.lease_name,
                                  leader.identity(os.environ.get("POD_NAME")),
                                  lease_duration=config.lease_duration, renew_deadline=config.renew_deadline,
                                  retry_period=config.retry_period)
    standby = _standby_liveness(liveness)
    try:
        elector.acquire()
    finally:
        if standby is not None:
            standby.shutdown()
            standby.server_close()
    return elector


def _lost(why: str) -> None:
    """A leader that cannot keep its Lease stops acting at once: no cleanup, no last writes. The
    Deployment restarts the container, which then stands by."""
    import os

    logging.getLogger(__name__).critical("Lost the leader Lease (%s); exiting so that only one replica acts.", why)
    logging.shutdown()
    os._exit(LOST_LEASE_EXIT)


LOST_LEASE_EXIT = 3


def _standby_liveness(liveness: str | None):
    if not liveness:
        return None
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    url = urlsplit(liveness)

    class Standby(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            ok = self.path.split("?", 1)[0] == (url.path or "/")
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"standby": true}' if ok else b"{}")

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Standby)
    threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True).start()
    return server
