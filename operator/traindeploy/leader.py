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

from kubernetes import client
from kubernetes.client.rest import ApiException

from traindeploy import metrics

log = logging.getLogger(__name__)


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
    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, me: str, *,
                 lease_duration: float, renew_deadline: float, retry_period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        check_timings(lease_duration, renew_deadline, retry_period)
        self.api, self.namespace, self.name, self.me = api, namespace, name, me
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self._observed: tuple | None = None
        self._observed_at = 0.0
        self.renewed_at: float | None = None  # when this candidate last wrote itself as holder

    # -- one attempt ---------------------------------------------------------------------------------

    def try_acquire_or_renew(self, timeout: float) -> bool:
        """One read and at most one write; True when this candidate holds the Lease afterwards."""
        now = dt.datetime.now(dt.timezone.utc)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as error:
            if error.status != 404:
                log.warning("Could not read Lease %s/%s: HTTP %s.", self.namespace, self.name, error.status)
                return False
            return self._create(now, timeout)
        except Exception as error:  # noqa: BLE001 - connection errors of urllib3 and the OS alike
            log.warning("Could not read Lease %s/%s: %s.", self.namespace, self.name, type(error).__name__)
            return False
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self.lease_duration
        if holder and holder != self.me and self.clock() < self._observed_at + duration:
            return False
        if holder != self.me:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + (1 if holder else 0)
        spec.holder_identity, spec.renew_time = self.me, now
        spec.lease_duration_seconds = int(self.lease_duration)
        lease.spec = spec
        sent = self.clock()
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=timeout)
        except ApiException as error:  # 409: someone else wrote first
            log.info("Lease %s/%s not taken: HTTP %s.", self.namespace, self.name, error.status)
            return False
        except Exception as error:  # noqa: BLE001
            log.warning("Could not write Lease %s/%s: %s.", self.namespace, self.name, type(error).__name__)
            return False
        # The deadline counts from when the write was sent: the apiserver may have applied it at once.
        self.renewed_at = sent
        return True

    def _create(self, now: dt.datetime, timeout: float) -> bool:
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                              spec=client.V1LeaseSpec(holder_identity=self.me, acquire_time=now, renew_time=now,
                                                      lease_duration_seconds=int(self.lease_duration),
                                                      lease_transitions=0))
        sent = self.clock()
        try:
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
        except ApiException as error:  # 409: another candidate created it first
            log.info("Lease %s/%s not created: HTTP %s.", self.namespace, self.name, error.status)
            return False
        except Exception as error:  # noqa: BLE001
            log.warning("Could not create Lease %s/%s: %s.", self.namespace, self.name, type(error).__name__)
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
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.retry_period)
            if lease.spec is None or lease.spec.holder_identity != self.me:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = dt.datetime.now(dt.timezone.utc)
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.retry_period)
            log.info("Released Lease %s/%s.", self.namespace, self.name)
        except Exception as error:  # noqa: BLE001 - a standby then waits one lease duration instead
            log.warning("Could not release Lease %s/%s: %s.", self.namespace, self.name, type(error).__name__)
        finally:
            metrics.LEADER.set(0)
