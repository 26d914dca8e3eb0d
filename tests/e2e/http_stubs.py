"""Local HTTP servers on 127.0.0.1 for canary analysis: a stand-in for the canary's model server
(the probe's target) and a server answering Prometheus' instant-query API
(`GET /api/v1/query`, response shape as in Prometheus' HTTP API documentation and
prometheus/prometheus web/api/v1/api.go: the `status`/`data` envelope, a vector `result` of
`[time, "value"]` samples)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Stub:
    def __init__(self) -> None:
        stub = self
        self.requests: list[tuple[str, str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                stub.requests.append((self.command, self.path, body))
                status, payload = stub.answer(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, path: str, body: str) -> tuple[int, dict]:
        raise NotImplementedError


class ModelServer(_Stub):
    """Answers inference requests with `status` (200 by default)."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status

    def answer(self, method, path, body):
        if self.status != 200:
            return self.status, {"error": "model failed"}
        return 200, {"model_name": "model", "outputs": [{"name": "predict", "shape": [1], "datatype": "FP64",
                                                          "data": [1.0]}]}


class Prometheus(_Stub):
    """Answers every instant query with one sample of `value` (None: an empty result)."""

    def __init__(self, value: float | None) -> None:
        super().__init__()
        self.value = value
        self.queries: list[str] = []

    def answer(self, method, path, body):
        parsed = urllib.parse.urlsplit(path)
        if parsed.path != "/api/v1/query":
            return 404, {"status": "error", "errorType": "not_found", "error": "unknown path"}
        query = urllib.parse.parse_qs(parsed.query).get("query", [""])[0]
        self.queries.append(query)
        result = [] if self.value is None else [{"metric": {}, "value": [time.time(), str(self.value)]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
