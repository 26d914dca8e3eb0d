"""kopf's connection pool is bounded by what its watches and requests need, never below its
watch streams (which would starve them)."""

from __future__ import annotations

from traindeploy.handlers import KOPF_REQUEST_CONNECTIONS, kopf_connections

OBSERVERS = 2  # kopf's CRD and namespace observers


def test_one_stream_per_namespace_plus_the_observers_and_the_requests_share():
    assert kopf_connections(("team-a",)) == 1 + OBSERVERS + KOPF_REQUEST_CONNECTIONS
    assert kopf_connections(("team-a", "team-b", "team-c")) == 3 + OBSERVERS + KOPF_REQUEST_CONNECTIONS


def test_cluster_wide_watches_once():
    assert kopf_connections(()) == 1 + OBSERVERS + KOPF_REQUEST_CONNECTIONS


def test_unknown_namespaces_are_not_bounded():
    assert kopf_connections(None) is None
