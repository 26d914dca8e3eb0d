"""Performance of the operator at N TrainDeploys, each figure beside a raw-client baseline measured
in the same run, on the real local control plane and MLflow (SQLite, one worker).

For each N, in its own namespace, first the baseline (bench/baseline.py: a plain async controller
doing the least the minimal lifecycle needs), then the operator (`python -m traindeploy run`, as
tests/e2e/operator_process.py starts it, at log level info, in a cached venv with its runtime
dependencies only, as its image: `operator_python`):

1. fan-in: N minimal TrainDeploys applied at once (32 creates in flight); time until every one
   has its PyTorchJob and phase Training (per object: from its create);
2. the fast driver (bench/driver.py) then completes every job and InferenceService; time until
   every one is Ready (per object: from the driver's start); every one must have exactly one
   PyTorchJob and one InferenceService;
3. requests per lifecycle: the apiserver's `apiserver_request_total` over 1+2, less the bench's
   and the driver's own requests (counted client-side) and the control plane's background
   (measured with nothing running); MLflow requests at a counting proxy (the driver bypasses it);
4. idle: requests and writes during a quiet window with N Ready;
5. memory and CPU of the controller process: /proc/<pid>/status VmRSS (idle before the apply and
   with N Ready), VmHWM (peak); utime+stime over 1+2, per lifecycle;
6. restart: the controller stopped and started; time until it has observed N Ready (the operator:
   its `traindeploy_traindeploys{phase="Ready"}` gauge; the baseline: its first lists), and the
   writes to TrainDeploys, children and Events (must be 0; every resourceVersion is compared too).

    PYTHONPATH=operator:tests .venv/bin/python bench/suite.py --counts 100 300 --window 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for path in (REPO / "tests", REPO / "operator"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from driver import Driver  # noqa: E402
from kube_async import INFERENCESERVICES, PYTORCHJOBS, TRAINDEPLOYS, WRITE_VERBS, Kube  # noqa: E402
from mlflow_proxy import CountingProxy  # noqa: E402

from e2e.manifests import minimal  # noqa: E402
from e2e.operator_process import OperatorProcess  # noqa: E402
from harness.controlplane import ControlPlane  # noqa: E402
from harness.mlflow_server import MlflowServer  # noqa: E402

APPLY_CONCURRENCY = 32
# Production defaults where they matter to the figures (resync, poll), short backoff so a
# transient MLflow refusal does not stall the run, and no start-up spread (the restart figure
# would otherwise include up to 5 s of deliberate delay).
OPERATOR_SETTINGS = {"TRAINDEPLOY_HTTP_TIMEOUT": "10", "TRAINDEPLOY_BACKOFF_INITIAL": "1",
                     "TRAINDEPLOY_BACKOFF_MAX": "10", "TRAINDEPLOY_POLL_INTERVAL": "30",
                     "TRAINDEPLOY_RESYNC_INTERVAL": "600", "TRAINDEPLOY_DEADLINE_GRACE": "60",
                     "TRAINDEPLOY_STARTUP_SPREAD": "0"}
# The least a minimal lifecycle needs (see bench/baseline.py), Events apart.
LIFECYCLE_RESOURCES = {"traindeploys", "pytorchjobs", "inferenceservices", "events"}
MINIMUM_KUBE = {("POST", "pytorchjobs"): 1, ("POST", "inferenceservices"): 1, ("PATCH", "traindeploys/status"): 3}
# The TrainDeploy's own experiment (the API's default, traindeploy/<namespace>/<name>), its run and
# the seven calls of registration and serving (bench/baseline.py).
MINIMUM_MLFLOW = 9


def operator_python() -> Path:
    """An interpreter with the operator's runtime dependencies and nothing else, as its image has
    (`pip install traindeploy`): the operator is measured as it ships. The test venv would not do:
    kopf imports the kubernetes client whenever it is installed (it recognises its model
    classes), and the test tiers install it for their own use."""
    import tomllib

    from traindeploy.dev.venvs import python_for

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(f"{requirement}\n" for requirement in dependencies))
        return python_for(requirements, name="operator-runtime")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delta(after: Counter, before: Counter) -> Counter:
    return Counter({key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- the two controllers under test -------------------------------------------------------------


class OperatorUnderTest:
    label = "operator"

    def __init__(self, namespace: str, cp: ControlPlane, tmp: Path, mlflow_url: str, artifacts: str) -> None:
        settings = {**OPERATOR_SETTINGS, "TRAINDEPLOY_MLFLOW_TRACKING_URI": mlflow_url,
                    "TRAINDEPLOY_MLFLOW_ARTIFACTS_DESTINATION": artifacts}
        logdir = tmp / namespace
        logdir.mkdir()
        self.process = OperatorProcess(namespace, cp.kubeconfig, logdir, settings, verbose=False,
                                       python=operator_python())

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def restart_and_observe(self, count: int, timeout: float = 600) -> float:
        started = time.monotonic()
        self.process.stop()
        restarted = time.monotonic()
        self.process.start()
        deadline = restarted + timeout
        while time.monotonic() < deadline:
            samples = self.process.scrape()
            if samples.get(("traindeploy_traindeploys", (("phase", "Ready"),)), 0) >= count:
                return time.monotonic() - restarted
            time.sleep(0.1)
        raise TimeoutError(f"the restarted operator observed fewer than {count} Ready in {timeout}s "
                           f"(stop took {restarted - started:.1f}s)")


class BaselineUnderTest:
    label = "baseline"

    def __init__(self, namespace: str, cp: ControlPlane, tmp: Path, mlflow_url: str, artifacts: str) -> None:
        self.argv = [sys.executable, str(BENCH / "baseline.py"), "--kubeconfig", str(cp.kubeconfig),
                     "--namespace", namespace, "--mlflow", mlflow_url, "--artifacts", artifacts]
        self.errors = open(tmp / f"{namespace}-baseline.log", "ab")
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _until(self, word: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(word):
                return line
        raise RuntimeError(f"the baseline exited before saying {word!r}")

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO / "operator")])}
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env)
        self._until("ready")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def restart_and_observe(self, count: int) -> float:
        self.stop()
        restarted = time.monotonic()
        self.start()
        line = self._until("synced")
        if int(line.split()[1]) < count:
            raise RuntimeError(f"the restarted baseline listed {line.split()[1]} of {count}")
        return time.monotonic() - restarted


# -- one controller, one N ------------------------------------------------------------------------


class Scenario:
    def __init__(self, kube: Kube, proxy: CountingProxy, mlflow_url: str, background: dict, window: float) -> None:
        self.kube, self.proxy, self.mlflow_url = kube, proxy, mlflow_url
        self.background, self.window = background, window

    def _less_background(self, counts: Counter, seconds: float) -> Counter:
        return Counter({key: max(0.0, value - self.background.get(key, 0.0) * seconds)
                        for key, value in counts.items()})

    async def _api_since(self, before: Counter, mine_before: Counter, since: float) -> Counter:
        """Requests the apiserver served since `before`, less ours and the background."""
        after = await self.kube.request_totals()
        served = delta(after, before)
        mine = delta(self.kube.counts, mine_before)
        return self._less_background(Counter({key: value - mine.get(key, 0) for key, value in served.items()}),
                                     time.monotonic() - since)

    async def run(self, controller, namespace: str, count: int) -> dict:
        kube = self.kube
        await kube._call("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        await asyncio.to_thread(controller.start)
        await asyncio.sleep(3)
        figures: dict = {"rss_idle": proc_status(controller.pid)["VmRSS"] / 1024}
        training_at: dict[str, float] = {}
        ready_at: dict[str, float] = {}

        async def observe() -> None:
            async for event, td in kube.watch(TRAINDEPLOYS, namespace):
                phase = ((td.get("status") or {}).get("phase")) if event in ("ADDED", "MODIFIED") else None
                name = td.get("metadata", {}).get("name")
                if phase == "Training":
                    training_at.setdefault(name, time.monotonic())
                elif phase == "Ready":
                    ready_at.setdefault(name, time.monotonic())
                if phase == "Failed":
                    print(f"  {controller.label}: {name} Failed: {td['status']}", flush=True)

        watcher = asyncio.ensure_future(observe())
        await asyncio.sleep(0.5)
        cpu0, api0, mine0 = cpu_seconds(controller.pid), await kube.request_totals(), Counter(kube.counts)
        self.proxy.counts.clear()
        created_at: dict[str, float] = {}
        limit = asyncio.Semaphore(APPLY_CONCURRENCY)

        async def create(index: int) -> None:
            name = f"td-{index}"
            async with limit:
                created_at[name] = time.monotonic()
                await kube.create(TRAINDEPLOYS, namespace, minimal(name, f"{namespace}-{index}"))

        t0 = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(count)))
        await self._until(lambda: len(training_at) >= count, f"{controller.label}: {count} in Training",
                          lambda: len(training_at))
        figures["training_s"] = max(training_at.values()) - t0
        # MLflow's writes until then: the harness server (SQLite, one worker) serializes them, so
        # their rate shows whether the fan-in is bound by MLflow rather than by the controller.
        figures["fanin_mlflow_writes"] = sum(
            v for (method, endpoint), v in self.proxy.counts.items() if method == "POST" and "search" not in endpoint)
        per_object = [training_at[name] - created_at[name] for name in created_at]
        figures["training_p50"], figures["training_p99"] = percentile(per_object, 0.5), percentile(per_object, 0.99)

        driver = Driver(kube, namespace, self.mlflow_url)
        t1 = time.monotonic()
        driving = asyncio.ensure_future(driver.run())
        await self._until(lambda: len(ready_at) >= count, f"{controller.label}: {count} Ready",
                          lambda: len(ready_at), driver)
        figures["ready_s"] = max(ready_at.values()) - t1
        per_object = [ready_at[name] - t1 for name in created_at]
        figures["ready_p50"], figures["ready_p99"] = percentile(per_object, 0.5), percentile(per_object, 0.99)
        await asyncio.sleep(2)  # the last writes land
        figures["cpu_per_lifecycle"] = (cpu_seconds(controller.pid) - cpu0) / count
        figures["api"] = await self._api_since(api0, mine0, t0)
        figures["mlflow"] = Counter(self.proxy.counts)
        figures["children"] = await self._children(namespace, count)

        # Idle: N Ready, nothing changing.
        api1, mine1, t2 = await kube.request_totals(), Counter(kube.counts), time.monotonic()
        await asyncio.sleep(self.window)
        idle = await self._api_since(api1, mine1, t2)
        minutes = (time.monotonic() - t2) / 60
        figures["idle_writes"] = sum(v for (verb, _), v in idle.items() if verb in WRITE_VERBS) / count / minutes
        figures["idle_requests"] = sum(idle.values()) / count / minutes
        memory = proc_status(controller.pid)
        figures["rss_ready"], figures["rss_peak"] = memory["VmRSS"] / 1024, memory["VmHWM"] / 1024

        # Restart with N Ready.
        versions = await self._versions(namespace)
        api2, mine2, t3 = await kube.request_totals(), Counter(kube.counts), time.monotonic()
        mlflow2 = Counter(self.proxy.counts)
        figures["restart_s"] = await asyncio.to_thread(controller.restart_and_observe, count)
        await asyncio.sleep(3)  # time to (wrongly) write
        restart = await self._api_since(api2, mine2, t3)
        figures["restart_mlflow"] = sum(delta(Counter(self.proxy.counts), mlflow2).values())
        # Writes to what the controllers touch: the control plane's own (its leases, endpoints) are
        # subtracted as a rate, so one may remain in a short window; they are shown apart.
        figures["restart_writes"] = sum(v for (verb, resource), v in restart.items()
                                        if verb in WRITE_VERBS and resource.split("/")[0] in LIFECYCLE_RESOURCES)
        figures["restart_writes_by"] = {f"{verb} {resource}": round(v, 1) for (verb, resource), v in restart.items()
                                        if verb in WRITE_VERBS and v >= 0.5}
        after = await self._versions(namespace)
        figures["restart_changed"] = sum(1 for name, version in versions.items() if after.get(name) != version)

        driving.cancel()
        watcher.cancel()
        await asyncio.gather(driving, watcher, return_exceptions=True)
        await asyncio.to_thread(controller.stop)
        if driver.errors:
            figures["driver_errors"] = driver.errors[:5]
        return figures

    async def _until(self, done, what: str, progress, driver: Driver | None = None, timeout: float = 1800) -> None:
        deadline, last = time.monotonic() + timeout, time.monotonic()
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} ({progress()} so far)")
            if time.monotonic() - last > 30:
                last = time.monotonic()
                extra = f", driver errors: {driver.errors[:2]}" if driver and driver.errors else ""
                print(f"  ... {what}: {progress()}{extra}", flush=True)
            await asyncio.sleep(0.1)

    async def _children(self, namespace: str, count: int) -> str:
        problems = []
        for kind in (PYTORCHJOBS, INFERENCESERVICES):
            owners = Counter(item["metadata"]["ownerReferences"][0]["uid"]
                             for item in (await self.kube.list(kind, namespace))["items"])
            if len(owners) != count or set(owners.values()) != {1}:
                problems.append(f"{kind[2]}: {len(owners)} owners, {sum(owners.values())} objects")
        return "; ".join(problems) or "ok"

    async def _versions(self, namespace: str) -> dict[str, str]:
        items = (await self.kube.list(TRAINDEPLOYS, namespace))["items"]
        return {td["metadata"]["name"]: td["metadata"]["resourceVersion"] for td in items}


# -- the run ------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else ("1.00" if not a else "inf")


def report(results: dict[int, dict[str, dict]], load: str) -> None:
    rows = []

    def row(figure: str, n: int, key, fmt: str) -> None:
        op, base = (key(results[n][side]) for side in ("operator", "baseline"))
        rows.append((figure, str(n), format(op, fmt), format(base, fmt), _ratio(op, base)))

    for n in results:
        row("apply -> all Training (s)", n, lambda f: f["training_s"], ".1f")
        row("  per object p50 (s)", n, lambda f: f["training_p50"], ".2f")
        row("  per object p99 (s)", n, lambda f: f["training_p99"], ".2f")
        row("driver start -> all Ready (s)", n, lambda f: f["ready_s"], ".1f")
        row("  per object p50 (s)", n, lambda f: f["ready_p50"], ".2f")
        row("  per object p99 (s)", n, lambda f: f["ready_p99"], ".2f")
        row("  MLflow writes / TD until then", n, lambda f: f["fanin_mlflow_writes"] / n, ".2f")
        row("  MLflow writes / s until then", n, lambda f: f["fanin_mlflow_writes"] / f["training_s"], ".1f")
        row("k8s requests / lifecycle (no Events)", n, lambda f: _per(f["api"], n, events=False), ".1f")
        row("  k8s writes / lifecycle (no Events)", n, lambda f: _per(f["api"], n, events=False, writes=True), ".1f")
        row("  Events / lifecycle", n, lambda f: f["api"].get(("POST", "events"), 0) / n, ".1f")
        row("MLflow requests / lifecycle", n, lambda f: sum(f["mlflow"].values()) / n, ".1f")
        row("idle requests / TD / min", n, lambda f: f["idle_requests"], ".3f")
        row("idle writes / TD / min", n, lambda f: f["idle_writes"], ".3f")
        row("RSS idle (MiB)", n, lambda f: f["rss_idle"], ".0f")
        row("RSS peak, VmHWM (MiB)", n, lambda f: f["rss_peak"], ".0f")
        row("RSS with N Ready (MiB)", n, lambda f: f["rss_ready"], ".0f")
        row("CPU s / lifecycle", n, lambda f: f["cpu_per_lifecycle"], ".3f")
        row("restart -> N Ready observed (s)", n, lambda f: f["restart_s"], ".1f")
        row("  lifecycle writes during restart", n, lambda f: f["restart_writes"], ".0f")
        row("  MLflow requests during restart", n, lambda f: f["restart_mlflow"], ".0f")
        row("  TrainDeploys changed by restart", n, lambda f: f["restart_changed"], ".0f")
    for n in results:
        # At the same MLflow write rate, the fan-in time is in the ratio of the writes each makes.
        op, base = results[n]["operator"], results[n]["baseline"]
        bound = _ratio(op["fanin_mlflow_writes"], base["fanin_mlflow_writes"])
        rows.append(("fan-in ratio MLflow's write rate allows", str(n), "", "", bound))
    counts = sorted(results)
    if len(counts) > 1:
        small, large = counts[0], counts[-1]
        for figure, key in (("growth: fan-in s per object", lambda f, n: f["training_s"] / n),
                            ("growth: Ready s per object", lambda f, n: f["ready_s"] / n),
                            ("growth: CPU s per lifecycle", lambda f, n: f["cpu_per_lifecycle"])):
            for side in ("operator", "baseline"):
                a, b = key(results[small][side], small), key(results[large][side], large)
                rows.append((f"{figure} ({side})", f"{small}->{large}", f"{a:.3f}", f"{b:.3f}", _ratio(b, a)))
    print(f"\nTrainDeploy bench, {load}")
    header = ("figure", "N", "operator", "baseline", "ratio")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]))
    print("(growth rows: operator column = smallest N, baseline column = largest N, ratio = largest/smallest)")

    largest = counts[-1]
    op, base = results[largest]["operator"], results[largest]["baseline"]
    keys = sorted(set(op["api"]) | set(base["api"]) | set(MINIMUM_KUBE))
    print(f"\nKubernetes requests per lifecycle by verb and resource, N={largest} (minimum: bench/baseline.py)")
    print(f"{'verb resource':40} {'operator':>9} {'baseline':>9} {'minimum':>8}")
    for key in keys:
        a, b = op["api"].get(key, 0) / largest, base["api"].get(key, 0) / largest
        if a >= 0.05 or b >= 0.05 or key in MINIMUM_KUBE:
            print(f"{key[0] + ' ' + key[1]:40} {a:9.2f} {b:9.2f} {MINIMUM_KUBE.get(key, 0):8}")
    total_min = sum(MINIMUM_KUBE.values())
    print(f"{'total, Events apart':40} {_per(op['api'], largest, events=False):9.2f} "
          f"{_per(base['api'], largest, events=False):9.2f} {total_min:8}  "
          f"(operator/minimum {_per(op['api'], largest, events=False) / total_min:.2f})")
    print(f"\nMLflow requests per lifecycle by endpoint, N={largest}")
    print(f"{'method endpoint':40} {'operator':>9} {'baseline':>9}")
    for key in sorted(set(op["mlflow"]) | set(base["mlflow"])):
        print(f"{key[0] + ' ' + key[1]:40} {op['mlflow'].get(key, 0) / largest:9.2f} "
              f"{base['mlflow'].get(key, 0) / largest:9.2f}")
    total = sum(op["mlflow"].values()) / largest
    print(f"{'total':40} {total:9.2f} {sum(base['mlflow'].values()) / largest:9.2f}  "
          f"(minimum {MINIMUM_MLFLOW}; operator/minimum "
          f"{total / MINIMUM_MLFLOW:.2f})")
    for n in results:
        for side in ("operator", "baseline"):
            f = results[n][side]
            print(f"check N={n} {side}: children {f['children']}"
                  + (f"; all writes during restart {f['restart_writes_by']}" if f.get("restart_writes_by") else "")
                  + (f"; driver errors {f['driver_errors']}" if f.get("driver_errors") else ""))


def _per(api: Counter, n: int, events: bool, writes: bool = False) -> float:
    return sum(v for (verb, resource), v in api.items()
               if (events or resource != "events") and (not writes or verb in WRITE_VERBS)) / n


async def measure(counts: list[int], window: float, skip_baseline: bool) -> tuple[dict, str]:
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as cp, MlflowServer() as mlflow:
        cp.install_all_crds()
        proxy = await CountingProxy(mlflow.url).start()
        try:
            async with Kube(cp.kubeconfig) as kube:
                # The control plane's own traffic (controller manager, leases) with nothing running.
                before, started = await kube.request_totals(), time.monotonic()
                await asyncio.sleep(10)
                seconds = time.monotonic() - started
                background = {key: value / seconds for key, value in delta(await kube.request_totals(), before).items()}
                scenario = Scenario(kube, proxy, mlflow.url, background, window)
                artifacts = mlflow.artifacts_dir.as_uri()
                for count in counts:
                    results[count] = {}
                    kinds = [OperatorUnderTest] if skip_baseline else [BaselineUnderTest, OperatorUnderTest]
                    for kind in kinds:
                        namespace = f"{kind.label[:2]}-{count}"
                        print(f"N={count}: {kind.label} in namespace {namespace}", flush=True)
                        results[count][kind.label] = await scenario.run(
                            kind(namespace, cp, Path(tmp), proxy.url, artifacts), namespace, count)
        finally:
            await proxy.stop()
    load = (f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f} "
            f"(1 min), {os.getloadavg()[2]:.1f} (15 min)")
    return results, load


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--window", type=float, default=30.0, help="seconds of idle to measure with N Ready")
    parser.add_argument("--skip-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    measured, machine = asyncio.run(measure(args.counts, args.window, args.skip_baseline))
    if not args.skip_baseline:
        report(measured, machine)
    else:
        print(measured)
