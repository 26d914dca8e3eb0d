"""A small async Kubernetes client on aiohttp, straight against the apiserver: what the bench, the
fast driver and the raw-client baseline use. It counts its own requests by verb and resource, so
the bench can take them out of the apiserver's totals; and it reads `apiserver_request_total`.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

# (group, version, plural) of what the bench touches; the core group is "".
TRAINDEPLOYS = ("traindeploy.io", "v1alpha1", "traindeploys")
PYTORCHJOBS = ("kubeflow.org", "v1", "pytorchjobs")
INFERENCESERVICES = ("serving.kserve.io", "v1beta1", "inferenceservices")

WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY")
_REQUEST_LINE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


def _path(kind: tuple[str, str, str], namespace: str, name: str | None = None, sub: str | None = None) -> str:
    group, version, plural = kind
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


class Kube:
    """One connection pool to the apiserver, from the control plane's admin kubeconfig."""

    def __init__(self, kubeconfig: Path, limit: int = 64) -> None:
        config = json.loads(Path(kubeconfig).read_text())
        self.server = config["clusters"][0]["cluster"]["server"]
        self._ssl = ssl.create_default_context(cafile=config["clusters"][0]["cluster"]["certificate-authority"])
        self._headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}"}
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self.counts: Counter[tuple[str, str]] = Counter()  # (verb, resource[/subresource]) as the apiserver names them

    async def __aenter__(self) -> "Kube":
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl), headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    def _count(self, verb: str, kind: tuple[str, str, str], sub: str | None) -> None:
        self.counts[(verb, kind[2] + (f"/{sub}" if sub else ""))] += 1

    async def _call(self, method: str, path: str, *, body=None, content_type: str = "application/json",
                    params: dict | None = None) -> dict:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else None
        for attempt in range(5):
            async with self._session.request(method, self.server + path, data=data, headers=headers,
                                             params=params, timeout=aiohttp.ClientTimeout(total=60)) as response:
                text = await response.text()
                if response.status == 429 or response.status >= 500:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                if response.status >= 400:
                    raise ApiError(response.status, text)
                return json.loads(text) if text else {}
        raise ApiError(response.status, text)

    async def create(self, kind, namespace: str, body: dict) -> dict:
        self._count("POST", kind, None)
        return await self._call("POST", _path(kind, namespace), body=body)

    async def get(self, kind, namespace: str, name: str) -> dict | None:
        self._count("GET", kind, None)
        try:
            return await self._call("GET", _path(kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, kind, namespace: str) -> dict:
        self._count("LIST", kind, None)
        return await self._call("GET", _path(kind, namespace))

    async def patch_status(self, kind, namespace: str, name: str, status: dict) -> dict:
        self._count("PATCH", kind, "status")
        return await self._call("PATCH", _path(kind, namespace, name, "status"), body={"status": status},
                                content_type="application/merge-patch+json")

    async def watch(self, kind, namespace: str) -> AsyncIterator[tuple[str, dict]]:
        """("ADDED" | "MODIFIED" | "DELETED", object) for every object and change, starting with a
        LIST (as ADDED, then ("SYNCED", {}) once), resuming after dropped connections, relisting on
        410 Gone."""
        version, synced = None, False
        while True:
            if version is None:
                listed = await self.list(kind, namespace)
                version = listed["metadata"]["resourceVersion"]
                for item in listed["items"]:
                    yield "ADDED", item
                if not synced:
                    synced = True
                    yield "SYNCED", {}
            self._count("WATCH", kind, None)
            params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "300",
                      "allowWatchBookmarks": "true"}
            try:
                async with self._session.get(self.server + _path(kind, namespace), params=params,
                                             timeout=aiohttp.ClientTimeout(total=None, sock_read=330)) as response:
                    if response.status == 410:
                        version = None
                        continue
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            version = None if event["object"].get("code") == 410 else version
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            yield event["type"], event["object"]
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)

    async def request_totals(self) -> Counter[tuple[str, str]]:
        """`apiserver_request_total` by (verb, resource[/subresource]), watches and connects left out."""
        async with self._session.get(self.server + "/metrics") as response:
            text = await response.text()
        totals: Counter[tuple[str, str]] = Counter()
        for line in text.splitlines():
            match = _REQUEST_LINE.match(line)
            if not match:
                continue
            labels = dict(part.split("=", 1) for part in match["labels"].split(","))
            labels = {key: value.strip('"') for key, value in labels.items()}
            if labels.get("verb") in ("WATCH", "CONNECT") or not labels.get("resource"):
                continue
            resource = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            totals[(labels["verb"], resource)] += float(match["value"])
        return totals
