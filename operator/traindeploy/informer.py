"""What the operator knows of its children without asking: each child kind listed once, then
watched from the list's resourceVersion, as client-go's informers do, and kept in memory for the
passes to read (`Kube.read_watched`).

Why not kopf's indexes, which did this before: kopf holds every object's first handling until all
indexes are filled, and each indexed object it lists wakes every object waiting at that barrier,
so a restart with 1000 TrainDeploys and their 2000 children spent 15 s in kopf's bookkeeping
alone (quadratic in the number of objects). Here the passes wait on one event: every kind
listed.

One thread per kind and namespace (or per kind, cluster-wide) runs list, then watch until the
server ends it (every few minutes), then watch again from the last resourceVersion (bookmarks
advance it while nothing changes); a watch refused as too old (410 Gone, as an HTTP answer or as
an ERROR event in the stream) lists again. A kind the cluster does not serve (its CRD is not
installed), or that the operator may not list, is not cached: reads of it go to the apiserver,
and the list is tried again a little later.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from traindeploy.apiserver import ApiError, ApiServer, WatchStream
from traindeploy.kube import Kind, KindNotServed, KubeError, NotFound, classify, kept

log = logging.getLogger(__name__)

# A watch request asks the server to end it after this long, and gives up waiting a bit later.
WATCH_SECONDS = 300
# A list is given up after this long.
LIST_SECONDS = 60
# A failed list or watch is tried again after this long (a kind not served: after the longer one).
RETRY_SECONDS = 2.0
NOT_SERVED_RETRY_SECONDS = 30.0


class ChildCache:
    """The children of one kind as last delivered, as `kept` strings, under (namespace, name) and
    (namespace, label, value) for the label it is keyed by. It answers for a namespace once a
    list filled it (`synced_for`): before that, or while listing fails, reads go to the apiserver."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._lock = threading.Lock()
        self._synced: set[str | None] = set()  # namespaces listed; None: the whole cluster
        self._objects: dict[tuple[str, str], tuple[str, str | None]] = {}  # key -> (kept, label value)
        self._by_label: dict[tuple[str, str, str], dict[str, str]] = {}

    def synced_for(self, namespace: str) -> bool:
        return None in self._synced or namespace in self._synced

    def get(self, key: tuple, default=None) -> tuple[str, ...] | None:
        with self._lock:
            if len(key) == 2:
                found = self._objects.get(key)
                return (found[0],) if found else default
            return tuple(self._by_label.get(key, {}).values()) or default

    def put(self, obj: dict) -> bool:
        """Stores `obj`; whether it differs from what was stored."""
        meta = obj["metadata"]
        key, value = (meta["namespace"], meta["name"]), (meta.get("labels") or {}).get(self.label)
        compact = kept(obj)
        with self._lock:
            if self._objects.get(key) == (compact, value):
                return False
            self._drop(key)
            self._objects[key] = (compact, value)
            if value is not None:
                self._by_label.setdefault((key[0], self.label, value), {})[key[1]] = compact
            return True

    def remove(self, obj: dict) -> None:
        meta = obj["metadata"]
        with self._lock:
            self._drop((meta["namespace"], meta["name"]))

    def replace(self, namespace: str | None, objects: Iterable[dict]) -> list[dict]:
        """Holds exactly `objects` for `namespace` (None: all) from now on, a fresh list; returns
        those that changed, appeared or disappeared (the last as they were last seen)."""
        listed = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        changed = [obj for obj in listed.values() if self.put(obj)]
        with self._lock:
            gone = [key for key in self._objects if key not in listed and namespace in (None, key[0])]
            for key in gone:
                changed.append(json.loads(self._objects[key][0]))
                self._drop(key)
            self._synced.add(namespace)
        return changed

    def unsync(self, namespace: str | None) -> None:
        with self._lock:
            self._synced.discard(namespace)

    def _drop(self, key: tuple[str, str]) -> None:
        previous = self._objects.pop(key, None)
        if previous and previous[1] is not None:
            label_key = (key[0], self.label, previous[1])
            named = self._by_label.get(label_key)
            if named is not None:
                named.pop(key[1], None)
                if not named:
                    del self._by_label[label_key]


class Informer:
    """Keeps `cache` current with the objects of `kind` labelled `selector` in `namespace` (None:
    the whole cluster), calling `changed(obj)` after each change is stored."""

    def __init__(self, api: ApiServer, kind: Kind, namespace: str | None, selector: str, cache: ChildCache,
                 changed: Callable[[dict], None]) -> None:
        self.api = api
        self.kind, self.namespace, self.selector = kind, namespace, selector
        self.cache, self.changed = cache, changed
        self.tried = threading.Event()  # the first list was tried (filled, or refused)
        self.stopping = threading.Event()
        self._stream: WatchStream | None = None
        where = namespace or "cluster"
        self._thread = threading.Thread(target=self._run, name=f"informer-{kind.plural}-{where}", daemon=True)

    def start(self) -> "Informer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        stream = self._stream
        if stream is not None:  # ends a watch waiting for its next event at once
            stream.stop()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                version = self._list()
                while not self.stopping.is_set():
                    version = self._watch(version)
            except ApiError as error:
                self._failed(classify(f"list or watch {self.kind.kind}", error))
            except Exception as error:  # noqa: BLE001 - Unreachable, or anything: the thread lives on
                log.warning("Watching %s failed (%s: %s); listing again.", self.kind.plural, type(error).__name__, error)
                self._read_from_apiserver(RETRY_SECONDS)

    def _failed(self, error: KubeError) -> None:
        if error.status == 410:  # the watch's resourceVersion is too old: list again at once
            return
        if isinstance(error, (KindNotServed, NotFound)):  # no CRD yet: look again now and then, quietly
            self._read_from_apiserver(NOT_SERVED_RETRY_SECONDS)
            return
        log.warning("Could not list or watch %s: %s; reading them from the apiserver meanwhile.",
                    self.kind.plural, error)
        self._read_from_apiserver(RETRY_SECONDS)

    def _read_from_apiserver(self, seconds: float) -> None:
        """Until a list succeeds again, reads of this namespace go to the apiserver."""
        self.cache.unsync(self.namespace)
        self.tried.set()
        self.stopping.wait(seconds)

    def _list(self) -> str:
        listed = self.api.request("GET", self.kind.path(self.namespace), query={"labelSelector": self.selector},
                                  timeout=LIST_SECONDS)
        for obj in self.cache.replace(self.namespace, listed.get("items") or []):
            self.changed(obj)
        self.tried.set()
        return listed["metadata"]["resourceVersion"]

    def _watch(self, version: str) -> str:
        """Applies the watch's events until the server ends it; the resourceVersion to go on from.
        An ERROR event (410: `version` is too old) raises `ApiError`."""
        query = {"labelSelector": self.selector, "resourceVersion": version, "allowWatchBookmarks": True,
                 "timeoutSeconds": WATCH_SECONDS}
        with self.api.watch(self.kind.path(self.namespace), query, timeout=WATCH_SECONDS + 30) as stream:
            self._stream = stream
            try:
                if self.stopping.is_set():  # stopped before the stream could be stopped
                    return version
                for event in stream:
                    kind, obj = event["type"], event["object"]
                    if kind == "DELETED":
                        self.cache.remove(obj)
                        self.changed(obj)
                    elif kind in ("ADDED", "MODIFIED") and self.cache.put(obj):
                        self.changed(obj)
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if self.stopping.is_set():
                        break
            finally:
                self._stream = None
        return version


class Informers:
    """One informer per child kind and namespace; `caches` by kind, for `Kube.read_watched`."""

    def __init__(self, api: ApiServer, kinds: Sequence[Kind], namespaces: Sequence[str], selector: str, label: str,
                 changed: Callable[[dict], None]) -> None:
        self.caches = {kind: ChildCache(label) for kind in kinds}
        self.informers = [Informer(api, kind, namespace, selector, self.caches[kind], changed)
                          for kind in kinds for namespace in (namespaces or [None])]

    def start(self) -> "Informers":
        for informer in self.informers:
            informer.start()
        return self

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def wait_tried(self, timeout: float | None = None) -> bool:
        """Blocks until every kind's first list was tried (filled, or refused)."""
        return all(informer.tried.wait(timeout) for informer in self.informers)
