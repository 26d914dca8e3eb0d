"""What a stage answers, as controller-runtime's `Result` and Crossplane's function results do:
a stage returns one of these instead of raising for control flow.

- `Done(message)`: the stage's work is complete; the next stage runs in the same pass.
- `Wait(message, after)`: in progress; look again after `after` seconds (None: only when a watch
  event or a person's annotation wakes the loop). `reason` and `phase` override the stage's own
  in-progress reason and the phase shown (a canary step, an approval).
- `Fail(reason, message)`: the cycle failed for good, until the spec changes.
- `Blocked(reason, message)`: something outside is not there yet or not reachable (a Secret, a
  permission, a dependency); retried with backoff, and resumes by itself once fixed.

`Problem` carries a Fail or Blocked up from a call deep inside a stage (an outside client's typed
error); the driver turns it back into the result. It is the only exception stages raise on
purpose.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Done:
    message: str


@dataclass(frozen=True)
class Wait:
    message: str
    after: float | None = None
    reason: str | None = None
    phase: str | None = None


@dataclass(frozen=True)
class Fail:
    reason: str
    message: str


@dataclass(frozen=True)
class Blocked:
    reason: str
    message: str


Result = Done | Wait | Fail | Blocked

INVALID_SPEC = "InvalidSpec"


def invalid(field: str, message: str) -> Fail:
    """A spec value that cannot work: the message starts with the field's path."""
    return Fail(INVALID_SPEC, f"{field}: {message}")


class Problem(Exception):
    """A Fail or Blocked found deep in a call; the driver unwraps it."""

    def __init__(self, result: Fail | Blocked) -> None:
        super().__init__(result.message)
        self.result = result
