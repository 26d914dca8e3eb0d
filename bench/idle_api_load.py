"""How much API load does the operator put on the cluster for TrainDeploys that are waiting?

The design goal: load grows with change, not with the number of TrainDeploys. This benchmark
creates N TrainDeploys, waits until all of them wait on their (watched) training job, then counts
the requests the kube-apiserver serves during a quiet window, from its own
`apiserver_request_total` counter (watches excluded). The baseline is the same window measured
with the operator stopped, in the same run, so the controller manager's own traffic cancels out.

    PYTHONPATH=tests .venv/bin/python bench/idle_api_load.py --counts 10 50 --window 20
"""

from __future__ import annotations

import argparse
import re
import ssl
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from e2e.manifests import minimal  # noqa: E402
from e2e.operator_process import OperatorProcess  # noqa: E402
from harness.controlplane import ControlPlane  # noqa: E402
from harness.mlflow_server import MlflowServer  # noqa: E402

REQUEST_LINE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


def non_watch_requests(cp: ControlPlane) -> dict[str, float]:
    """Request counts by verb, watches excluded, as the apiserver counts them."""
    context = ssl.create_default_context(cafile=str(cp.ca_file))
    request = urllib.request.Request(cp.server + "/metrics", headers={"Authorization": f"Bearer {cp.admin_token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = REQUEST_LINE.match(line)
        if not match:
            continue
        labels = dict(part.split("=", 1) for part in match["labels"].split(","))
        verb = labels.get("verb", "").strip('"')
        if verb in ("WATCH", "CONNECT"):
            continue
        totals[verb] = totals.get(verb, 0.0) + float(match["value"])
    return totals


def window(cp: ControlPlane, seconds: float) -> dict[str, float]:
    before = non_watch_requests(cp)
    time.sleep(seconds)
    after = non_watch_requests(cp)
    # The metrics scrape itself is one GET each time; it is in both windows alike.
    return {verb: after.get(verb, 0) - before.get(verb, 0) for verb in after if after.get(verb, 0) != before.get(verb, 0)}


def run(counts: list[int], seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as cp, MlflowServer() as mlflow:
        cp.install_all_crds()
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        print(f"{'TrainDeploys':>12} {'setup s':>8} {'baseline req':>13} {'operator req':>13} "
              f"{'req/TD/min':>11} {'status writes':>14}")
        for count in counts:
            namespace = f"bench-{count}"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            settings = {"TRAINDEPLOY_MLFLOW_TRACKING_URI": mlflow.url, "TRAINDEPLOY_RESYNC_INTERVAL": "600"}
            operator = OperatorProcess(namespace, cp.kubeconfig, Path(tmp), settings)
            baseline = window(cp, seconds)
            operator.start()
            started = time.monotonic()
            for index in range(count):
                custom.create_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace, "traindeploys",
                                                       minimal(f"td-{index}", f"bench-{count}-{index}"))
            while True:
                items = custom.list_namespaced_custom_object("traindeploy.io", "v1alpha1", namespace,
                                                             "traindeploys")["items"]
                if sum(1 for td in items if td.get("status", {}).get("phase") == "Training") == count:
                    break
                time.sleep(0.5)
            setup = time.monotonic() - started
            time.sleep(2)  # let the last status writes land
            measured = window(cp, seconds)
            operator.stop()
            base, total = sum(baseline.values()), sum(measured.values())
            extra = max(0.0, total - base)
            writes = measured.get("PATCH", 0) - baseline.get("PATCH", 0)
            print(f"{count:>12} {setup:>8.1f} {base:>13.0f} {extra:>13.0f} "
                  f"{extra / count / (seconds / 60):>11.2f} {max(0, writes):>14.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--window", type=float, default=20.0, help="seconds of quiet to measure")
    args = parser.parse_args()
    run(args.counts, args.window)
