"""Starts the kopf operator with TrainDeploy's handlers, and sets up its logging."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
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

    logging.getLogger(__name__).info(
        "Starting the TrainDeploy operator, watching %s.",
        ", ".join(namespaces) if namespaces else "the whole cluster")
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces or None,
        liveness_endpoint=liveness,
        # One replica with a Recreate strategy: no peering objects to install or coordinate.
        standalone=True,
    ))
    return 0
