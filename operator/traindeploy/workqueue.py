"""A keyed work queue with delays, as client-go's workqueue: a fixed number of workers process
keys; a key is processed by one worker at a time; a key added while queued is queued once; a key
added while it is being processed goes again right after; and a key may be due later, which
costs an entry in a heap, not a task or a timer handle.

Why the operator keeps its own, instead of a kopf daemon per TrainDeploy as before: each daemon
held kopf's copy of the whole object (its managedFields too), an asyncio task, a stopper and a
logger, about 50 KiB per TrainDeploy, most of the operator's memory at a thousand; and
concurrency was the number of objects, bounded only by the thread pool behind them. Here the
number of workers bounds it, and a waiting key costs a few hundred bytes.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

# `process(key)` returns the seconds until the key is due again, or None: only when added.
Process = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    def __init__(self, process: Process, workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._process, self._workers, self._clock = process, max(1, workers), clock
        self._due: dict[Hashable, float] = {}  # key -> when, for keys waiting on the timer
        self._heap: list[tuple[float, int, Hashable]] = []  # (when, tie-breaker, key); stale when _due differs
        self._order = 0
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # keys added while active -> when they are due again
        self._dropped: set[Hashable] = set()  # keys forgotten while active
        self._done: dict[Hashable, list[asyncio.Future]] = {}
        self._timer_moved = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    def __len__(self) -> int:
        """Keys queued, active or waiting on the timer."""
        return len(self._due.keys() | self._queued | self._active | self._again.keys())

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Processes `key` in `delay` seconds at the latest (now when 0): an earlier due time
        already set stands, and a key being processed goes again once done."""
        when = self._clock() + max(0.0, delay)
        self._dropped.discard(key)
        if key in self._active:
            self._again[key] = min(when, self._again.get(key, math.inf))
        elif key in self._queued or self._due.get(key, math.inf) <= when:
            return
        elif delay <= 0:
            self._due.pop(key, None)
            self._enqueue(key)
        else:
            self._due[key] = when
            self._order += 1
            heapq.heappush(self._heap, (when, self._order, key))
            if self._heap[0][2] == key:
                self._timer_moved.set()

    def forget(self, key: Hashable) -> None:
        """Drops what is due for `key`; a processing under way ends without being repeated. A key
        already handed to the workers is still processed once (its `process` sees it is gone)."""
        self._due.pop(key, None)
        self._again.pop(key, None)
        if key in self._active:
            self._dropped.add(key)

    async def done(self, key: Hashable) -> None:
        """Returns once `key` is not being processed."""
        if key in self._active:
            future = asyncio.get_running_loop().create_future()
            self._done.setdefault(key, []).append(future)
            await future

    def start(self) -> "WorkQueue":
        """Starts the timer and the workers, in the current context (they copy it); once."""
        if self._tasks:
            return self
        self._tasks = [asyncio.create_task(self._timer(), name="workqueue-timer")]
        self._tasks += [asyncio.create_task(self._worker(), name=f"workqueue-worker-{n}")
                        for n in range(self._workers)]
        return self

    async def stop(self, timeout: float) -> None:
        """Takes no more keys, waits up to `timeout` for those being processed, then cancels."""
        self._closing = True
        if self._tasks:
            self._tasks[0].cancel()  # the timer: nothing becomes due any more
        waiting = [asyncio.ensure_future(self.done(key)) for key in list(self._active)]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _enqueue(self, key: Hashable) -> None:
        """Hands a key that is not active to the workers (a key due on the timer never is: `add`
        keeps an active key's next time in `_again`)."""
        if key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    async def _timer(self) -> None:
        while True:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                when, _, key = heapq.heappop(self._heap)
                if self._due.get(key) == when:
                    del self._due[key]
                    self._enqueue(key)
            # Entries made stale by an earlier add or a forget are dropped when they come up.
            self._timer_moved.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            try:
                await asyncio.wait_for(self._timer_moved.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _worker(self) -> None:
        while not self._closing:
            key = await self._ready.get()
            self._queued.discard(key)
            if self._closing:
                return
            self._active.add(key)
            delay = None
            try:
                delay = await self._process(key)
            except Exception:  # noqa: BLE001 - a worker must outlive any key
                log.exception("Processing %s failed unexpectedly.", key)
            finally:
                self._active.discard(key)
                for future in self._done.pop(key, ()):
                    if not future.done():
                        future.set_result(None)
            again = self._again.pop(key, None)
            if key in self._dropped:
                self._dropped.discard(key)
                continue
            if again is not None:
                self.add(key, again - self._clock())
            if delay is not None:
                self.add(key, delay)
