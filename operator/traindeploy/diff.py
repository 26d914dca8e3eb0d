"""Compare only what you own: which of the values we set does an object lack or hold differently?

Fields added by others (apiserver defaults, other controllers' defaulting webhooks) are not drift.
A desired value of None means "must be absent" (a merge patch with null removes the field).
"""

from __future__ import annotations

from typing import Any


def drift(desired: Any, actual: Any, path: str = "") -> list[str]:
    """Paths of values in `desired` that `actual` lacks or holds differently (lists item by item)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            if value is None:
                if actual.get(key) is not None:
                    found.append(f"{path}.{key}")
            elif key not in actual:
                found.append(f"{path}.{key}")
            else:
                found += drift(value, actual[key], f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [path or "."]
        return [p for i, (mine, theirs) in enumerate(zip(desired, actual))
                for p in drift(mine, theirs, f"{path}[{i}]")]
    return [] if desired == actual else [path or "."]


def without_nones(value: Any) -> Any:
    """`value` without the keys whose value is None: what a create sends."""
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value]
    return value
