"""The Lease elector on the real apiserver: who may take the Lease and when, a race lost on the
resourceVersion, a clean hand-over, and a leader that stops once it cannot renew."""

from __future__ import annotations

import copy
import threading
import time

from traindeploy import apiserver as rest
from traindeploy.leader import LEASE, LeaseElector

NAME = "traindeploy-operator"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(api, namespace: str, me: str, clock=time.monotonic, **timings) -> LeaseElector:
    settings = {"lease_duration": 4.0, "renew_deadline": 2.5, "retry_period": 0.5, **timings}
    return LeaseElector(api, namespace, NAME, me, clock=clock, **settings)


def read(api, namespace: str) -> dict:
    return api.request("GET", LEASE.path(namespace, NAME), timeout=5)


def holder(api, namespace: str) -> str | None:
    return read(api, namespace)["spec"].get("holderIdentity")


def test_a_standby_takes_the_lease_only_after_it_expired_on_its_own_clock(apiserver, namespace):
    api = apiserver
    clock = Clock()
    a, b = elector(api, namespace, "a", clock), elector(api, namespace, "b", clock)
    assert a.try_acquire_or_renew(timeout=5)  # creates the Lease
    assert holder(api, namespace) == "a"
    assert not b.try_acquire_or_renew(timeout=5)  # b starts watching the record now
    clock.now += 3
    assert a.try_acquire_or_renew(timeout=5)  # a renews: the record changes
    clock.now += 3
    assert not b.try_acquire_or_renew(timeout=5)  # 3s since b saw a change: still a's
    clock.now += 3.9
    assert not b.try_acquire_or_renew(timeout=5)
    clock.now += 0.2  # 4.1s without a renewal, as b measured it
    assert b.try_acquire_or_renew(timeout=5)
    spec = read(api, namespace)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 4 and spec["acquireTime"] == spec["renewTime"]
    assert not a.try_acquire_or_renew(timeout=5)  # a sees b's record: not expired for a


class StaleReads:
    """The API as a candidate saw it before another one wrote: reads return an older Lease."""

    def __init__(self, api, lease) -> None:
        self.api, self.lease = api, lease

    def request(self, method, path, **options):
        if method == "GET":
            return copy.deepcopy(self.lease)
        return self.api.request(method, path, **options)


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win(apiserver, namespace):
    api = apiserver
    clock = Clock()
    assert elector(api, namespace, "old", clock).try_acquire_or_renew(timeout=5)
    stale = read(api, namespace)
    b, c = elector(api, namespace, "b", clock), elector(StaleReads(api, stale), namespace, "c", clock)
    b.try_acquire_or_renew(timeout=5)
    c.try_acquire_or_renew(timeout=5)
    clock.now += 5  # expired for both
    assert b.try_acquire_or_renew(timeout=5)
    assert not c.try_acquire_or_renew(timeout=5)  # its write carries the old resourceVersion: 409
    assert holder(api, namespace) == "b"


def test_a_released_lease_is_taken_at_once(apiserver, namespace):
    api = apiserver
    clock = Clock()
    a, b = elector(api, namespace, "a", clock), elector(api, namespace, "b", clock)
    assert a.try_acquire_or_renew(timeout=5)
    assert not b.try_acquire_or_renew(timeout=5)
    a.release()
    assert holder(api, namespace) is None
    assert b.try_acquire_or_renew(timeout=5)  # no wait for the lease duration


class Unreachable:
    def request(self, method, path, **options):
        raise rest.Unreachable(f"{method} {path}: connection refused")


def test_a_leader_that_cannot_renew_stops_within_the_renew_deadline(apiserver, namespace):
    api = apiserver
    leader = elector(api, namespace, "a", lease_duration=2.0, renew_deadline=1.0, retry_period=0.2)
    assert leader.acquire()
    leader.api = Unreachable()
    lost, stopping = [], threading.Event()
    started = time.monotonic()
    thread = threading.Thread(target=leader.keep, args=(lambda why: lost.append((time.monotonic(), why)), stopping))
    thread.start()
    thread.join(5)
    assert lost and lost[0][1] == "not renewed within 1s"
    # Stopped no later than the renew deadline after the last renewal, well before the Lease expires.
    assert lost[0][0] - leader.renewed_at <= 1.0 + 0.1
    assert lost[0][0] - started < 2.0


def test_a_leader_that_finds_another_holder_stops_at_once(apiserver, namespace):
    api = apiserver
    leader = elector(api, namespace, "a", retry_period=0.2)
    assert leader.acquire()
    lease = read(api, namespace)
    lease["spec"]["holderIdentity"] = "usurper"
    api.request("PUT", LEASE.path(namespace, NAME), body=lease, timeout=5)
    lost, stopping = [], threading.Event()
    thread = threading.Thread(target=leader.keep, args=(lost.append, stopping))
    thread.start()
    thread.join(5)
    assert lost == ["now held by usurper"]
