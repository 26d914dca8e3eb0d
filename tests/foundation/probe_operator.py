"""A minimal kopf operator used to prove that kopf works against the test control plane."""

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.finalizer = "probes.harness.traindeploy.io/finalizer"


@kopf.on.login()
def login(**kwargs):
    # kopf's own readers take $KUBECONFIG when called; the client library's default
    # location is fixed when it is first imported, before the test control plane exists.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.create("harness.traindeploy.io", "v1", "probes")
def observe(body, spec, patch, logger, **_):
    patch.status["echo"] = spec["message"]
    logger.info("Probe observed.")
    kopf.info(body, reason="Observed", message="Probe observed.")
