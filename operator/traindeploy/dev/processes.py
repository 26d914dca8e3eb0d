"""Child processes that never outlive the process that started them (`traindeploy dev`, the tests).

Every server is started in its own process group with a parent-death signal, so it is stopped
when its owner stops it, when its owner exits, and even when its owner is killed.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_running: set[subprocess.Popen] = set()


def _die_with_parent() -> None:
    # Linux sends the signal when the *thread* that started the child exits (see `start`).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# Linux sends the parent-death signal when the *thread* that started a child exits, so children
# asked for from short-lived threads are started by one thread that lives as long as the process.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="process-spawner")


def start(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    if threading.current_thread() is not threading.main_thread():
        return _spawner.submit(_start, argv, log_path, env, cwd).result()
    return _start(argv, log_path, env, cwd)


def _start(argv: list[str], log_path: Path, env: dict[str, str] | None, cwd: Path | None) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        log.close()
    _running.add(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Children of the leader (uvicorn workers, for one) may linger after it exits.
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _running.discard(proc)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_all() -> None:
    for proc in list(_running):
        stop(proc, grace=3.0)


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
               log_path: Path | None = None, interval: float = 0.2):
    """Poll `check()` until it returns a truthy value; fail early if `proc` has exited."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}{_tail(log_path)}")
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - any failure means "not yet"
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s (last error: {last_error}){_tail(log_path)}")


def _tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log_path} ---\n" + "\n".join(text)


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """A server run as child processes. Subclasses set `workdir`, `_owns_workdir` and
    `_procs` (what they started, in order) and implement `_start(timeout)`; `start()` stops what
    a failed start left running, `stop()` ends the processes last first and removes a workdir the
    server made itself."""

    workdir: Path
    _owns_workdir: bool = False
    _procs: list[subprocess.Popen]

    def _start(self, timeout: float) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 120.0):
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _before_stop(self) -> None:
        """What to undo while the processes still run (for example, a webhook registration)."""

    def stop(self) -> None:
        if self._procs:
            self._before_stop()
        for proc in reversed(self._procs):
            stop(proc)
        self._procs.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
