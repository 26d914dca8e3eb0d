"""Assertions shared by tests that compare what was sent to the apiserver with what it stored."""

from __future__ import annotations

from typing import Any

from traindeploy.diff import drift


def dropped_fields(sent: Any, stored: Any) -> list[str]:
    """Paths of values in `sent` that `stored` lacks or holds differently.

    Defaults the apiserver adds are fine; a field it pruned (unknown to the schema) or changed
    is listed. The operator uses the same comparison to decide whether a child needs a patch.
    """
    return drift(sent, stored)
