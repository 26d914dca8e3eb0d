"""Gateway API HTTPRoute that weights traffic between the stable and the canary predictor in
KServe's Standard mode, where KServe itself does not split traffic (see UPSTREAM.md 4.2-4.3)."""

from __future__ import annotations

import copy

API_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"
GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"

# KServe's Standard mode exposes each predictor as a Service "<isvc>-predictor" on port 80.
PREDICTOR_PORT = 80


def predictor_service(inference_service: str) -> str:
    return f"{inference_service}-predictor"


def build(meta: dict, *, gateway: dict, hostnames: list[str], stable_service: str,
          canary_service: str | None = None, canary_weight: int = 0) -> dict:
    """All traffic to the stable predictor, or `canary_weight` percent of it to the canary."""
    parent = {"group": GROUP, "kind": "Gateway", "name": gateway["name"]}
    for key in ("namespace", "sectionName"):
        if gateway.get(key):
            parent[key] = gateway[key]
    backends = [{"name": stable_service, "port": PREDICTOR_PORT, "weight": 100 - canary_weight}]
    if canary_service is not None:
        backends.append({"name": canary_service, "port": PREDICTOR_PORT, "weight": canary_weight})
    spec: dict = {"parentRefs": [parent], "rules": [{"backendRefs": backends}]}
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": copy.deepcopy(meta), "spec": spec}


def weights(route: dict) -> dict[str, int]:
    """Backend Service name -> weight, as the route says now."""
    result: dict[str, int] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        for backend in rule.get("backendRefs") or []:
            result[backend["name"]] = backend.get("weight", 1)
    return result
