"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does, so that of
several replicas exactly one reconciles.

- A candidate takes the Lease when nobody holds it, or when its record (holder, renewTime) has not
  changed for `lease_duration` seconds *as this candidate measured it* on its own monotonic
  clock: clocks of different machines are never compared.
- Every write carries the resourceVersion read, so two candidates racing for an expired Lease
  cannot both win: one of them gets 409 Conflict.
- The leader renews every `retry_period`. If it has not renewed for `renew_deadline` seconds, or
  finds someone else holding the Lease, it stops at once: the process exits and the Deployment
  starts it again as a standby. With renew_deadline + retry_period < lease_duration a deposed
  leader has stopped before any standby may take over.
- A leader that shuts down cleanly (SIGTERM, a rolling update) gives the Lease up, so a standby
  takes over within one retry period instead of a whole lease duration.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from typing import Callable

from traindeploy import metrics
from traindeploy.apiserver import ApiError, ApiServer, Kind, Unreachable
from traindeploy.conditions import precise_rfc3339

log = logging.getLogger(__name__)


LEASE = Kind("coordination.k8s.io", "v1", "leases", "Lease")


def identity(pod_name: str | None) -> str:
    """The pod's name and a random suffix: a container restarted in the same pod is a new candidate."""
    import socket

    return f"{pod_name or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def check_timings(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    if not 0 < retry_period < renew_deadline or renew_deadline + retry_period >= lease_duration:
        raise ValueError(f"leader election needs 0 < retry period ({retry_period:g}s) < renew deadline "
                         f"({renew_deadline:g}s) and renew deadline + retry period < lease duration "
                         f"({lease_duration:g}s)")


class LeaseElector:
    def __init__(self, api: ApiServer, namespace: str, name: str, me: str, *,
                 lease_duration: float, renew_deadline: float, retry_period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        check_timings(lease_duration, renew_deadline, retry_period)
        self.api, self.namespace, self.name, self.me = api, namespace, name, me
        self.path = LEASE.path(namespace, name)
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self._observed: tuple | None = None
        self._observed_at = 0.0
        self.renewed_at: float | None = None  # when this candidate last wrote itself as holder

    # -- one attempt ---------------------------------------------------------------------------------

    def try_acquire_or_renew(self, timeout: float) -> bool:
        """One read and at most one write; True when this candidate holds the Lease afterwards."""
        # A Lease's acquireTime and renewTime are MicroTimes: RFC 3339 with microseconds.
        now = precise_rfc3339(dt.datetime.now(dt.timezone.utc))
        try:
            lease = self.api.request("GET", self.path, timeout=timeout)
        except ApiError as error:
            if error.status != 404:
                log.warning("Could not read Lease %s/%s: HTTP %s.", self.namespace, self.name, error.status)
                return False
            return self._create(now, timeout)
        except Unreachable as error:
            log.warning("Could not read Lease %s/%s: %s.", self.namespace, self.name, error)
            return False
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        if holder and holder != self.me and self.clock() < self._observed_at + duration:
            return False
        if holder != self.me:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        spec["holderIdentity"], spec["renewTime"] = self.me, now
        spec["leaseDurationSeconds"] = int(self.lease_duration)
        lease["spec"] = spec
        sent = self.clock()
        try:  # carries the resourceVersion read: the write fails if anyone wrote since
            self.api.request("PUT", self.path, body=lease, timeout=timeout)
        except ApiError as error:  # 409: someone else wrote first
            log.info("Lease %s/%s not taken: HTTP %s.", self.namespace, self.name, error.status)
            return False
        except Unreachable as error:
            log.warning("Could not write Lease %s/%s: %s.", self.namespace, self.name, error)
            return False
        # The deadline counts from when the write was sent: the apiserver may have applied it at once.
        self.renewed_at = sent
        return True

    def _create(self, now: str, timeout: float) -> bool:
        body = {"apiVersion": LEASE.api_version, "kind": LEASE.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.me, "acquireTime": now, "renewTime": now,
                         "leaseDurationSeconds": int(self.lease_duration), "leaseTransitions": 0}}
        sent = self.clock()
        try:
            self.api.request("POST", LEASE.path(self.namespace), body=body, timeout=timeout)
        except ApiError as error:  # 409: another candidate created it first
            log.info("Lease %s/%s not created: HTTP %s.", self.namespace, self.name, error.status)
            return False
        except Unreachable as error:
            log.warning("Could not create Lease %s/%s: %s.", self.namespace, self.name, error)
            return False
        self.renewed_at = sent
        return True

    # -- the loops -------------------------------------------------------------------------------------

    def acquire(self, stopping: threading.Event | None = None) -> bool:
        """Blocks until this candidate leads (True) or `stopping` is set (False)."""
        metrics.LEADER.set(0)
        log.info("Waiting to lead: Lease %s/%s, as %s.", self.namespace, self.name, self.me)
        while not (stopping and stopping.is_set()):
            if self.try_acquire_or_renew(timeout=self.retry_period):
                log.info("Leading as %s (Lease %s/%s).", self.me, self.namespace, self.name)
                metrics.LEADER.set(1)
                return True
            if stopping is not None:
                stopping.wait(self.retry_period)
            else:
                time.sleep(self.retry_period)
        return False

    def keep(self, lost: Callable[[str], None], stopping: threading.Event) -> None:
        """Renews until `stopping`; calls `lost(why)` once the Lease cannot be kept."""
        while not stopping.is_set():
            assert self.renewed_at is not None
            deadline = self.renewed_at + self.renew_deadline
            stopping.wait(max(0.0, min(self.retry_period, deadline - self.clock())))
            if stopping.is_set():
                return
            remaining = deadline - self.clock()
            if remaining <= 0:
                lost(f"not renewed within {self.renew_deadline:g}s")
                return
            if not self.try_acquire_or_renew(timeout=max(0.1, min(self.retry_period, remaining))):
                holder = (self._observed or (None,))[0]
                if holder and holder != self.me:
                    lost(f"now held by {holder}")
                    return

    def release(self) -> None:
        """Gives the Lease up if this candidate still holds it (best effort)."""
        try:
            lease = self.api.request("GET", self.path, timeout=self.retry_period)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.me:
                return
            spec.pop("holderIdentity")
            spec["renewTime"] = precise_rfc3339(dt.datetime.now(dt.timezone.utc))
            self.api.request("PUT", self.path, body={**lease, "spec": spec}, timeout=self.retry_period)
            log.info("Released Lease %s/%s.", self.namespace, self.name)
        except (ApiError, Unreachable) as error:  # a standby then waits one lease duration instead
            log.warning("Could not release Lease %s/%s: %s.", self.namespace, self.name, error)
        finally:
            metrics.LEADER.set(0)
