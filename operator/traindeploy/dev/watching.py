"""What an informer gives a controller, for the dev executors: every ADDED/MODIFIED/DELETED event
of one kind in one namespace, delivered to a handler from a thread that outlives failed requests."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kubernetes import client, watch

log = logging.getLogger(__name__)

# A watch request ends after this many seconds and starts again: short, so that stopping is quick.
WATCH_SECONDS = 5
RETRY_SECONDS = 1.0


class Watcher:
    """Calls `handle(event_type, object)` for every event of `group/version/plural` in `namespace`."""

    def __init__(self, api_client, namespace: str, kind: tuple[str, str, str],
                 handle: Callable[[str, dict], None], name: str) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace, self.kind, self.handle = namespace, kind, handle
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "Watcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=WATCH_SECONDS + 5)

    def _loop(self) -> None:
        group, version, plural = self.kind
        while not self.stopping.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(self.api.list_namespaced_custom_object, group, version,
                                           self.namespace, plural, timeout_seconds=WATCH_SECONDS,
                                           _request_timeout=WATCH_SECONDS + 10):
                    if self.stopping.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.handle(event["type"], event["object"])
            except Exception:  # noqa: BLE001 - an executor must outlive a failed request
                log.exception("watch of %s failed; watching again", plural)
                self.stopping.wait(RETRY_SECONDS)
            finally:
                stream.stop()


def patch_status(api_client, namespace: str, kind: tuple[str, str, str], name: str, status: dict) -> None:
    """Writes `status` on the status subresource, as the upstream controllers do."""
    group, version, plural = kind
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        group, version, namespace, plural, name, {"status": status}, _request_timeout=10)
