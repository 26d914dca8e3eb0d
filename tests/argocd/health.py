"""Runs the chart's Argo CD health scripts under a real Lua 5.1 interpreter, as Argo CD would.

The object reaches Lua as a table literal generated here (the JSON-to-Lua mapping Argo CD uses:
objects become tables with string keys, arrays become sequences, null becomes nil, numbers stay
numbers), and `run_health.lua` executes the script in the restricted environment Argo CD gives
custom health scripts.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.debian import lua_interpreter
from harness.paths import REPO_ROOT

ARGOCD_DIR = REPO_ROOT / "charts" / "traindeploy-operator" / "argocd"
RUNNER = Path(__file__).with_name("run_health.lua")
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def script(group: str, kind: str) -> Path:
    """The health script for a kind, named as the chart's ConfigMap template expects."""
    return ARGOCD_DIR / f"{group}_{kind}.lua"


def lua_string(value: str) -> str:
    """A double-quoted Lua 5.1 string; every byte outside printable ASCII as a 3-digit escape."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char in '"\\' or not 0x20 <= byte < 0x7F:
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"JSON has no {value}")
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_string(str(k))}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


@dataclass
class Health:
    status: str
    message: str


class HealthScriptError(AssertionError):
    pass


def run_health(script_path: Path, obj: dict, workdir: Path) -> Health:
    """hs.status and hs.message of `script_path` for `obj`; raises if the script fails."""
    object_file = workdir / "object.lua"
    object_file.write_text("return " + lua_literal(obj) + "\n")
    result = subprocess.run([str(lua_interpreter()), str(RUNNER), str(script_path), str(object_file)],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise HealthScriptError(f"{script_path.name} exited {result.returncode}: {result.stderr.strip()}")
    status, _, message = result.stdout.partition("\n")
    if status not in HEALTH_STATUSES:
        raise HealthScriptError(f"{script_path.name} returned the invalid status {status!r}")
    return Health(status, message)
