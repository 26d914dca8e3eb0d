"""What every stage declares: its condition, the phase shown while it runs, its deadline, and the
function that runs it. Each stage module holds one `STAGE`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from traindeploy.results import Result

if TYPE_CHECKING:  # annotations only: stages get the pass, they do not import its module's state
    from traindeploy.context import Pass


@dataclass(frozen=True)
class Stage:
    name: str  # the stage's name in status.failedStage
    condition: str  # its condition type; on success the reason is the type itself
    phase: str  # the phase (and the condition's reason) while it runs
    run: Callable[["Pass"], Result]
    applies: Callable[[dict], bool] = lambda spec: True
    deadline_reason: str | None = None
    repeats: bool = False  # reconciled in every pass, even when done (serving follows the spec)
