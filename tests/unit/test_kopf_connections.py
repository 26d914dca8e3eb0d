"""kopf's connection pool is bounded by what its watches and requests need, never below its
watch streams (which would starve them)."""

from __future__ import annotations

from traindeploy.handlers import KOPF_REQUEST_CONNECTIONS, kopf_connections
from traindeploy.reconciler import CHILD_KINDS

KINDS = 1 + len(CHILD_KINDS)  # the TrainDeploy and each child kind


def test_one_stream_per_kind_and_namespace_plus_the_observers_and_the_requests_share():
    assert kopf_connections(("team-a",)) == KINDS + 2 + KOPF_REQUEST_CONNECTIONS
    assert kopf_connections(("team-a", "team-b", "team-c")) == 3 * KINDS + 2 + KOPF_REQUEST_CONNECTIONS


def test_cluster_wide_watches_each_kind_once():
    assert kopf_connections(()) == KINDS + 2 + KOPF_REQUEST_CONNECTIONS


def test_patterns_and_unknown_namespaces_are_not_bounded():
    for namespaces in (("team-*",), ("team-a", "!kube-system"), ("team-?",), ("a,b",)):
        assert kopf_connections(namespaces) is None, namespaces
    assert kopf_connections(None) is None
