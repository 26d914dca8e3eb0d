"""The operator's command line as the container runs it: help, options from flags and the
environment, and log lines a log collector can parse."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import urllib.request

import pytest

from harness import processes
from harness.paths import REPO_ROOT
from traindeploy import cli, runner

OPERATOR_ENV = {"PYTHONPATH": str(REPO_ROOT / "operator")}


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "traindeploy", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **OPERATOR_ENV, **(env or {})})


def test_help_prints_usage():
    result = _run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: traindeploy")
    assert "run" in result.stdout


def test_run_help_documents_every_option_and_its_variable():
    result = _run_cli("run", "--help")
    assert result.returncode == 0, result.stderr
    for text in ("--namespace", "--liveness", "--log-level", "--log-format", "--verbose",
                 "TRAINDEPLOY_LOG_LEVEL", "TRAINDEPLOY_LOG_FORMAT", "TRAINDEPLOY_WATCH_NAMESPACES",
                 "http://0.0.0.0:8080/healthz"):
        assert text in result.stdout


def test_version():
    result = _run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "traindeploy 0.1.0"


def test_bad_log_format_from_the_environment_is_refused_by_name():
    result = _run_cli("run", env={"TRAINDEPLOY_LOG_FORMAT": "xml"})
    assert result.returncode == 2
    assert "'xml'" in result.stderr and "TRAINDEPLOY_LOG_FORMAT" in result.stderr


@pytest.fixture
def started(monkeypatch) -> list[dict]:
    """Replaces the operator itself: records what `main` would start it with."""
    calls: list[dict] = []
    monkeypatch.setattr(runner, "run_operator", lambda **kwargs: calls.append(kwargs) or 0)
    return calls


@pytest.mark.parametrize(("argv", "environ", "expected"), [
    # reason: nothing given: the whole cluster, info, text, kopf's liveness port of the chart
    (["run"], {}, {"namespaces": [], "log_level": "info", "log_format": "text",
                   "liveness": "http://0.0.0.0:8080/healthz"}),
    # reason: the container is configured by the environment (the Helm chart sets these)
    (["run"], {"TRAINDEPLOY_WATCH_NAMESPACES": " team-a, team-b,,", "TRAINDEPLOY_LOG_LEVEL": "WARNING",
               "TRAINDEPLOY_LOG_FORMAT": "json"},
     {"namespaces": ["team-a", "team-b"], "log_level": "warning", "log_format": "json"}),
    # reason: flags win over the environment; --namespace repeats
    (["run", "-n", "x", "--namespace", "y", "--log-level", "error", "--log-format", "text"],
     {"TRAINDEPLOY_WATCH_NAMESPACES": "z", "TRAINDEPLOY_LOG_LEVEL": "debug", "TRAINDEPLOY_LOG_FORMAT": "json"},
     {"namespaces": ["x", "y"], "log_level": "error", "log_format": "text"}),
    # reason: --verbose, as the end-to-end tests start the operator, means debug
    (["run", "--verbose", "--liveness", "http://127.0.0.1:9/healthz"], {},
     {"log_level": "debug", "liveness": "http://127.0.0.1:9/healthz"}),
])
def test_run_options(started, argv, environ, expected):
    assert cli.main(argv, environ=environ) == 0
    (call,) = started
    assert {key: call[key] for key in expected} == expected


@pytest.mark.parametrize("argv", [["run", "--log-level", "trace"], ["run", "--log-format", "xml"]])
def test_bad_flags_are_refused(started, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv, environ={})
    assert exit_.value.code == 2
    assert "invalid log" in capsys.readouterr().err
    assert started == []


@pytest.mark.parametrize(("argv", "environ"), [(["run", "-n", "team-*"], {}), (["run"], {"TRAINDEPLOY_WATCH_NAMESPACES": "a,Team_B"})])
def test_namespaces_must_be_names(started, argv, environ, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv, environ=environ)
    assert exit_.value.code == 2
    assert "not a namespace name" in capsys.readouterr().err
    assert started == []


@pytest.fixture
def root_logging():
    """configure_logging replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("asyncio").level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("asyncio").setLevel(saved[2])


def test_json_log_lines_parse(root_logging):
    stream = io.StringIO()
    runner.configure_logging("info", "json", stream=stream)
    log = logging.getLogger("traindeploy.test")
    log.debug("not at info level")
    log.info("Created %s %r.", "PyTorchJob", "churn-g1-train")
    # kopf's per-object loggers carry the object as `k8s_ref`.
    logging.LoggerAdapter(log, {"k8s_ref": {"apiVersion": "traindeploy.io/v1alpha1", "kind": "TrainDeploy",
                                            "namespace": "team-a", "name": "churn", "uid": "u-1"}}
                          ).warning("Gate failed:\nmultiple \"lines\" and ünïcode")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("Reconciliation failed unexpectedly.")
    lines = stream.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 3
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
        assert entry["time"].endswith("Z") and "T" in entry["time"]
        assert entry["logger"] == "traindeploy.test"
    assert [e["level"] for e in entries] == ["info", "warning", "error"]
    assert entries[0]["message"] == "Created PyTorchJob 'churn-g1-train'."
    assert entries[1]["message"] == "Gate failed:\nmultiple \"lines\" and ünïcode"
    assert entries[1]["object"]["namespace"] == "team-a" and entries[1]["object"]["name"] == "churn"
    assert "ValueError: boom" in entries[2]["exception"]


def test_text_logs_name_the_object(root_logging):
    stream = io.StringIO()
    runner.configure_logging("debug", "text", stream=stream)
    log = logging.getLogger("traindeploy.test")
    logging.LoggerAdapter(log, {"k8s_ref": {"namespace": "team-a", "name": "churn"}}).debug("Waiting.")
    assert stream.getvalue().rstrip().endswith("DEBUG traindeploy.test: [team-a/churn] Waiting.")


def test_operator_process_logs_json_only(control_plane, namespace, tmp_path):
    """The real operator against the real apiserver, as the chart runs it: every line it writes,
    kopf's own included, is one JSON object."""
    port = processes.free_port()
    logfile = tmp_path / "operator.log"
    env = {**os.environ, **OPERATOR_ENV, "KUBECONFIG": str(control_plane.kubeconfig),
           "TRAINDEPLOY_LOG_FORMAT": "json", "TRAINDEPLOY_LOG_LEVEL": "debug",
           "TRAINDEPLOY_WATCH_NAMESPACES": namespace}
    proc = processes.start([sys.executable, "-m", "traindeploy", "run", "--liveness",
                            f"http://127.0.0.1:{port}/healthz"], logfile, env=env)
    try:
        processes.wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status
                             == 200, 60, "operator liveness", proc, logfile)
    finally:
        processes.stop(proc, grace=20)
    lines = [line for line in logfile.read_text().splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]
    assert any(namespace in e["message"] and e["logger"] == "traindeploy.runner" for e in entries)
    assert any(e["logger"].startswith("kopf") for e in entries)
    assert {e["level"] for e in entries} <= {"debug", "info", "warning", "error", "critical"}
