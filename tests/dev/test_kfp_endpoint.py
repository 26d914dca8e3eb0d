"""The local KFP endpoint: compiled pipelines run for real with kfp.local, driven by the operator's
own `KfpClient`, states as KFP reports them.

The pipelines are compiled here by the KFP SDK's venv (`pipelines_python()`); their components
need nothing but the SDK, and the runs' pip is kept off the network (PIP_NO_INDEX), so everything
stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import requests

from harness.paths import REPO_ROOT
from harness.trainer_env import pipelines_python
from traindeploy import kfp
from traindeploy.children import FAILED, PENDING, RUNNING, SUCCEEDED
from traindeploy.dev.kfp_endpoint import KfpEndpoint
from traindeploy.dev.kfp_local_run import last_exception

pytestmark = pytest.mark.timeout(120)

RUN_TIMEOUT = 60.0
EPOCH = "1970-01-01T00:00:00Z"

PIPELINES = textwrap.dedent('''
    import sys
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def add(a: int, b: int) -> int:
        return a + b

    @dsl.component(base_image="python:3.11-slim")
    def record(total: int, expected: int, out: str) -> int:
        if total != expected:
            raise ValueError(f"sum is {total}, expected {expected}")
        if out:
            with open(out, "w") as handle:
                handle.write(str(total))
        return total

    @dsl.component(base_image="python:3.11-slim")
    def linger(seconds: float, out: str):
        import os, time
        with open(out, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(seconds)

    @dsl.pipeline(name="tiny-sum")
    def tiny(a: int = 1, b: int = 2, expected: int = 3, out: str = "") -> int:
        total = add(a=a, b=b)
        return record(total=total.output, expected=expected, out=out).output

    @dsl.pipeline(name="slow")
    def slow(seconds: float = 120.0, out: str = ""):
        linger(seconds=seconds, out=out)

    compiler.Compiler().compile(tiny, package_path=sys.argv[1] + "/tiny.yaml")
    compiler.Compiler().compile(slow, package_path=sys.argv[1] + "/slow.yaml")
''')


@pytest.fixture(scope="module")
def kfp_python() -> Path:
    return pipelines_python()


@pytest.fixture(scope="module")
def packages(kfp_python, tmp_path_factory) -> dict[str, dict]:
    """name -> the run body's pipeline_spec, compiled by the SDK and loaded the operator's way."""
    folder = tmp_path_factory.mktemp("pipelines")
    script = folder / "pipelines.py"
    script.write_text(PIPELINES)
    # Without PYTHONPATH: tests/kfp on it would shadow the SDK's `kfp`.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    compiled = subprocess.run([str(kfp_python), str(script), str(folder)], timeout=60, env=env,
                              capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    return {name: kfp.load_pipeline_package((folder / f"{name}.yaml").read_text())
            for name in ("tiny", "slow")}


def _endpoint(kfp_python: Path, workdir: Path, **kwargs) -> KfpEndpoint:
    return KfpEndpoint(kfp_python, workdir, env={"PIP_NO_INDEX": "1"}, cancel_grace=2.0, **kwargs)


@pytest.fixture(scope="module")
def endpoint(kfp_python, tmp_path_factory):
    with _endpoint(kfp_python, tmp_path_factory.mktemp("kfp-endpoint")) as running:
        yield running


@pytest.fixture
def client(endpoint):
    with kfp.KfpClient(endpoint.url, timeout=5) as api:
        yield api


def wait_for(client: kfp.KfpClient, run_id: str, states: set[str], timeout: float = RUN_TIMEOUT
             ) -> tuple[dict, list[str]]:
    """Poll get_run until the run is in one of `states`; returns it and every phase seen."""
    deadline = time.monotonic() + timeout
    phases: list[str] = []
    while True:
        run = client.get_run(run_id)
        phase = kfp.run_state(run).phase
        if not phases or phases[-1] != phase:
            phases.append(phase)
        if run.get("state") in states:
            return run, phases
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.get('state')} after {timeout}s")
        time.sleep(0.1)


def wait_for_file(path: Path, timeout: float = RUN_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not written within {timeout}s")
        time.sleep(0.1)
    return path.read_text()


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def history(run: dict) -> list[str]:
    return [entry["state"] for entry in run.get("state_history", [])]


def tasks(run: dict) -> dict[str, list[str]]:
    """task name -> its state history, from run_details.task_details."""
    return {task["display_name"]: history(task) for task in run["run_details"]["task_details"]}


# -- runs ------------------------------------------------------------------------------------------

def test_a_pipeline_runs_to_succeeded_through_the_operators_client(endpoint, client, packages, tmp_path):
    experiment_id = client.ensure_experiment("td-dev-success")
    out = tmp_path / "sum.txt"
    created = client.create_run(experiment_id, "td-x-gen1", packages["tiny"],
                                {"a": 2, "b": 5, "expected": 7, "out": str(out)})
    assert created["state"] == "PENDING"
    assert created["finished_at"] == EPOCH
    assert created["scheduled_at"] == created["created_at"]
    assert kfp.run_state(created).phase == PENDING
    assert "error" not in created and "description" not in created  # unset fields are left out

    run, phases = wait_for(client, created["run_id"], kfp_terminal())
    assert run["state"] == "SUCCEEDED", run.get("error")
    assert history(run) == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert run["finished_at"] != EPOCH and run["finished_at"] >= run["created_at"]
    assert run["runtime_config"]["parameters"]["a"] == 2
    assert phases[-1] == SUCCEEDED and set(phases) <= {PENDING, RUNNING, SUCCEEDED}
    assert kfp.run_state(run).reason == "RunSucceeded"
    assert tasks(run) == {"add": ["RUNNING", "SUCCEEDED"], "record": ["RUNNING", "SUCCEEDED"]}
    assert all(t["end_time"] >= t["start_time"] != EPOCH for t in run["run_details"]["task_details"])
    # The components really ran: the second one wrote the first one's sum.
    assert out.read_text() == "7"
    result = json.loads((endpoint.run_dir(run["run_id"]) / "result.json").read_text())
    assert result["state"] == "SUCCEEDED" and result["outputs"] == {"Output": 7}
    assert "Task 'record' finished with status SUCCESS" in (
        endpoint.run_dir(run["run_id"]) / "log.txt").read_text()

    found = client.find_run(experiment_id, "td-x-gen1")
    assert found is not None and found["run_id"] == run["run_id"]
    assert client.find_run(experiment_id, "td-x-gen2") is None


def kfp_terminal() -> set[str]:
    return {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}


def test_a_failing_component_fails_the_run_with_its_error(endpoint, client, packages):
    experiment_id = client.ensure_experiment("td-dev-failure")
    created = client.create_run(experiment_id, "td-x-fail", packages["tiny"], {"expected": 4})
    run, _ = wait_for(client, created["run_id"], kfp_terminal())
    assert run["state"] == "FAILED"
    assert history(run) == ["PENDING", "RUNNING", "FAILED"]
    assert run["error"]["code"] == 2 and run["finished_at"] != EPOCH
    assert run["state_history"][-1]["error"] == run["error"]
    assert tasks(run) == {"add": ["RUNNING", "SUCCEEDED"], "record": ["RUNNING", "FAILED"]}
    state = kfp.run_state(run)
    assert (state.phase, state.reason) == (FAILED, "RunFailed")
    # The message names the failed task, the component's own exception and where the log is.
    assert "'record'" in state.message
    assert "ValueError: sum is 3, expected 4" in state.message
    assert str(endpoint.run_dir(run["run_id"]) / "log.txt") in state.message


def test_terminate_cancels_the_run_and_ends_its_processes(endpoint, client, packages, tmp_path):
    experiment_id = client.ensure_experiment("td-dev-cancel")
    marker = tmp_path / "pid"
    created = client.create_run(experiment_id, "td-x-slow", packages["slow"], {"out": str(marker)})
    pid = int(wait_for_file(marker))  # the component itself is running
    assert client.get_run(created["run_id"])["state"] == "RUNNING"
    assert alive(pid)

    client.terminate_run(created["run_id"])
    run, _ = wait_for(client, created["run_id"], {"CANCELED"}, timeout=15)
    assert history(run) == ["PENDING", "RUNNING", "CANCELING", "CANCELED"]
    assert run["finished_at"] != EPOCH
    assert tasks(run) == {"linger": ["RUNNING", "CANCELED"]}
    state = kfp.run_state(run)
    assert (state.phase, state.reason) == (FAILED, "RunCanceled")
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)
    # Terminating a finished run is answered 400 by KFP, which the client counts as done.
    client.terminate_run(created["run_id"])
    assert client.get_run(created["run_id"])["state"] == "CANCELED"


def test_a_run_waits_pending_for_a_slot_and_can_be_canceled_there(kfp_python, packages, tmp_path):
    with _endpoint(kfp_python, tmp_path / "work", max_parallel_runs=1) as single, \
            kfp.KfpClient(single.url, timeout=5) as client:
        experiment_id = client.ensure_experiment("td-dev-slots")
        marker = tmp_path / "pid"
        first = client.create_run(experiment_id, "td-x-first", packages["slow"], {"out": str(marker)})
        wait_for_file(marker)
        second = client.create_run(experiment_id, "td-x-second", packages["tiny"], {})
        time.sleep(1.0)
        assert client.get_run(second["run_id"])["state"] == "PENDING"  # no slot while the first runs
        client.terminate_run(second["run_id"])
        run, _ = wait_for(client, second["run_id"], {"CANCELED"}, timeout=10)
        assert history(run) == ["PENDING", "CANCELING", "CANCELED"]
        assert not single.run_dir(second["run_id"]).joinpath("log.txt").exists()  # never started
        client.terminate_run(first["run_id"])
        wait_for(client, first["run_id"], {"CANCELED"}, timeout=15)


def test_runs_survive_a_restart_and_a_run_cut_short_by_stop_is_failed(kfp_python, packages, tmp_path):
    workdir = tmp_path / "work"
    marker = tmp_path / "pid"
    with _endpoint(kfp_python, workdir) as first, kfp.KfpClient(first.url, timeout=5) as client:
        experiment_id = client.ensure_experiment("td-dev-restart", namespace="team-a")
        run_id = client.create_run(experiment_id, "td-x-cut", packages["slow"], {"out": str(marker)})["run_id"]
        pid = int(wait_for_file(marker))
    assert not alive(pid)  # stop() ended the run's processes
    with _endpoint(kfp_python, workdir) as second, kfp.KfpClient(second.url, timeout=5) as client:
        assert client.ensure_experiment("td-dev-restart", namespace="team-a") == experiment_id
        run = client.get_run(run_id)
        assert run["state"] == "FAILED"
        assert kfp.run_state(run).phase == FAILED and kfp.run_state(run).message
        assert client.find_run(experiment_id, "td-x-cut")["run_id"] == run_id


def test_the_example_prep_pipeline_runs_offline(endpoint, client):
    package = kfp.load_pipeline_package((REPO_ROOT / "examples/pipelines/prep_pipeline.yaml").read_text())
    experiment_id = client.ensure_experiment("td-dev-example")
    created = client.create_run(experiment_id, "td-prep", package, {"rows": 200, "source": "synthetic"})
    run, _ = wait_for(client, created["run_id"], kfp_terminal())
    assert run["state"] == "SUCCEEDED", run.get("error")
    datasets = list((endpoint.run_dir(run["run_id"]) / "outputs").glob("traindeploy-prep-*/make-dataset/dataset"))
    assert len(datasets) == 1
    lines = datasets[0].read_text().splitlines()
    assert lines[0].startswith("f0,") and lines[0].endswith(",label") and len(lines) == 201


# -- the API around the runs ------------------------------------------------------------------------

def test_experiments_with_and_without_namespace(client):
    health = client.healthz()
    assert health["multi_user"] is False
    with_namespace = client.ensure_experiment("td-dev-ns", namespace="team-a")
    assert client.ensure_experiment("td-dev-ns", namespace="team-a") == with_namespace
    # A single-user server ignores namespaces: the same experiment, as in KFP.
    assert client.ensure_experiment("td-dev-ns") == with_namespace
    assert client.ensure_experiment("TD-DEV-NS") == with_namespace  # names ignore case
    other = client.ensure_experiment("td-dev-ns-2", description="second")
    assert other != with_namespace
    listed = requests.get(f"{client.endpoint}/apis/v2beta1/experiments/{other}", timeout=5).json()
    assert listed["display_name"] == "td-dev-ns-2" and listed["description"] == "second"
    assert "namespace" not in listed and listed["last_run_created_at"] == EPOCH


def test_errors_are_typed_like_the_kfp_server(endpoint, client, packages):
    experiment_id = client.ensure_experiment("td-dev-errors")
    with pytest.raises(kfp.KfpError) as missing:
        client.get_run("no-such-run")
    assert (missing.value.status, missing.value.code) == (404, 5)
    with pytest.raises(kfp.KfpError) as no_experiment:
        client.create_run("no-such-experiment", "td-x", packages["tiny"], {})
    assert no_experiment.value.status == 404
    with pytest.raises(kfp.KfpError) as bad_spec:
        client.create_run(experiment_id, "td-x", {"root": {}}, {})
    assert (bad_spec.value.status, bad_spec.value.code) == (400, 3)
    with pytest.raises(kfp.KfpUnavailable):  # KFP answers an empty run name with HTTP 500
        client.create_run(experiment_id, "", packages["tiny"], {})
    api = f"{endpoint.url}/apis/v2beta1"
    unknown = requests.post(f"{api}/runs", json={"display_name": "x", "pipeline_spec": packages["tiny"],
                                                 "bogus": 1}, timeout=5)
    assert unknown.status_code == 400 and unknown.json()["code"] == 3
    assert requests.get(f"{api}/pipelines", timeout=5).status_code == 404
    bad_filter = requests.get(f"{api}/runs", params={"filter": '{"predicates": [{"operation": 1, '
                                                     '"key": "colour", "stringValue": "x"}]}'}, timeout=5)
    assert bad_filter.status_code == 400
    # No run was made by any of these.
    assert client.find_run(experiment_id, "td-x") is None


def test_the_root_page_lists_runs_with_their_directories(endpoint, client, packages):
    experiment_id = client.ensure_experiment("td-dev-index")
    run_id = client.create_run(experiment_id, "td-x-index", packages["tiny"], {})["run_id"]
    page = requests.get(endpoint.url + "/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/plain")
    assert run_id in page.text and str(endpoint.run_dir(run_id)) in page.text
    client.terminate_run(run_id)
    wait_for(client, run_id, kfp_terminal(), timeout=15)


def test_lists_page_and_omit_empty_fields(endpoint, client):
    api = f"{endpoint.url}/apis/v2beta1"
    for index in range(3):
        client.ensure_experiment(f"td-dev-page-{index}")
    names: list[str] = []
    params = {"page_size": "2", "filter": json.dumps({"predicates": [
        {"operation": "IS_SUBSTRING", "key": "display_name", "string_value": "td-dev-page-"}]}),
        "sort_by": "name desc"}
    for _ in range(3):
        page = requests.get(f"{api}/experiments", params=params, timeout=5).json()
        names += [e["display_name"] for e in page["experiments"]]
        assert page["total_size"] == 3
        if "next_page_token" not in page:
            break
        params = {"page_token": page["next_page_token"], "page_size": "2"}
    assert names == ["td-dev-page-2", "td-dev-page-1", "td-dev-page-0"]
    empty = requests.get(f"{api}/runs", params={"filter": json.dumps({"predicates": [
        {"operation": 1, "key": "display_name", "stringValue": "nothing-here"}]})}, timeout=5).json()
    assert empty == {}  # an empty list, a zero total and no token are all left out


# -- the runner script's helpers (importable without the SDK) ---------------------------------------

def test_last_exception_takes_the_final_line_of_the_last_traceback():
    lines = [
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        "        raise KeyError(1)",
        "    KeyError: 1",
        "",
        "    During handling of the above exception, another exception occurred:",
        "",
        "    Traceback (most recent call last):",
        '      File "x.py", line 3, in <module>',
        "    ValueError: rows must be at least 1, got 0",
        "13:00:00.000 - ERROR - Task 'make-dataset' finished with status FAILURE",
    ]
    assert last_exception(lines) == "ValueError: rows must be at least 1, got 0"
    assert last_exception(["no traceback here"]) == ""
