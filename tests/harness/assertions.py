"""Assertions shared by tests that compare what was sent to the apiserver with what it stored."""

from __future__ import annotations

from typing import Any


def dropped_fields(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Paths of values in `sent` that `stored` lacks or holds differently.

    Defaults the apiserver adds are fine; a field it pruned (unknown to the schema) or changed
    is listed. Lists are compared item by item.
    """
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        problems = []
        for key, value in sent.items():
            if key not in stored:
                problems.append(f"{path}.{key}")
            else:
                problems += dropped_fields(value, stored[key], f"{path}.{key}")
        return problems
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [p for i, (a, b) in enumerate(zip(sent, stored)) for p in dropped_fields(a, b, f"{path}[{i}]")]
    return [] if sent == stored else [path]
