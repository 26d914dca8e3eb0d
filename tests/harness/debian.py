"""Command-line tools from Debian's packages that test tiers run for real:

    lua5.1      Argo CD runs health scripts with gopher-lua, which implements Lua 5.1: running them
                under the reference implementation catches anything a newer Lua would accept but
                Argo CD would not (`goto`, `//`, bit operators, `table.unpack`, `utf8`, ...).
    shellcheck  the kind recipe (scripts/kind-e2e.sh), which cannot run here (no Docker).
    promtool    (package prometheus) the PrometheusRule's alerts, checked and unit-tested.

`tool(name)` finds the executable on PATH; on a machine without it, when running as root, it
installs the Debian package once (apt-get is idempotent, and a lock keeps parallel test runs from
racing each other). Anyone else gets an error that says what to install.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

# executable -> Debian package
PACKAGES = {"lua5.1": "lua5.1", "shellcheck": "shellcheck", "promtool": "prometheus"}


class ToolUnavailable(RuntimeError):
    """The tool is missing, and there is no way to install it here."""


LuaUnavailable = ToolUnavailable  # the name the Argo CD tier knows


@contextlib.contextmanager
def _install_lock(package: str):
    with open(Path(tempfile.gettempdir()) / f"traindeploy-{package}-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _found(executable: str) -> Path | None:
    found = shutil.which(executable)
    return Path(found) if found else None


def tool(executable: str) -> Path:
    """Path of `executable`, installing its Debian package if needed and allowed."""
    package = PACKAGES[executable]
    found = _found(executable)
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolUnavailable(f"{executable} is not on PATH; install it (Debian/Ubuntu: "
                              f"`sudo apt-get install {package}`)")
    with _install_lock(package):
        found = _found(executable)  # another test process may have installed it while we waited
        if found:
            return found
        started = time.monotonic()
        log.warning("installing the Debian package %s for the tests", package)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]):
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise ToolUnavailable(f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
                                      f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
        found = _found(executable)
        if not found:
            raise ToolUnavailable(f"installed {package} but {executable} is still not on PATH")
        log.warning("installed %s in %.1fs", package, time.monotonic() - started)
        return found


def lua_interpreter() -> Path:
    return tool("lua5.1")


def lua_version(interpreter: Path) -> str:
    """What the interpreter says about itself, e.g. 'Lua 5.1.5  Copyright (C) 1994-2012 Lua.org, PUC-Rio'."""
    result = subprocess.run([str(interpreter), "-v"], capture_output=True, text=True, check=True)
    return (result.stdout or result.stderr).strip()
