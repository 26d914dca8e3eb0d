"""Multi-user KFP refuses experiments without a namespace (experiment_server.go): the pipeline
stage names the TrainDeploy's namespace, or spec.pipeline.namespace, the KFP profile."""

from __future__ import annotations

import pytest
from kubernetes import client

from e2e import manifests
from e2e.test_lifecycle import create
from harness.kfp_fake import KfpFake
from traindeploy.config import OperatorConfig
from traindeploy.kube import Kube
from traindeploy.reconciler import Environment, reconcile

PACKAGE = "pipelineInfo: {name: prep}\nroot: {dag: {tasks: {}}}\nschemaVersion: 2.1.0\nsdkVersion: kfp-2.16.0\n"


@pytest.mark.parametrize("profile", [None, "team-a"], ids=["the TrainDeploy's namespace", "spec.pipeline.namespace"])
def test_a_run_is_submitted_to_multi_user_kfp_in_the_profile_namespace(api_client, apiserver, namespace, mlflow_server,
                                                                       model_name, profile):
    client.CoreV1Api(api_client).create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="prep"), data={"pipeline.yaml": PACKAGE}))
    with KfpFake(multi_user=True) as kfp:
        body = manifests.minimal("churn", model_name)
        body["spec"]["pipeline"] = {"endpoint": kfp.url,
                                    "package": {"configMapKeyRef": {"name": "prep", "key": "pipeline.yaml"}}}
        if profile:
            body["spec"]["pipeline"]["namespace"] = profile
        td = create(api_client, namespace, body)
        env = Environment(kube=Kube(apiserver), config=OperatorConfig(mlflow_tracking_uri=mlflow_server.url))
        outcome = reconcile(td, env)
        assert outcome.status["phase"] == "PipelineRunning", outcome.status["conditions"]
        run_id = outcome.status["pipeline"]["runId"]
        experiments = list(kfp.experiments.values())
        assert [e["namespace"] for e in experiments] == [profile or namespace]
        td["status"] = outcome.status
        again = reconcile(td, env)  # found again, not submitted twice
        assert again.status["pipeline"]["runId"] == run_id and len(kfp.experiments) == 1
