"""Child processes that never outlive the test run: the package's own (traindeploy.dev.processes)."""

from traindeploy.dev.processes import LocalServer, free_port, start, stop, wait_until  # noqa: F401
