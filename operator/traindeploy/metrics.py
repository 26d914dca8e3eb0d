"""The operator's Prometheus metrics, and the small HTTP server that exposes them.

Every label has a bounded set of values: results, stage names, phases, dependencies, reasons the
code names. No label carries an object's name, namespace, URL, run id or message, so the number
of series does not grow with the number of TrainDeploys (`traindeploy_traindeploys` counts them
by phase, as kube-state-metrics does).

The metrics live in prometheus_client's default registry, beside its process and Python
collectors. Nothing here imports the rest of the package: every layer may record a metric.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# Outside calls: from a millisecond to the longest HTTP timeout anyone would set.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Stages and cycles run from seconds (a gate) to hours (a training job, a pipeline).
STAGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)

RECONCILES = Counter("traindeploy_reconcile", "Reconcile passes of a TrainDeploy, by result: "
                     "ok, blocked (a dependency or permission holds it; backoff), error (unexpected).",
                     ["result"])
RECONCILE_DURATION = Histogram("traindeploy_reconcile_duration_seconds",
                               "Time of one reconcile pass with its status write, by result.", ["result"],
                               buckets=CALL_BUCKETS)
STATUS_CONFLICTS = Counter("traindeploy_status_write_conflicts",
                           "Status writes refused because the TrainDeploy changed since it was read "
                           "(re-read and recomputed at once).")
STAGE_TRANSITIONS = Counter("traindeploy_stage_transitions",
                            "Stage condition transitions written, by stage and outcome: started, "
                            "succeeded, failed.", ["stage", "outcome"])
STAGE_DURATION = Histogram("traindeploy_stage_duration_seconds",
                           "From a stage's start to its end, by stage and outcome (succeeded, failed); "
                           "taken from the conditions' lastTransitionTime, so a restart keeps it.",
                           ["stage", "outcome"], buckets=STAGE_BUCKETS)
CYCLE_DURATION = Histogram("traindeploy_cycle_duration_seconds",
                           "From a cycle's start (the apply, retrain or schedule that started it) to "
                           "Ready or Failed, by outcome and trigger (spec, annotation, schedule).",
                           ["outcome", "trigger"], buckets=STAGE_BUCKETS)
CANARY_STEP_DURATION = Histogram("traindeploy_canary_step_duration_seconds",
                                 "Time a canary step held its weight, by how it ended: advanced, promoted, "
                                 "rolled_back, awaiting_approval.", ["outcome"], buckets=STAGE_BUCKETS)
CANARY_OUTCOMES = Counter("traindeploy_canary_outcomes",
                          "Ends of canary rollouts: promoted, or rolled_back with the reason (NotReady, "
                          "AnalysisFailed, Superseded, ManualRollback).", ["outcome", "reason"])
DEPENDENCY_REQUESTS = Histogram("traindeploy_dependency_request_duration_seconds",
                                "Requests to Kubernetes, MLflow and KFP, by dependency and result "
                                "(ok, not_found, conflict, unavailable, ...), with their latency.",
                                ["dependency", "result"], buckets=CALL_BUCKETS)
BACKOFFS = Gauge("traindeploy_backoffs_in_progress",
                 "TrainDeploys whose loop is waiting out a backoff after a blocked or failed pass.")
RETRIES = Counter("traindeploy_backoff_retries", "Passes scheduled after a backoff, by cause: blocked, error.",
                  ["cause"])
LEADER = Gauge("traindeploy_leader", "1 while this replica holds the leader Lease (or runs without election) "
                                     "and reconciles; 0 while it stands by.")


class _Phases:
    """`traindeploy_traindeploys{phase}`: the TrainDeploys this replica reconciles, counted by the
    phase their last pass wrote. Collected from memory at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase: dict[str, str] = {}

    def set(self, uid: str, phase: str) -> None:
        with self._lock:
            self._phase[uid] = phase

    def forget(self, uid: str) -> None:
        with self._lock:
            self._phase.pop(uid, None)

    def collect(self):
        family = GaugeMetricFamily("traindeploy_traindeploys", "TrainDeploys reconciled by this replica, by phase.",
                                   labels=["phase"])
        with self._lock:
            counts = Tally(self._phase.values())
        for phase, count in sorted(counts.items()):
            family.add_metric([phase], count)
        yield family

    def describe(self):
        yield GaugeMetricFamily("traindeploy_traindeploys", "TrainDeploys reconciled by this replica, by phase.",
                                labels=["phase"])


PHASES = _Phases()
REGISTRY.register(PHASES)

OURS = (RECONCILES, RECONCILE_DURATION, STATUS_CONFLICTS, STAGE_TRANSITIONS, STAGE_DURATION, CYCLE_DURATION,
        CANARY_STEP_DURATION, CANARY_OUTCOMES, DEPENDENCY_REQUESTS, BACKOFFS, RETRIES, LEADER, PHASES)

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name the operator's own metrics can export (a counter `x` as `x_total`, a
    histogram as `_bucket`, `_count`, `_sum`): what dashboards and alerts may query."""
    names = set()
    for metric in OURS:
        for family in metric.describe():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


@contextmanager
def dependency_request(dependency: str) -> Iterator[dict]:
    """Times one request to an outside system. The caller sets `outcome["result"]` when it knows
    better than ok/error (not_found, unavailable, ...); an exception it did not classify is `error`."""
    outcome = {"result": "ok"}
    started = time.monotonic()
    try:
        yield outcome
    except BaseException:
        if outcome["result"] == "ok":
            outcome["result"] = "error"
        raise
    finally:
        DEPENDENCY_REQUESTS.labels(dependency, outcome["result"]).observe(time.monotonic() - started)


def snake(name: str) -> str:
    """NotFound -> not_found, KubeUnavailable -> kube_unavailable: error classes as label values."""
    out = []
    for index, char in enumerate(name):
        if char.isupper() and index and not name[index - 1].isupper():
            out.append("_")
        out.append(char.lower())
    return "".join(out)


class _Handler(BaseHTTPRequestHandler):
    path_served = "/metrics"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != self.path_served:
            self.send_error(404, "Not Found")
            return
        body = generate_latest(REGISTRY)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - scrapes are not worth a log line
        return


def serve(address: str, port: int, path: str) -> ThreadingHTTPServer:
    """Serves the metrics at http://address:port/path from a daemon thread."""
    handler = type("MetricsHandler", (_Handler,), {"path_served": path})
    server = ThreadingHTTPServer((address, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("Serving metrics at http://%s:%d%s.", address, server.server_address[1], path)
    return server
