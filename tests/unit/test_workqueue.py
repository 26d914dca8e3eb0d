"""The TrainDeploys' work queue: one worker per key at a time, a key queued once however often it
is added, added again while processed goes again right after, due times honoured (the earliest
wins), forgotten keys not repeated, and a bounded number of workers."""

from __future__ import annotations

import asyncio

from traindeploy.workqueue import WorkQueue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def processed(process, keys: list[str], workers: int = 1, seconds: float = 0.05):
    """`process` after `keys` were added to a running queue and it ran for `seconds`."""
    async def scenario():
        queue = WorkQueue(process, workers=workers).start()
        for key in keys:
            queue.add(key)
        await asyncio.sleep(seconds)
        await queue.stop(1)
        return process

    return run(scenario())


class Recorder:
    def __init__(self, delay: float | None = None, hold: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay, self.hold = delay, hold
        self.active = self.most_active = 0
        self.per_key_active: dict[str, int] = {}

    async def __call__(self, key):
        self.calls.append(key)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.per_key_active[key] = self.per_key_active.get(key, 0) + 1
        assert self.per_key_active[key] == 1, f"{key} processed twice at once"
        await asyncio.sleep(self.hold)
        self.per_key_active[key] -= 1
        self.active -= 1
        return self.delay


def test_a_key_added_many_times_while_queued_is_processed_once():
    assert processed(Recorder(), ["a"] * 5, workers=2).calls == ["a"]


def test_a_key_added_while_processed_goes_again_once_right_after():
    async def scenario():
        process = Recorder(hold=0.05)
        queue = WorkQueue(process, workers=4).start()
        queue.add("a")
        await asyncio.sleep(0.01)
        for _ in range(3):
            queue.add("a")  # while it is processed: never in parallel with itself
        await asyncio.sleep(0.2)
        await queue.stop(1)
        return process.calls

    assert run(scenario()) == ["a", "a"]


def test_workers_bound_concurrency():
    process = processed(Recorder(hold=0.02), [f"k{n}" for n in range(20)], workers=3, seconds=0.5)
    assert sorted(process.calls) == sorted(f"k{n}" for n in range(20))
    assert process.most_active == 3


def test_due_times_are_kept_and_the_earliest_wins():
    async def scenario():
        process = Recorder()
        queue = WorkQueue(process, workers=1).start()
        queue.add("late", 0.3)
        queue.add("soon", 1.0)
        queue.add("soon", 0.1)  # earlier: it stands
        queue.add("soon", 5.0)  # later: ignored
        await asyncio.sleep(0.2)
        first = list(process.calls)
        await asyncio.sleep(0.2)
        await queue.stop(1)
        return first, process.calls

    first, calls = run(scenario())
    assert first == ["soon"]
    assert calls == ["soon", "late"]


def test_the_delay_a_pass_returns_schedules_the_next_one():
    assert 3 <= len(processed(Recorder(delay=0.05), ["a"], seconds=0.28).calls) <= 7


def test_forgotten_keys_are_not_repeated():
    async def scenario():
        process = Recorder(delay=0.01, hold=0.05)
        queue = WorkQueue(process, workers=1).start()
        queue.add("waiting", 0.1)
        queue.add("running")
        await asyncio.sleep(0.01)
        queue.forget("waiting")
        queue.forget("running")  # while processed: it ends and is not due again
        await queue.done("running")
        await asyncio.sleep(0.2)
        remaining = len(queue)
        await queue.stop(1)
        return process.calls, remaining

    calls, remaining = run(scenario())
    assert calls == ["running"]
    assert remaining == 0


def test_a_failing_process_does_not_kill_its_worker():
    calls = []

    async def process(key):
        calls.append(key)
        if key == "bad":
            raise RuntimeError("boom")
        return None

    processed(process, ["bad", "good"])
    assert calls == ["bad", "good"]


def test_stop_waits_for_the_processing_under_way():
    async def scenario():
        process = Recorder(hold=0.1)
        queue = WorkQueue(process, workers=1).start()
        queue.add("a")
        await asyncio.sleep(0.01)
        await queue.stop(5)
        return process.active, process.calls

    active, calls = run(scenario())
    assert calls == ["a"] and active == 0
