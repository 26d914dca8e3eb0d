"""InferenceService status in Knative mode as KServe v0.20 writes it (UPSTREAM.md 4.4-4.5;
kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go `PropagateStatus`,
`SetModelState`, and pkg/controller/v1beta1/inferenceservice/reconcilers/knative).

Pure: `knative_traffic` decides the split and how the rolled-out revisions move; `knative` writes
the whole status from it. The dev executor and the test stand-in both call these.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

KNATIVE_CONDITIONS = ("IngressReady", "LatestDeploymentReady", "PredictorConfigurationReady", "PredictorReady",
                      "PredictorRouteReady", "Ready", "RoutesReady")
# Conditions that are not dependents of Ready carry severity Info.
INFO_CONDITIONS = {"LatestDeploymentReady", "PredictorConfigurationReady", "PredictorRouteReady", "RoutesReady",
                   "Stopped"}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Revisions:
    """What KServe remembers between reconciles, and what Knative reports."""

    latest_created: str
    latest_ready: str | None
    rolled_out: str | None = None
    previous_rolled_out: str | None = None


def knative_traffic(revisions: Revisions, percent: int | None) -> tuple[list[dict], Revisions]:
    """The ksvc traffic for `canaryTrafficPercent` and the rolled-out fields after it (4.5).

    Knative resolves `latestRevision: true` to the last *ready* revision, so an unready newest
    revision takes no traffic. Targets carry no `url` here: tags are added by `tag_urls`.
    """
    serving = revisions.latest_ready
    if serving is None:
        return [], revisions
    if percent is None or percent >= 100 or revisions.rolled_out is None:
        traffic = [{"revisionName": serving, "latestRevision": True, "percent": 100}]
        if serving != revisions.rolled_out:
            revisions = replace(revisions, previous_rolled_out=revisions.rolled_out, rolled_out=serving)
        return traffic, revisions
    rolled_out = revisions.rolled_out
    if percent == 0 and rolled_out == serving and revisions.previous_rolled_out:
        # A rollback after promotion: the rolled-out revision goes back to the previous one.
        rolled_out = revisions.previous_rolled_out
        revisions = replace(revisions, rolled_out=rolled_out, previous_rolled_out=None)
    traffic = [{"revisionName": serving, "latestRevision": True, "percent": percent},
               {"tag": "prev", "revisionName": rolled_out, "latestRevision": False, "percent": 100 - percent}]
    return traffic, revisions


def tag_urls(traffic: list[dict], url_of, tag_latest: bool) -> list[dict]:
    """Tagged targets get a URL of their own (`prev`, and `latest` with tag routing enabled)."""
    tagged = []
    for target in traffic:
        target = dict(target)
        if target.get("latestRevision") and tag_latest and len(traffic) > 1:
            target["tag"] = "latest"
        if target.get("tag"):
            target["url"] = url_of(target["revisionName"])
        tagged.append(target)
    return tagged


def _conditions(ready: str, reason: str | None, message: str | None, ingress: bool, at: str) -> list[dict]:
    """Every Knative-mode condition; Ready and the predictor's follow the ksvc (`ready`), and
    IngressReady is True once a URL is set."""
    conditions = []
    for kind in (*KNATIVE_CONDITIONS, "Stopped"):
        status = "False" if kind == "Stopped" else ("True" if ingress else "Unknown") if kind == "IngressReady" \
            else ready
        condition = {"type": kind, "status": status, "lastTransitionTime": at}
        if kind in INFO_CONDITIONS:
            condition["severity"] = "Info"
        if status != "True" and kind != "Stopped" and reason:
            condition.update({"reason": reason, "message": message or ""})
        conditions.append(condition)
    return conditions


def knative(*, url: str, predictor_url: str, revisions: Revisions, traffic: list[dict], observed_generation: int,
            failure: str | None = None, at: str | None = None, address: str | None = None) -> dict:
    """The whole status. `failure` is the message of a latest revision that failed to load;
    `address` is the in-cluster URL (default: `url`)."""
    at = at or now()
    up_to_date = revisions.latest_ready == revisions.latest_created
    # Ready copies the ksvc's, which follows the newest revision: False when it failed (the old
    # revision still serves), Unknown while it loads.
    if failure:
        ready, reason = "False", "RevisionFailed"
    else:
        ready, reason = ("True" if traffic and up_to_date else "Unknown"), None
    predictor = {"url": predictor_url, "address": {"url": predictor_url},
                 "latestCreatedRevision": revisions.latest_created, "latestReadyRevision": revisions.latest_ready,
                 "latestRolledoutRevision": revisions.rolled_out,
                 "previousRolledoutRevision": revisions.previous_rolled_out, "traffic": traffic}
    model = {"transitionStatus": "UpToDate" if up_to_date and traffic else "InProgress",
             "states": {"activeModelState": "Loaded" if traffic else "Pending",
                        "targetModelState": "Loaded" if up_to_date else "Loading"},
             "copies": {"failedCopies": 0, "totalCopies": 1}}
    if failure:
        model.update({"transitionStatus": "BlockedByFailedLoad",
                      "states": {"activeModelState": "Loaded" if traffic else "", "targetModelState": "FailedToLoad"},
                      "copies": {"failedCopies": 1, "totalCopies": 1},
                      "lastFailureInfo": {"reason": "ModelLoadFailed", "message": failure,
                                          "modelRevisionName": revisions.latest_created, "exitCode": 1, "time": at}})
    status = {"deploymentMode": "Knative", "observedGeneration": observed_generation,
              "conditions": _conditions(ready, reason, failure, bool(traffic), at),
              "components": {"predictor": {k: v for k, v in predictor.items() if v not in (None, "")}},
              "modelStatus": model}
    if traffic:
        status.update({"url": url, "address": {"url": address or url}})
    return status
