"""Two operator replicas behind a Lease on the real control plane: exactly one acts. The active one
is killed with SIGKILL mid-training; the standby takes over, the lifecycle completes, nothing is
created twice. A watch samples both replicas' /metrics all along and fails the test if both
claim to lead or if a replica that does not lead reconciles at all; the second test shows that
watch catching two replicas without election."""

from __future__ import annotations

import threading
import time

from kubernetes import client

from e2e import manifests
from e2e.operator_process import OperatorProcess
from e2e.players import assert_trained_and_registered_once, train_into_run, wait_for
from e2e.test_lifecycle import _phase, create

ELECTION = {"TRAINDEPLOY_LEADER_ELECTION": "true", "TRAINDEPLOY_LEASE_DURATION": "4",
            "TRAINDEPLOY_RENEW_DEADLINE": "2.5", "TRAINDEPLOY_RETRY_PERIOD": "0.5"}


def _scrape(process: OperatorProcess) -> dict | None:
    try:
        return process.scrape() if process.running else None
    except OSError:  # killed between the check and the request
        return None


def _passes(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items() if name == "traindeploy_reconcile_total")


class ActingWatch(threading.Thread):
    """Samples every replica's metrics: who says it leads, and who has reconciled. A violation is
    two replicas leading at once, or a replica reconciling while it does not lead."""

    def __init__(self, replicas: list[OperatorProcess]) -> None:
        super().__init__(daemon=True)
        self.replicas, self.violations, self.samples = replicas, [], 0
        self.acting: list[tuple[float, str]] = []  # (time, name) whenever the leader changes
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            seen = {p.logfile.parent.name: _scrape(p) for p in self.replicas}
            leading = sorted(name for name, s in seen.items() if s and s.get(("traindeploy_leader", ())) == 1)
            if len(leading) > 1:
                self.violations.append(f"{leading} lead at once")
            for name, samples in seen.items():
                if samples and name not in leading and _passes(samples) > 0:
                    self.violations.append(f"{name} reconciled without leading")
            if leading and (not self.acting or self.acting[-1][1] != leading[0]):
                self.acting.append((time.monotonic(), leading[0]))
            self.samples += 1
            self._halt.wait(0.2)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def _replica(control_plane, namespace, tmp_path, settings, name) -> OperatorProcess:
    (tmp_path / name).mkdir()
    return OperatorProcess(namespace, control_plane.kubeconfig, tmp_path / name, settings)


def test_standby_takes_over_a_killed_leader_and_creates_nothing_twice(
        control_plane, api_client, namespace, players, mlflow_server, model_name, operator_settings, tmp_path):
    settings = {**operator_settings, **ELECTION, "TRAINDEPLOY_LEASE_NAMESPACE": namespace}
    first = _replica(control_plane, namespace, tmp_path, settings, "first").start()
    wait_for(lambda: _scrape(first), lambda s: s.get(("traindeploy_leader", ())) == 1, timeout=30,
             what="the first replica to lead")
    second = _replica(control_plane, namespace, tmp_path, settings, "second").start()
    watch = ActingWatch([first, second])
    watch.start()
    try:
        create(api_client, namespace, manifests.minimal("churn", model_name))
        job = players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
        players.wait_td("churn", _phase("Training"))
        assert _passes(second.scrape()) == 0 and second.scrape()[("traindeploy_leader", ())] == 0

        killed = time.monotonic()
        first.kill()  # SIGKILL mid-training: the Lease is not released
        wait_for(lambda: _scrape(second), lambda s: s.get(("traindeploy_leader", ())) == 1, timeout=30,
                 what="the standby to lead")
        leading = time.monotonic() - killed
        wait_for(lambda: _scrape(second), lambda s: _passes(s) > 0, timeout=30, what="the standby to reconcile")
        acting = time.monotonic() - killed
        print(f"\nfailover: standby leads {leading:.1f}s and reconciles {acting:.1f}s after SIGKILL "
              f"(lease duration {ELECTION['TRAINDEPLOY_LEASE_DURATION']}s)")
        assert 3.5 <= leading <= 4 + 5, leading  # not before the Lease expired; soon after

        train_into_run(job, {"accuracy": 0.93})
        players.pytorchjob("churn-g1-train", "Succeeded")
        players.wait_child("serving.kserve.io", "v1beta1", "inferenceservices", "churn")
        players.inferenceservice("churn", ready=True)
        td = players.wait_td("churn", _phase("Ready"), timeout=60)
        time.sleep(2)  # a window for anything created twice
    finally:
        watch.stop()
        second.stop()
        first.stop()

    assert watch.samples > 20 and watch.violations == [], watch.violations
    assert [name for _, name in watch.acting] == ["first", "second"]
    jobs = players.list("kubeflow.org", "v1", "pytorchjobs")
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]  # the same job: not made again
    assert len(players.list("serving.kserve.io", "v1beta1", "inferenceservices")) == 1
    assert_trained_and_registered_once(mlflow_server.url, td, model_name)
    created = [e.message for e in client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=churn").items if e.reason == "Created"]
    # No Created Event twice (the killed replica may not have posted its own before it died).
    assert len(created) == len(set(created)) and f"Created InferenceService {namespace}/churn." in created, created
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("traindeploy-operator", namespace)
    assert lease.spec.lease_transitions == 1
    assert second.log_tail(400).count("Leading as") == 1


def test_the_watch_catches_two_replicas_acting_at_once(control_plane, api_client, namespace, players, model_name,
                                                       operator_settings, tmp_path):
    """Without election both replicas run kopf: the watch must say so."""
    replicas = [_replica(control_plane, namespace, tmp_path, operator_settings, name).start()
                for name in ("first", "second")]
    watch = ActingWatch(replicas)
    watch.start()
    try:
        create(api_client, namespace, manifests.minimal("churn", model_name))
        players.wait_child("kubeflow.org", "v1", "pytorchjobs", "churn-g1-train")
        wait_for(lambda: watch.violations, timeout=30, what="the watch to see two replicas acting")
    finally:
        watch.stop()
        for replica in replicas:
            replica.stop()
    assert any("lead at once" in v for v in watch.violations)


def test_a_graceful_stop_hands_the_lease_over_at_once(control_plane, namespace, operator_settings, tmp_path):
    """SIGTERM (a rolling update, a drain): the leader gives the Lease up as it exits, so the
    standby leads within a retry period or so, not a whole lease duration later."""
    settings = {**operator_settings, **ELECTION, "TRAINDEPLOY_LEASE_DURATION": "30",
                "TRAINDEPLOY_RENEW_DEADLINE": "20", "TRAINDEPLOY_LEASE_NAMESPACE": namespace}
    first = _replica(control_plane, namespace, tmp_path, settings, "first").start()
    wait_for(lambda: _scrape(first), lambda s: s.get(("traindeploy_leader", ())) == 1, timeout=30,
             what="the first replica to lead")
    second = _replica(control_plane, namespace, tmp_path, settings, "second").start()
    try:
        time.sleep(1)
        assert second.scrape()[("traindeploy_leader", ())] == 0
        stopping = time.monotonic()
        first.stop()
        stopped = time.monotonic() - stopping
        wait_for(lambda: _scrape(second), lambda s: s.get(("traindeploy_leader", ())) == 1, timeout=30,
                 what="the standby to lead")
        handed_over = time.monotonic() - stopping
    finally:
        second.stop()
        first.stop()
    print(f"\nhand-over: the leader stopped in {stopped:.1f}s, the standby led {handed_over:.1f}s after SIGTERM")
    assert "Released Lease" in first.log_tail(50)
    assert handed_over < stopped + 3, "the standby waited for the Lease to expire"
