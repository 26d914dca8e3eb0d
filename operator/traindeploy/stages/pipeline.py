"""The pipeline stage: a KFP v2 run that prepares data before training (spec.pipeline).

The run is found again by its display name before one is created, so a pass that died after
submitting it does not submit it twice. KFP cannot be watched: it is polled while the run goes on.
"""

from __future__ import annotations

import logging

import requests

from traindeploy import conditions as cond
from traindeploy import kfp, naming
from traindeploy.children import FAILED, SUCCEEDED
from traindeploy.context import Pass
from traindeploy.results import Blocked, Done, Fail, Problem, Result, invalid
from traindeploy.stages.base import Stage

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 21600  # as the CRD's default of spec.pipeline.timeoutSeconds


def run(p: Pass) -> Result:
    spec = p.spec["pipeline"]
    record = p.record("pipeline")
    record.setdefault("startedAt", p.now)
    endpoint = spec.get("endpoint") or p.env.config.kfp_endpoint
    if not endpoint:
        return invalid("spec.pipeline.endpoint", "not set, and the operator has no default KFP endpoint.")
    client = client_for(p)
    display_name = naming.pipeline_run_name(p.namespace, p.name, p.cycle, p.meta["uid"])
    try:
        if record.get("runId"):
            run_ = client.get_run(record["runId"])
        else:
            experiment_id = client.ensure_experiment(
                spec.get("experimentName") or f"traindeploy-{p.namespace}-{p.name}",
                namespace=spec.get("namespace") or p.namespace)  # multi-user KFP needs the profile
            record["experimentId"] = experiment_id
            run_ = client.find_run(experiment_id, display_name)
            if run_ is None:
                run_ = client.create_run(experiment_id, display_name, _package(p, spec), spec.get("parameters") or {},
                                         description=f"TrainDeploy {p.namespace}/{p.name} cycle {p.cycle}")
                p.event("Normal", "PipelineSubmitted", f"Submitted KFP run {run_.get('run_id')} ({display_name}).")
    except kfp.KfpUnavailable as error:
        return Blocked("KFPUnavailable", f"KFP at {endpoint} is unavailable: {error}")
    except kfp.KfpError as error:
        return Fail("PipelineSubmissionFailed", f"KFP refused the run: {error}")
    state = kfp.run_state(run_)
    record.update({"runId": run_.get("run_id"), "state": run_.get("state") or "PENDING"})
    record["url"] = kfp.run_url(p.env.config.kfp_ui_endpoint or endpoint, run_["run_id"])
    if state.phase == SUCCEEDED:
        return Done(f"KFP run {record['runId']} succeeded.")
    if state.phase == FAILED:
        return Fail("PipelineFailed", f"KFP run {record['runId']} ended {record['state']}: "
                                      f"{state.message or 'no error given'}")
    return p.running(f"KFP run {record['runId']} is {record['state']}.", record["startedAt"],
                     spec.get("timeoutSeconds") or DEFAULT_TIMEOUT, STAGE.deadline_reason,
                     lambda: terminate(client, record["runId"]), poll=p.env.config.poll_interval)


def terminate(client, run_id: str) -> None:
    """Stops a run whose cycle ended (deadline, superseded, deleted); best effort."""
    try:
        client.terminate_run(run_id)
    except (kfp.KfpUnavailable, kfp.KfpError) as error:
        log.warning("could not terminate KFP run %s: %s", run_id, error)


def client_for(p: Pass):
    """A client for the KFP server of this TrainDeploy, or None when it has none configured."""
    spec = p.spec.get("pipeline") or {}
    endpoint = spec.get("endpoint") or p.env.config.kfp_endpoint
    if not endpoint:
        return None
    return p.env.kfp_client(endpoint, _token(p, spec), p.env.config.http_timeout, p.env.http)


def _token(p: Pass, spec: dict) -> str | None:
    ref = spec.get("tokenSecretRef")
    if not ref:
        return None
    key = ref.get("key", "token")
    token = p.secret_values(ref["name"], "spec.pipeline.tokenSecretRef", (key,)).get(key)
    if token is None:
        raise Problem(Blocked("SecretKeyNotFound", f"spec.pipeline.tokenSecretRef: Secret {p.namespace}/{ref['name']} "
                                                   f"has no key {key}."))
    return token


def _package(p: Pass, spec: dict) -> dict:
    source = spec.get("package") or {}
    if source.get("configMapKeyRef"):
        ref = source["configMapKeyRef"]
        data = p.kube(lambda: p.env.kube.config_map_data(p.namespace, ref["name"]))
        if data is None:
            raise Problem(Blocked("PipelinePackageNotFound", f"spec.pipeline.package.configMapKeyRef: ConfigMap "
                                                             f"{p.namespace}/{ref['name']} does not exist."))
        if ref["key"] not in data:
            raise Problem(Blocked("PipelinePackageNotFound", f"spec.pipeline.package.configMapKeyRef: ConfigMap "
                                                             f"{p.namespace}/{ref['name']} has no key {ref['key']}."))
        text = data[ref["key"]]
    else:
        url = source["url"]
        try:
            response = p.env.http.get(url, timeout=p.env.config.http_timeout)
        except requests.RequestException as error:
            raise Problem(Blocked("PipelinePackageUnavailable", f"Could not fetch {url}: "
                                                                f"{type(error).__name__}")) from None
        if response.status_code != 200:
            raise Problem(Blocked("PipelinePackageUnavailable", f"Fetching {url} answered HTTP "
                                                                f"{response.status_code}."))
        text = response.text
    try:
        return kfp.load_pipeline_package(text)
    except ValueError as error:
        raise Problem(invalid("spec.pipeline.package", f"not a compiled KFP pipeline: {error}")) from None


STAGE = Stage("pipeline", cond.PIPELINE, "PipelineRunning", run, applies=lambda spec: bool(spec.get("pipeline")),
              deadline_reason="PipelineDeadlineExceeded")
