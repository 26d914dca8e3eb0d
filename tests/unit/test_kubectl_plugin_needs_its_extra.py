"""`kubectl traindeploy` needs the Kubernetes client, which is its extra's (`traindeploy[kubectl]`),
not the operator's: without it the plugin says what to install instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

from harness.paths import REPO_ROOT

WITHOUT_CLIENT = """
import sys
sys.modules["kubernetes"] = None  # as where only the operator's dependencies are installed
from traindeploy.kubectl_plugin import main
sys.exit(main(["get", "churn"]))
"""


def test_without_the_client_the_plugin_names_the_extra():
    done = subprocess.run([sys.executable, "-c", WITHOUT_CLIENT], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO_ROOT / "operator"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert "pip install 'traindeploy[kubectl]'" in done.stderr
    assert "Traceback" not in done.stderr
