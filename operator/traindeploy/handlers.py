"""kopf handlers: TrainDeploys reconciled by a work queue, woken by watch events.

kopf watches the TrainDeploys: each event keeps the object's latest version (compact, without
managedFields) and queues a pass when something the operator acts on changed: the spec, the
annotations it reads, or one of its children (listed and watched per kind by the operator's
informers, not polled). A fixed number of workers run the passes (`workqueue.WorkQueue`), one
at a time per TrainDeploy, each due again after its requeue delay, a resync or a backoff.
Outside systems that cannot be watched (KFP, MLflow) are polled only while a stage waits on
them, and an unavailable dependency is retried with exponential backoff. The API load therefore grows with change, not with the number of
TrainDeploys.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import kopf
import requests
import requests.adapters

from traindeploy import GROUP, PLURAL, VERSION, cycle, metrics, naming, telemetry, triggers
from traindeploy.apiserver import ApiServer
from traindeploy.config import OperatorConfig
from traindeploy.context import Pass
from traindeploy.informer import Informers
from traindeploy.kube import Conflict, Kube, KubeError, kept
from traindeploy.reconciler import CHILD_KINDS, TRAINDEPLOY, Environment, Outcome, reconcile
from traindeploy.results import Problem
from traindeploy.workqueue import WorkQueue

log = logging.getLogger(__name__)

FINALIZER = "traindeploy.io/finalizer"
# How long a new TrainDeploy's first pass waits for kopf's finalizer patch before going ahead.
FINALIZER_WAIT = 5.0


@dataclass(slots=True)
class _TrainDeploy:
    """What the operator keeps in memory per TrainDeploy between passes."""

    # The object as last delivered by the watch, as `kube.kept` makes it (compact JSON without
    # managedFields): a tenth of the parsed object's memory.
    body: str
    seen: tuple = ()  # what `_interesting` read at the last pass
    failures: int = 0
    passed: bool = False  # a pass has run since the operator started
    # The resourceVersion of our last status write. Until the watch delivers that version, the
    # body kept is older than what we wrote, and acting on it would undo steps.
    written: str | None = None


_items: dict[str, _TrainDeploy] = {}
# Read at scrape time from the items themselves, so it cannot drift from them.
metrics.BACKOFFS.set_function(lambda: sum(1 for item in list(_items.values()) if item.failures))
# How long a stopping operator waits for the passes under way (each bounded by its HTTP timeouts).
STOP_TIMEOUT = 60.0


class NoDiffBaseForTrainDeploys(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base ("last-handled configuration") kept nowhere for TrainDeploys. It serves
    creation, update and resume handlers, of which the operator has none for them: its event
    handler tells change itself (`_interesting`), and `tests/unit/test_kopf_handlers.py` keeps it so.
    Kept in an annotation it cost a PATCH of every new TrainDeploy (and a status write
    conflicting with it), and building it a deep copy of the object on every event; with an
    essence that is always empty kopf sees no change to act on (its deletion handling does not
    depend on it). Other kinds keep kopf's own annotation, so a handler of theirs works as usual."""

    def __init__(self) -> None:
        super().__init__(prefix="traindeploy.io", key="last-handled-configuration")

    def build(self, *, body, extra_fields=None):
        return {} if _is_traindeploy(body) else super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body):
        return {} if _is_traindeploy(body) else super().fetch(body=body)

    def store(self, *, body, patch, essence) -> None:
        if not _is_traindeploy(body):
            super().store(body=body, patch=patch, essence=essence)


def _is_traindeploy(body) -> bool:
    return str(body.get("apiVersion", "")).startswith(f"{GROUP}/") and body.get("kind") == TRAINDEPLOY.kind


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    # Our own finalizer name and annotation prefix, so nothing of kopf's defaults leaks into the API.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="traindeploy.io")
    settings.persistence.diffbase_storage = NoDiffBaseForTrainDeploys()
    # Watches reconnect every few minutes rather than hanging on a dead connection.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.posting.level = logging.INFO
    memo.config = OperatorConfig.from_env()
    workers = memo.config.reconcile_workers
    memo.passes = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
    http = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=workers)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    memo.env = Environment(kube=Kube(_api_client(workers), timeout=memo.config.http_timeout), config=memo.config,
                           http=http)
    memo.settings = settings
    # As many workers as pass threads: a pass holds its worker while its thread runs.
    memo.queue = WorkQueue(functools.partial(_pass, memo=memo), workers)
    _start_informers(memo, asyncio.get_running_loop())


def _start_informers(memo: kopf.Memo, loop: asyncio.AbstractEventLoop) -> None:
    """The children, listed and watched per kind and namespace; passes read them from memory and
    each change queues the owner. No pass starts before every kind was listed (or refused), so a
    pass never takes a child that exists for one that does not."""
    namespaces = tuple(getattr(memo, "namespaces", ()))
    selector = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"

    def changed(obj: dict) -> None:
        loop.call_soon_threadsafe(_wake, memo.queue, naming.owner_uid(obj))

    informers = Informers(_api_client(len(CHILD_KINDS) * max(1, len(namespaces))), CHILD_KINDS, namespaces,
                          selector, naming.LABEL_NAME, changed).start()
    for kind, cache in informers.caches.items():
        memo.env.kube.read_watched(kind, cache)
    memo.informers = informers
    memo.children_listed = loop.run_in_executor(None, informers.wait_tried)


@kopf.on.cleanup()
async def stop_passes(memo: kopf.Memo, **_) -> None:
    if getattr(memo, "queue", None) is not None:
        # Passes under way end (each is bounded by its HTTP timeouts); no new one starts.
        await memo.queue.stop(STOP_TIMEOUT)
    if getattr(memo, "informers", None) is not None:
        memo.informers.stop()
    if getattr(memo, "passes", None) is not None:
        memo.passes.shutdown(wait=False, cancel_futures=True)


def _api_client(connections: int = 1) -> ApiServer:
    """A client for our own calls, configured in-cluster or from $KUBECONFIG when called, with a
    connection for each pass that may run at once."""
    return ApiServer.from_environment(connections)


# kopf's own session opens a connection per request in flight, without limit: a fan-in of 300
# new TrainDeploys held about 100 TLS connections (13 MiB of buffers alone), and the process
# kept the memory afterwards. Its patches and Events share this many instead.
KOPF_REQUEST_CONNECTIONS = 16


def kopf_connections(namespaces: Sequence[str] | None) -> int | None:
    """The most connections kopf needs: one per watch stream (the TrainDeploys of each namespace,
    and its CRD and namespace observers; the children are the informers' own) and the share for
    requests. None, no bound, when the namespaces are not known: a bound below the number of
    streams would starve the watches."""
    if namespaces is None:
        return None
    return max(1, len(namespaces)) + 2 + KOPF_REQUEST_CONNECTIONS


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs):
    # kopf's own readers take $KUBECONFIG when called; the client library fixes its default
    # location when it is first imported.
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    limit = kopf_connections(getattr(memo, "namespaces", None))
    if info is None or limit is None:
        return info
    # The session kopf would build from these credentials, with a bounded pool (kopf closes it
    # when the credentials are replaced).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
                                    headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env)
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, default_namespace=info.default_namespace,
                               priority=info.priority, expiration=info.expiration)


async def _pass(uid: str, memo: kopf.Memo) -> float | None:
    """One pass over a TrainDeploy, run by a queue worker in the pass pool; the seconds until it
    is due again (None: only when something wakes it)."""
    await asyncio.shield(memo.children_listed)
    item = _items.get(uid)
    if item is None:
        return None
    env: Environment = memo.env
    body = json.loads(item.body)
    item.seen = _interesting(body)
    logger = kopf.ObjectLogger(body=kopf.Body(body), settings=memo.settings)
    started = time.monotonic()
    # With this task's context, as asyncio.to_thread would: kopf.event reads its queue from a
    # context variable.
    outcome = await asyncio.get_running_loop().run_in_executor(
        memo.passes, contextvars.copy_context().run, _reconcile_and_write, body, env, logger, item)
    telemetry.pass_done(outcome, time.monotonic() - started)
    item.passed = True
    return _next_delay(outcome, item, env.config) if uid in _items else None


def _first_delay(body: kopf.Body, config: OperatorConfig) -> float:
    """When a TrainDeploy first seen is first reconciled."""
    if FINALIZER not in (body.get("metadata", {}).get("finalizers") or ()):
        # kopf adds its finalizer on first sight: a status write made before that patch lands
        # would conflict with it, costing a read and a second write. The patch's watch event
        # brings the pass forward.
        return FINALIZER_WAIT
    if config.startup_spread > 0 and _up_to_date(body):
        # After a restart every TrainDeploy is seen at once, in list order: those whose status is
        # current wait a random moment, so objects that need work (new ones, changed specs) go
        # first and the rest share the workers evenly. Any change brings them forward.
        return random.uniform(0, config.startup_spread)
    return 0.0


def _up_to_date(body: kopf.Body) -> bool:
    status = body.get("status") or {}
    return bool(status) and status.get("observedGeneration") == body.get("metadata", {}).get("generation")


def _freshest(body: dict, item: _TrainDeploy, env: Environment) -> dict:
    """The body, unless it is not the version our last status write made: then the object is read
    again (the watch lags behind our write, or someone else wrote after it)."""
    td = body
    if item.written is None or td["metadata"].get("resourceVersion") == item.written:
        item.written = None
        return td
    meta = td["metadata"]
    live = env.kube.get(TRAINDEPLOY, meta["namespace"], meta["name"])
    item.written = None
    return live if live is not None else td


# A status write that meets a newer object is recomputed from it at once, this many times.
CONFLICT_RETRIES = 3


def _reconcile_and_write(body: dict, env: Environment, logger: kopf.Logger, item: _TrainDeploy) -> Outcome | None:
    """Runs in a worker thread. Writes the status only if it changed, with the resourceVersion it
    was computed from; a conflict re-reads the object, and recomputes unless only metadata the
    operator does not act on changed (then the same status is written again)."""
    try:
        td = _freshest(body, item, env)
        outcome = reconcile(td, env)
        for _ in range(CONFLICT_RETRIES):
            meta = td["metadata"]
            if outcome.status == (td.get("status") or {}):
                telemetry.phase(meta["uid"], outcome.status)
                break
            try:
                written = env.kube.replace_status(TRAINDEPLOY, meta["namespace"], meta["name"], outcome.status,
                                                  resource_version=meta.get("resourceVersion"))
                item.written = written["metadata"]["resourceVersion"]
                telemetry.written(meta["uid"], td.get("status") or {}, outcome)
                break
            except Conflict:
                metrics.STATUS_CONFLICTS.inc()
                live = env.kube.get(TRAINDEPLOY, meta["namespace"], meta["name"])
                if live is None:
                    return None
                # Most conflicts are kopf's own metadata patches (its finalizer, its annotations):
                # then the status computed still holds and is written again as it is; anything
                # else it reads is recomputed, so nothing outside is done twice for nothing.
                if not _same_inputs(td, live):
                    outcome = reconcile(live, env)
                td = live
        else:
            logger.warning("Status kept changing under the operator; trying again later.")
            outcome.blocked = True
            return outcome
    except KubeError as error:
        logger.warning("Could not read or write the TrainDeploy: %s", error)
        return None
    except Exception:  # noqa: BLE001 - a bug must not kill the loop; it is logged and retried
        logger.exception("Reconciliation failed unexpectedly; retrying with backoff.")
        return None
    for event in outcome.events:
        kopf.event(td, type=event.type, reason=event.reason, message=event.message)
    return outcome


def _same_inputs(before: dict, after: dict) -> bool:
    """Whether a pass over `after` would start from what the pass over `before` started from:
    the same spec, status, and annotations and deletion the operator reads."""
    return (before.get("spec") == after.get("spec") and (before.get("status") or {}) == (after.get("status") or {})
            and _interesting(before) == _interesting(after))


def _next_delay(outcome: Outcome | None, item: _TrainDeploy, config: OperatorConfig) -> float:
    if outcome is None or outcome.blocked:
        item.failures += 1
        metrics.RETRIES.labels("error" if outcome is None else "blocked").inc()
        return min(config.backoff_max, config.backoff_initial * 2 ** (item.failures - 1))
    item.failures = 0
    if outcome.requeue_after is None:
        return config.resync_interval
    return min(outcome.requeue_after, config.resync_interval)


def _interesting(body: kopf.Body) -> tuple:
    """What a TrainDeploy event must change to be worth a reconcile: not our own status writes."""
    meta = body.get("metadata", {})
    # Only the annotations the operator acts on: not kopf's bookkeeping, nor other tools' marks.
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k in triggers.USER_ANNOTATIONS}
    return meta.get("generation"), tuple(sorted(annotations.items())), meta.get("deletionTimestamp")


def _wake(queue: WorkQueue, uid: str | None) -> None:
    if uid and uid in _items:
        queue.add(uid)


# The event handlers are async: kopf runs them on the event loop, where the queue lives.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def traindeploy_changed(type: str | None, body: kopf.Body, uid: str, memo: kopf.Memo, **_) -> None:  # noqa: A002 (kopf's name)
    """Keeps the TrainDeploy's latest version and queues a pass when something the operator acts
    on changed: not on its own status writes."""
    # Started here, not at start-up: its workers copy this context, in which kopf's processing
    # of an object put its Event queue (kopf.event and the per-object loggers post through it).
    queue: WorkQueue = memo.queue.start()
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        # Deleting: the cycle stops here; the deletion handler ends what runs outside the cluster.
        _forget(uid, queue)
        return
    item = _items.get(uid)
    if item is None:
        item = _items[uid] = _TrainDeploy(body=kept(body))
    else:
        item.body = kept(body)
    if not item.passed:
        queue.add(uid, _first_delay(body, memo.env.config))
    elif _interesting(body) != item.seen:
        queue.add(uid)


def _forget(uid: str, queue: WorkQueue) -> None:
    if _items.pop(uid, None) is not None:
        queue.forget(uid)
        metrics.PHASES.forget(uid)


# Not optional: kopf adds its finalizer on first sight for it, so that this runs before the
# object goes.
@kopf.on.delete(GROUP, VERSION, PLURAL)
async def stop_outside_work(body: kopf.Body, uid: str, memo: kopf.Memo, logger: kopf.Logger, **_) -> None:
    """Children go with their owner; the KFP run and the MLflow run are outside the cluster and
    are stopped here, best effort (a deletion never waits on an outage), once a pass under way
    has ended (it might have started them)."""
    _forget(uid, memo.queue)
    await memo.queue.done(uid)

    def stop() -> None:
        try:
            cycle.stop_outside_work(Pass(dict(body), memo.env))
        except Problem as problem:
            logger.warning("Could not stop the cycle's outside work: %s", problem.result.message)
        except KubeError as error:
            logger.warning("Could not stop the cycle's outside work: %s", error)

    await asyncio.to_thread(stop)
