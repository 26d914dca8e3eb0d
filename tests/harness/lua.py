"""A real Lua 5.1 interpreter for the tests of the Argo CD health scripts.

Argo CD runs health scripts with gopher-lua, which implements Lua 5.1. Running the scripts under
Debian's `lua5.1` (the reference implementation of that language version) catches anything a
newer Lua would accept but Argo CD would not: `goto`, integer division `//`, bit operators,
`table.unpack`, `utf8`, and so on.

`lua_interpreter()` finds `lua5.1` on PATH; on a machine without it, when running as root, it
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

EXECUTABLE = "lua5.1"
DEBIAN_PACKAGE = "lua5.1"
_LOCK = Path(tempfile.gettempdir()) / "traindeploy-lua5.1-install.lock"


class LuaUnavailable(RuntimeError):
    """No Lua 5.1 interpreter, and no way to install one here."""


@contextlib.contextmanager
def _install_lock():
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _found() -> Path | None:
    found = shutil.which(EXECUTABLE)
    return Path(found) if found else None


def lua_interpreter() -> Path:
    """Path of a Lua 5.1 interpreter (`lua5.1`), installing Debian's package if needed and allowed."""
    found = _found()
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise LuaUnavailable(
            f"{EXECUTABLE} is not on PATH; install it (Debian/Ubuntu: `sudo apt-get install {DEBIAN_PACKAGE}`) "
            "to run the Argo CD health script tests")
    with _install_lock():
        found = _found()  # another test process may have installed it while we waited
        if found:
            return found
        started = time.monotonic()
        log.warning("installing the Debian package %s (Lua 5.1) for the Argo CD health script tests",
                    DEBIAN_PACKAGE)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", DEBIAN_PACKAGE]):
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise LuaUnavailable(f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
                                     f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
        found = _found()
        if not found:
            raise LuaUnavailable(f"installed {DEBIAN_PACKAGE} but {EXECUTABLE} is still not on PATH")
        log.warning("installed %s in %.1fs", DEBIAN_PACKAGE, time.monotonic() - started)
        return found


def lua_version(interpreter: Path) -> str:
    """What the interpreter says about itself, e.g. 'Lua 5.1.5  Copyright (C) 1994-2012 Lua.org, PUC-Rio'."""
    result = subprocess.run([str(interpreter), "-v"], capture_output=True, text=True, check=True)
    return (result.stdout or result.stderr).strip()
