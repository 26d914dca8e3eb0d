"""The dev executors' own tests: images as local code, the status they write read back by the
operator's own readers, Knative's traffic rules, and training jobs run for real on the apiserver."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kubernetes import client

from traindeploy.children import FAILED, RUNNING, SUCCEEDED, pytorchjob, trainjob
from traindeploy.dev import images
from traindeploy.dev.command import example_request
from traindeploy.dev.jobs import PYTORCHJOB, TRAINJOB, TrainingJobs
from traindeploy.dev.serving import Router
from traindeploy.dev.status import kserve, training

REPO = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/traindeploy/example-trainer:0.1"


# -- images as local code ---------------------------------------------------------------------------


@pytest.mark.parametrize("image, repository", [
    ("ghcr.io/a/b:0.1", "ghcr.io/a/b"), ("ghcr.io/a/b@sha256:ab", "ghcr.io/a/b"),
    ("localhost:5000/b:1", "localhost:5000/b"), ("localhost:5000/b", "localhost:5000/b"), ("b", "b")])
def test_an_image_is_found_by_its_repository_whatever_its_tag(image, repository):
    assert images.repository_of(image) == repository


def resolver(secrets: dict | None = None) -> images.Resolver:
    config = images.load_config(REPO / "examples" / "traindeploy-dev.yaml")
    return images.Resolver(config, lambda kind, ns, name, key: (secrets or {}).get((kind, ns, name, key)),
                           python_for=lambda requirements: Path("/venvs/trainer/bin/python"))


def test_the_examples_image_runs_train_py_from_the_trainer_venv_with_its_env_resolved():
    container = {"image": IMAGE, "command": ["python", "/app/train.py"], "args": ["--lr=0.01", "--out=/app/x"],
                 "env": [{"name": "PLAIN", "value": "1"},
                         {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]}
    command = resolver({("Secret", "ns", "creds", "token"): "s3cr3t"}).command(container, "ns", {"RANK": "0"})
    assert command.argv == ["/venvs/trainer/bin/python", str(REPO / "examples/trainer/train.py"), "--lr=0.01",
                            f"--out={REPO / 'examples/trainer'}/x"]
    assert command.env == {"PLAIN": "1", "TOKEN": "s3cr3t", "RANK": "0"}
    assert command.cwd == REPO / "examples" / "trainer"


def test_an_unmapped_image_and_a_missing_secret_key_say_what_is_missing():
    with pytest.raises(images.ImageNotMapped, match="other/image"):
        resolver().command({"image": "other/image:1", "command": ["python"]}, "ns")
    missing = {"image": IMAGE, "command": ["python"],
               "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}
    with pytest.raises(images.EnvSourceMissing, match="gone"):
        resolver().command(missing, "ns")
    optional = {**missing, "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k",
                                                                                 "optional": True}}}]}
    assert "T" not in resolver().command(optional, "ns").env


def test_the_dev_config_is_the_nearest_one_above_the_manifest():
    assert images.find_config(REPO / "examples" / "traindeploys" / "minimal.yaml") == \
        REPO / "examples" / "traindeploy-dev.yaml"


# -- status the operator reads back -----------------------------------------------------------------


@pytest.mark.parametrize("outcome, phase", [("Created", RUNNING), ("Running", RUNNING), ("Succeeded", SUCCEEDED),
                                            ("Failed", FAILED)])
def test_the_operator_reads_the_pytorchjob_status_the_executor_writes(outcome, phase):
    status = training.pytorchjob("j", outcome, {"Master": {"active": 1}}, started="2026-01-01T00:00:00Z",
                                 finished="2026-01-01T00:01:00Z")
    assert pytorchjob.read({"status": status}).phase == phase
    assert status["replicaStatuses"]["Master"]["selector"].endswith("replica-type=master")


@pytest.mark.parametrize("outcome, phase", [("Complete", SUCCEEDED), ("Failed", FAILED)])
def test_the_operator_reads_the_trainjob_status_the_executor_writes(outcome, phase):
    status = training.trainjob(outcome, {"node": {"succeeded": 2}}, at="2026-01-01T00:00:00Z", name="j")
    assert trainjob.read({"status": status}).phase == phase
    assert set(status["jobsStatus"][0]) == {"name", "ready", "succeeded", "failed", "active", "suspended"}


def R(created, ready, rolled=None, previous=None):
    return kserve.Revisions(created, ready, rolled, previous)


@pytest.mark.parametrize("before, percent, traffic, after", [
    # UPSTREAM.md 4.5, row by row.
    (R("r1", "r1"), None, [("r1", True, 100, None)], R("r1", "r1", "r1")),
    (R("r2", "r2", "r1"), 10, [("r2", True, 10, None), ("r1", False, 90, "prev")], R("r2", "r2", "r1")),
    (R("r2", "r2", "r1"), None, [("r2", True, 100, None)], R("r2", "r2", "r2", "r1")),
    (R("r2", "r2", "r1"), 100, [("r2", True, 100, None)], R("r2", "r2", "r2", "r1")),
    (R("r2", "r2", "r1"), 0, [("r2", True, 0, None), ("r1", False, 100, "prev")], R("r2", "r2", "r1")),
    (R("r2", "r2", "r2", "r1"), 0, [("r2", True, 0, None), ("r1", False, 100, "prev")], R("r2", "r2", "r1")),
    # A newest revision that is not ready takes no traffic: Knative resolves latest to the last ready.
    (R("r2", "r1", "r1"), 10, [("r1", True, 10, None), ("r1", False, 90, "prev")], R("r2", "r1", "r1")),
    (R("r1", None), None, [], R("r1", None)),
])
def test_knative_traffic_follows_kserves_rules(before, percent, traffic, after):
    targets, moved = kserve.knative_traffic(before, percent)
    assert [(t["revisionName"], t["latestRevision"], t["percent"], t.get("tag")) for t in targets] == traffic
    assert moved == after
    assert not any("url" in t for t in targets)


def test_only_tagged_targets_get_a_url():
    targets, _ = kserve.knative_traffic(R("r2", "r2", "r1"), 10)
    plain = kserve.tag_urls(targets, lambda name: f"http://{name}", tag_latest=False)
    assert [t.get("url") for t in plain] == [None, "http://r1"]
    tagged = kserve.tag_urls(targets, lambda name: f"http://{name}", tag_latest=True)
    assert [(t.get("tag"), t.get("url")) for t in tagged] == [("latest", "http://r2"), ("prev", "http://r1")]


def test_a_failed_newest_revision_is_reported_as_kserve_copies_it_while_the_old_one_serves():
    revisions = R("r2", "r1", "r1")
    traffic, moved = kserve.knative_traffic(revisions, 10)
    status = kserve.knative(url="http://u", predictor_url="http://u", revisions=moved, traffic=traffic,
                            observed_generation=3, failure="no module named x")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RevisionFailed")
    assert status["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    assert status["modelStatus"]["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    assert status["components"]["predictor"]["latestReadyRevision"] == "r1"


# -- the router and the example request -------------------------------------------------------------


def test_the_router_splits_requests_by_weight():
    router = Router()
    try:
        router.targets = [(30, "http://a"), (70, "http://b"), (0, "http://c")]
        picked = [router.pick() for _ in range(4000)]
        assert "http://c" not in picked
        assert abs(picked.count("http://a") / len(picked) - 0.3) < 0.04
        router.targets = []
        assert router.pick() is None
    finally:
        router.server_close()


def test_the_printed_curl_is_built_from_the_models_signature_and_example(tmp_path):
    (tmp_path / "MLmodel").write_text(textwrap.dedent("""\
        signature:
          inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]'
        """))
    (tmp_path / "serving_input_example.json").write_text(json.dumps({"inputs": [[0.1, 0.2, 0.3], [1, 2, 3]]}))
    assert example_request(tmp_path) == {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32",
                                                     "data": [0.1, 0.2, 0.3]}]}
    assert example_request(tmp_path / "missing") is None


# -- training jobs, run for real --------------------------------------------------------------------

# Rank 1 exits with EXIT_CODE; rank 0 succeeds, later when rank 1 fails (with a Master, the
# Master's success ends the job as Succeeded whatever the Workers do, as the Training Operator decides).
SCRIPT = textwrap.dedent("""\
    import json, os, sys, time
    keys = ["MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_NNODES", "PET_NODE_RANK", "TOKEN"]
    print(json.dumps({k: os.environ.get(k) for k in keys}), flush=True)
    code = int(os.environ.get("EXIT_CODE", "0"))
    if os.environ.get("RANK", os.environ.get("PET_NODE_RANK")) == "1":
        sys.exit(code)
    time.sleep(5 if code else 1)  # the job ends with the Master: let the Worker print first
    """)


@pytest.fixture
def local_jobs(api_client, namespace, tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "env.py").write_text(SCRIPT)
    config = images.DevConfig((images.ImageMapping("example/env", {"/app": tmp_path / "code"}),))
    core = client.CoreV1Api(api_client)
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"),
                                                             string_data={"token": "t0k"}))
    executor = TrainingJobs(api_client, namespace, images.Resolver(config, images.kube_key_reader(core)),
                            tmp_path / "jobs", gpus=0).start()
    yield executor
    executor.stop()


def _container(exit_code: str) -> dict:
    return {"name": "pytorch", "image": "example/env:1", "command": [sys.executable, "/app/env.py"],
            "env": [{"name": "EXIT_CODE", "value": exit_code},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]}


def _wait(api_client, namespace, kind, name, predicate, timeout=60):
    custom = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(kind[0], kind[1], namespace, kind[2], name)
        if predicate(obj):
            return obj
        time.sleep(0.3)
    raise AssertionError(f"{name}: {obj.get('status')}")


def _create(api_client, namespace, kind, body):
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(kind[0], kind[1], namespace, kind[2], body)


@pytest.mark.parametrize("exit_code, phase", [("0", SUCCEEDED), ("3", FAILED)])
def test_a_pytorchjob_runs_master_and_worker_with_the_injected_env(api_client, namespace, local_jobs, tmp_path,
                                                                   exit_code, phase):
    name = f"env-{exit_code}"
    replica = {"replicas": 1, "restartPolicy": "Never", "template": {"spec": {"containers": [_container(exit_code)]}}}
    _create(api_client, namespace, PYTORCHJOB, {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": replica, "Worker": replica}}})
    job = _wait(api_client, namespace, PYTORCHJOB, name, lambda o: pytorchjob.read(o).phase in (SUCCEEDED, FAILED))
    assert pytorchjob.read(job).phase == phase
    logs = tmp_path / "jobs" / "pytorchjobs" / name
    master = json.loads((logs / "master-0.log").read_text().splitlines()[0])
    worker = json.loads((logs / "worker-0.log").read_text().splitlines()[0])
    assert master["MASTER_ADDR"] == "127.0.0.1" and master["MASTER_PORT"] == worker["MASTER_PORT"]
    assert (master["WORLD_SIZE"], master["RANK"], worker["RANK"], worker["PET_NODE_RANK"]) == ("2", "0", "1", "1")
    assert master["TOKEN"] == "t0k"
    if phase == FAILED:
        assert job["status"]["conditions"][-1]["message"] == f"PyTorchJob {name} is failed because 1 Worker " \
                                                             "replica(s) failed."


def test_a_trainjob_runs_one_process_per_node(api_client, namespace, local_jobs, tmp_path):
    container = _container("0")
    _create(api_client, namespace, TRAINJOB, {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "nodes"},
        "spec": {"runtimeRef": {"name": "torch-distributed"},
                 "trainer": {"image": container["image"], "command": container["command"], "env": container["env"],
                             "numNodes": 2}}})
    job = _wait(api_client, namespace, TRAINJOB, "nodes", lambda o: trainjob.read(o).phase in (SUCCEEDED, FAILED))
    assert trainjob.read(job).phase == SUCCEEDED
    # As JobSet counts (Trainer copies its counts): one Job of two pods succeeded.
    assert job["status"]["jobsStatus"][0]["succeeded"] == 1
    ranks = sorted(json.loads((tmp_path / "jobs" / "trainjobs" / "nodes" / f"node-{i}.log").read_text())["PET_NODE_RANK"]
                   for i in (0, 1))
    assert ranks == ["0", "1"]


def test_a_job_whose_image_has_no_local_code_fails_saying_so(api_client, namespace, local_jobs):
    replica = {"replicas": 1, "template": {"spec": {"containers": [{**_container("0"), "image": "unknown/x:1"}]}}}
    _create(api_client, namespace, PYTORCHJOB, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                                "metadata": {"name": "nocode"},
                                                "spec": {"pytorchReplicaSpecs": {"Master": replica}}})
    job = _wait(api_client, namespace, PYTORCHJOB, "nocode", lambda o: pytorchjob.read(o).phase == FAILED)
    assert "unknown/x" in job["status"]["conditions"][-1]["message"]
