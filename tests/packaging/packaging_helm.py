"""Runs the real helm against the chart: render it with given values, parse what comes out."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import yaml

from harness.paths import REPO_ROOT

CHART = REPO_ROOT / "charts" / "traindeploy-operator"


class Helm:
    def __init__(self, tools: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = tools / "helm"
        self.home = home
        self.kubeconfig = kubeconfig
        self._cache: dict[str, subprocess.CompletedProcess] = {}
        for part in ("config", "cache", "data"):
            (home / part).mkdir(parents=True, exist_ok=True)

    def with_cluster(self, kubeconfig: Path) -> "Helm":
        return Helm(self.binary.parent, self.home, kubeconfig)

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        # Its own config, cache and data directories: nothing from (or to) the user's helm setup.
        env = {**os.environ, "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_CACHE_HOME": str(self.home / "cache"), "HELM_DATA_HOME": str(self.home / "data")}
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def values_file(self, values: dict | None) -> Path:
        text = json.dumps(values or {}, sort_keys=True)
        path = self.home / f"values-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
        path.write_text(yaml.safe_dump(values or {}))
        return path

    def template(self, values: dict | None = None, *, release: str = "td", namespace: str = "traindeploy-system",
                 chart: Path = CHART, show_only: tuple[str, ...] = (), extra: tuple[str, ...] = (),
                 check: bool = True) -> subprocess.CompletedProcess:
        args = ["template", release, str(chart), "--namespace", namespace, "-f", str(self.values_file(values)),
                *[arg for template in show_only for arg in ("--show-only", template)], *extra]
        # The chart itself is rendered once per set of arguments; copies that tests change, each time.
        key = json.dumps(args)
        if chart != CHART or key not in self._cache:
            self._cache[key] = self.run(*args, check=False)
        result = self._cache[key]
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def render(self, values: dict | None = None, **kwargs) -> list[dict]:
        """The rendered objects, in helm's install order."""
        return [doc for doc in yaml.safe_load_all(self.template(values, **kwargs).stdout) if doc]


def find(objects: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objects: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rule_table(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs} of a role's rules."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                table.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return table
