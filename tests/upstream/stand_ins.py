"""What the fast tiers' stand-ins (tests/e2e/players.py) write, caught before it reaches an
apiserver, for the upstream tier to hold against what the real controllers wrote."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from types import ModuleType

from kubernetes import client

from e2e.players import Players


class StatusRecorder:
    """Takes the place of the stand-in's CustomObjectsApi: keeps the status it would write to
    the child `name` of the kind `child` (a traindeploy.children module) and to nothing else."""

    def __init__(self, child: ModuleType, name: str) -> None:
        self.expected = (child.GROUP, child.VERSION, child.PLURAL, name)
        self.written: list[dict] = []

    def patch_namespaced_custom_object_status(self, group, version, namespace, plural, name, body):
        assert (group, version, plural, name) == self.expected
        self.written.append(body["status"])


def stand_in_status(child: ModuleType, name: str, play: Callable[[Players], None]) -> dict:
    """The one status `play(players)` writes for the child `name`."""
    players = Players(None, "unused")
    players.custom = StatusRecorder(child, name)
    play(players)
    (status,) = players.custom.written
    return status


def condition_shapes(status: dict) -> list[tuple]:
    """Each condition's type, status, reason and message, and which fields it has, in order."""
    return [(c["type"], c["status"], c["reason"], c["message"], sorted(c)) for c in status.get("conditions") or []]


@contextlib.contextmanager
def throwaway_namespaces(api_client) -> Iterator[Callable[[], str]]:
    """Gives a function that makes a fresh namespace; deletes every one it made on exit (the
    real controllers' runs for a module's comparisons, apart from the per-test `namespace`)."""
    core = client.CoreV1Api(api_client)
    made: list[str] = []

    def make() -> str:
        name = f"t-{secrets.token_hex(4)}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            core.delete_namespace(name)
