"""Canary analysis between rollout steps: an HTTP probe of the canary predictor and Prometheus
queries with thresholds. Each check returns (passed, message); any failure means rollback."""

from __future__ import annotations

import string

import requests

from traindeploy.results import Problem, invalid
from traindeploy.serving.state import Serving
from traindeploy.serving.traffic import canary_predictor


def probe(base_url: str, spec: dict, session: requests.Session) -> tuple[bool, str]:
    url = base_url.rstrip("/") + spec["path"]
    method = spec.get("method", "POST")
    expected = spec.get("expectedStatus", 200)
    try:
        response = session.request(method, url, data=spec.get("body"), timeout=spec.get("timeoutSeconds", 10),
                                   headers={"Content-Type": "application/json"} if spec.get("body") else None,
                                   allow_redirects=False)
    except requests.RequestException as error:
        return False, f"probe {method} {url} failed: {type(error).__name__}"
    if response.status_code != expected:
        return False, f"probe {method} {url} answered HTTP {response.status_code}, expected {expected}"
    return True, f"probe {method} {url} answered HTTP {response.status_code}"


def prometheus(base_url: str, queries: list[dict], variables: dict[str, str], session: requests.Session,
               timeout: float) -> tuple[bool, str]:
    results = []
    for check in queries:
        query = string.Template(check["query"]).safe_substitute(variables)
        try:
            response = session.get(base_url.rstrip("/") + "/api/v1/query", params={"query": query},
                                   timeout=timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as error:
            return False, f"{check['name']}: Prometheus query failed: {type(error).__name__}"
        if response.status_code != 200 or body.get("status") != "success":
            return False, f"{check['name']}: Prometheus answered {response.status_code}: {body.get('error', '')}"
        samples = (body.get("data") or {}).get("result") or []
        if not samples:
            return False, f"{check['name']}: the query returned no sample"
        raw = samples[0]["value"][1] if "value" in samples[0] else samples[0].get("values", [[0, "nan"]])[-1][1]
        value = float(raw)
        if "max" in check and not value <= float(check["max"]):
            return False, f"{check['name']}={value:g} is above the maximum {float(check['max']):g}"
        if "min" in check and not value >= float(check["min"]):
            return False, f"{check['name']}={value:g} is below the minimum {float(check['min']):g}"
        results.append(f"{check['name']}={value:g}")
    return True, "Prometheus checks passed: " + ", ".join(results)


def analyse(s: Serving, url: str | None, version: str) -> tuple[bool, str]:
    """The canary's checks between steps, as spec.serving.canary.analysis sets them."""
    checks = (s.spec.get("canary") or {}).get("analysis") or {}
    p = s.p
    verdicts = ["canary ready"]
    if checks.get("probe"):
        if not url:
            return False, "the canary has no address to probe"
        passed, message = probe(url, checks["probe"], p.env.http)
        if not passed:
            return False, message
        verdicts.append(message)
    if checks.get("prometheus"):
        base = checks["prometheus"].get("url") or p.env.config.prometheus_url
        if not base:
            raise Problem(invalid("spec.serving.canary.analysis.prometheus.url",
                                  "not set, and the operator has no default Prometheus URL."))
        variables = {"namespace": p.namespace, "name": p.name, "inferenceService": s.name,
                     "canary": canary_predictor(s), "version": version}
        passed, message = prometheus(base, checks["prometheus"]["queries"], variables, p.env.http,
                                     p.env.config.http_timeout)
        if not passed:
            return False, message
        verdicts.append(message)
    return True, "; ".join(verdicts)
