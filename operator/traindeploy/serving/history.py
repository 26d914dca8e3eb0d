"""What serving remembers: status.rolloutHistory (the last versions served, with their storage, so
a rollback can find them) and the `champion` alias that names the version serving all traffic."""

from __future__ import annotations

from traindeploy import lifecycle as lc
from traindeploy.serving.state import Serving
from traindeploy.stages.registration import ALIAS_CHAMPION

HISTORY_LENGTH = 5


def record(s: Serving, version: str, previous: str | None, result: str, reason: str, storage: str | None) -> None:
    status = s.p.status
    history = [h for h in status.get("rolloutHistory") or []
               if not (h.get("version") == version and h.get("result") == result)]
    entry = {"version": version, "result": result, "reason": reason[:1024], "at": s.p.now}
    if previous:
        entry["previousVersion"] = previous
    if storage:
        entry["storageUri"] = storage
    status["rolloutHistory"] = ([entry] + history)[:HISTORY_LENGTH]


def storage_of(s: Serving, version: str) -> str | None:
    for entry in s.p.status.get("rolloutHistory") or []:
        if entry.get("version") == version and entry.get("storageUri"):
            return entry["storageUri"]
    return None


def now_serving(s: Serving, version: str, storage: str) -> None:
    """`version` serves all traffic: status says so and `champion` names it. Reached once per
    rollout (a pass that dies before its status write repeats it, and setting an alias again is
    harmless), so the alias is set without reading it first; the version it named is the one
    status says served before."""
    model_name = s.p.spec["model"]["name"]
    previous = s.serving.get("modelVersion")
    s.p.mlflow(lambda client: client.set_alias(model_name, ALIAS_CHAMPION, version))
    if previous and previous != version:
        s.p.event("Normal", "AliasMoved", f"Moved alias {ALIAS_CHAMPION} of {model_name} from version {previous} "
                                          f"to version {version}.")
    s.serving.update({"modelVersion": version, "storageUri": storage, "traffic": lc.serving_traffic(version)})
