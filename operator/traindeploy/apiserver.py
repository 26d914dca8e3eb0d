"""The operator's own HTTP client for the Kubernetes apiserver: JSON requests and watch streams
over one bounded urllib3 connection pool, with the credentials kopf logs in with.

Why not the `kubernetes` client package: importing it loads every generated API model, 25-40 MiB
of the operator's memory, for the handful of calls the operator makes (`traindeploy.kube`,
`traindeploy.informer`, `traindeploy.leader`).

Answers are sorted in two, by type:
- `ApiError`: the apiserver answered, but not with 2xx; it carries the HTTP status and the
  Status object's `reason`, `details` and `message` (an ERROR watch event too).
- `Unreachable`: no usable answer: connection refused or reset, TLS failure, timeout.

Every request is sent once: a write sent twice could be applied twice and a read retried would
double its time bound. The callers retry, backing off.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

# Where a pod's service account is mounted (as kopf's `login_with_service_account` reads it).
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Bound service account tokens rotate (the kubelet refreshes the file well before they expire):
# the file is read again after this long, as client-go does.
TOKEN_REREAD_SECONDS = 60.0
# A watch's bytes are handed on as they arrive, in pieces of at most this many.
WATCH_READ_BYTES = 65536


class ApiError(Exception):
    """An answer other than 2xx. `reason` and `details` come from the Status object the apiserver
    sends; `message` is its own words, or the HTTP status line when it sent none."""

    def __init__(self, status: int, reason: str = "", message: str = "", details: Mapping[str, Any] | None = None):
        super().__init__(f"HTTP {status} {reason}: {message}".strip())
        self.status, self.reason, self.message, self.details = status, reason, message, dict(details or {})

    @classmethod
    def from_status(cls, status: int, body: Mapping[str, Any], status_line: str = "") -> "ApiError":
        """From a Status object (possibly empty: a proxy's answer); `status` when it names no code."""
        code = body.get("code")
        code = code if isinstance(code, int) and code > 0 else status
        message = body.get("message") or f"HTTP {code} {status_line}".strip()
        return cls(code, body.get("reason") or "", message, body.get("details") or {})


class Unreachable(Exception):
    """No usable answer from the apiserver: it could not be reached, or did not answer in time."""


class NoCredentials(Exception):
    """Neither a service account is mounted nor a kubeconfig found: the operator cannot start."""


def status_body(data: bytes) -> dict:
    """The Status object of an error answer, or {} when the body is not one (a proxy's HTML)."""
    try:
        body = json.loads(data) if data else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def query_string(query: Mapping[str, Any] | None) -> str:
    """The URL query for `query`: booleans as Kubernetes spells them, None values left out."""
    pairs = [(key, ("true" if value else "false") if isinstance(value, bool) else str(value))
             for key, value in (query or {}).items() if value is not None]
    return f"?{urllib.parse.urlencode(pairs)}" if pairs else ""


def path_segment(value: str) -> str:
    """A name or namespace, quoted for a URL path (a `/` in it cannot reach another resource)."""
    return urllib.parse.quote(value, safe="")


@dataclass(frozen=True)
class Kind:
    """A resource kind and where the apiserver serves it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The apiserver path of the kind's collection (in `namespace`, or cluster-wide when
        None), of one object `name`, or of its `subresource`."""
        path = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None:
            path += f"/namespaces/{path_segment(namespace)}"
        path += f"/{self.plural}"
        if name is not None:
            path += f"/{path_segment(name)}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


class TokenFile:
    """The `Authorization` header for the bearer token in a file, read again every `reread`
    seconds: the kubelet replaces a bound service account token before it expires."""

    def __init__(self, path: str, reread: float = TOKEN_REREAD_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.reread, self.clock = path, reread, clock
        self._lock = threading.Lock()
        self._token, self._read_at = "", float("-inf")

    def __call__(self) -> str | None:
        with self._lock:
            if self.clock() - self._read_at >= self.reread:
                try:
                    with open(self.path, encoding="utf-8") as file:
                        self._token = file.read().strip()
                except OSError:
                    if not self._token:
                        raise Unreachable(f"the token file {self.path} cannot be read") from None
                    # The kubelet swaps the file atomically; keep the last token until it is back.
                self._read_at = self.clock()
            return f"Bearer {self._token}" if self._token else None


class WatchStream:
    """The events of one watch request, as the apiserver sends them (newline-delimited JSON):
    {"type": ADDED | MODIFIED | DELETED | BOOKMARK, "object": ...}. An ERROR event (a watch
    refused as too old: code 410) ends it with `ApiError`. `stop()`, from any thread, ends it
    quietly."""

    def __init__(self, response: urllib3.BaseHTTPResponse, what: str) -> None:
        self._response, self.what = response, what
        self._stopped = False

    def __iter__(self) -> Iterator[dict]:
        pending = bytearray()
        try:
            for piece in self._response.stream(WATCH_READ_BYTES, decode_content=True):
                pending += piece
                while (end := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:end])
                    del pending[:end + 1]
                    if line.strip():
                        yield self._event(line)
            if pending.strip():
                yield self._event(bytes(pending))
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            if self._stopped:
                return
            raise Unreachable(f"{self.what}: {type(error).__name__}: {error}") from None
        finally:
            self._close()

    def _event(self, line: bytes) -> dict:
        try:
            event = json.loads(line)
        except ValueError:
            raise Unreachable(f"{self.what}: the watch sent a line that is not JSON") from None
        if event.get("type") == "ERROR":
            raise ApiError.from_status(500, event.get("object") or {})
        return event

    def stop(self) -> None:
        self._stopped = True
        shutdown = getattr(self._response, "shutdown", None)  # urllib3 2.3+: unblocks a read in another thread
        try:
            if shutdown is not None:
                shutdown()
        except (ValueError, RuntimeError, OSError):
            pass  # the stream has closed already

    def _close(self) -> None:
        # A watch is never read to its end: its connection cannot serve another request.
        self._response.close()
        self._response.release_conn()

    def __enter__(self) -> "WatchStream":
        return self

    def __exit__(self, *_) -> None:
        self.stop()
        self._close()


class ApiServer:
    """Requests to one apiserver over at most `connections` kept connections (more may open
    while many requests are in flight; those close afterwards)."""

    def __init__(self, server: str, *, authorization: Callable[[], str | None] = lambda: None,
                 ssl_context: ssl.SSLContext | None = None, insecure: bool = False, connections: int = 1) -> None:
        url = urllib.parse.urlsplit(server)
        self.server = server
        self._prefix = url.path.rstrip("/")  # a server behind a proxy may live under a path
        self._authorization = authorization
        tls = {}
        if url.scheme == "https":
            context = ssl_context or ssl.create_default_context()
            if insecure:  # kubeconfig's insecure-skip-tls-verify
                context.check_hostname = False
            # urllib3 sets the context's verify mode from `cert_reqs` on each connection.
            tls = {"ssl_context": context, "cert_reqs": "CERT_NONE" if insecure else "CERT_REQUIRED",
                   **({"assert_hostname": False} if insecure else {})}
        self._pool = urllib3.connection_from_url(f"{url.scheme}://{url.netloc}", maxsize=max(1, connections),
                                                 block=False, retries=False, **tls)

    @classmethod
    def from_environment(cls, connections: int = 1) -> "ApiServer":
        """In a pod, its service account; elsewhere `$KUBECONFIG` (default ~/.kube/config): read by
        kopf's own readers, so the operator's calls go out with exactly the credentials kopf's do."""
        import kopf  # only here: the credentials readers; the operator has imported it anyway

        settings = kopf.OperatorSettings()
        info = kopf.login_with_service_account(settings=settings)
        if info is not None:
            return cls.from_connection_info(info, connections, token_file=SERVICE_ACCOUNT_TOKEN,
                                            server=in_cluster_server(os.environ) or info.server)
        info = kopf.login_with_kubeconfig(settings=settings)
        if info is None:
            raise NoCredentials("no service account is mounted and no kubeconfig found ($KUBECONFIG, ~/.kube/config)")
        return cls.from_connection_info(info, connections)

    @classmethod
    def from_connection_info(cls, info, connections: int = 1, *, token_file: str | None = None,
                             server: str | None = None) -> "ApiServer":
        """From a `kopf.ConnectionInfo`; `token_file` is read again as it rotates."""
        if token_file:
            authorization: Callable[[], str | None] = TokenFile(token_file)
        else:
            header = info.as_http_headers().get("Authorization")
            authorization = lambda: header  # a kubeconfig's credentials do not change
        return cls(server or info.server, authorization=authorization, ssl_context=info.as_ssl_context(),
                   insecure=bool(info.insecure), connections=connections)

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", timeout: float) -> dict:
        """The JSON object the apiserver answers; `ApiError` for any answer but 2xx,
        `Unreachable` for none within `timeout` seconds."""
        what = f"{method} {path}"
        response = self._send(what, method, path, query, body, content_type, urllib3.Timeout(total=timeout),
                              preload=True)
        data = response.data
        if not 200 <= response.status < 300:
            raise ApiError.from_status(response.status, status_body(data), response.reason or "")
        try:
            answer = json.loads(data)
        except ValueError:
            raise Unreachable(f"{what}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise Unreachable(f"{what}: the answer is not a JSON object")
        return answer

    def watch(self, path: str, query: Mapping[str, Any] | None = None, *, timeout: float) -> WatchStream:
        """A watch of the collection at `path` (`watch=true` is added): its events as they come.
        `Unreachable` when nothing arrives for `timeout` seconds; a refused watch raises
        `ApiError` here, before any event."""
        what = f"watch {path}"
        response = self._send(what, "GET", path, {**(query or {}), "watch": True}, None, "",
                              urllib3.Timeout(connect=timeout, read=timeout), preload=False)
        if response.status != 200:
            try:
                data = response.read()
            except (urllib3.exceptions.HTTPError, OSError):
                data = b""
            finally:
                response.close()
                response.release_conn()
            raise ApiError.from_status(response.status, status_body(data), response.reason or "")
        return WatchStream(response, what)

    def _send(self, what: str, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
              content_type: str, timeout: urllib3.Timeout, *, preload: bool) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": "application/json"}
        if authorization := self._authorization():
            headers["Authorization"] = authorization
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = content_type
        try:
            return self._pool.urlopen(method, f"{self._prefix}{path}{query_string(query)}", body=data,
                                      headers=headers, timeout=timeout, retries=False, redirect=False,
                                      preload_content=preload)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unreachable(f"{what}: {type(error).__name__}: {error}") from None

    def close(self) -> None:
        self._pool.close()


def in_cluster_server(environ: Mapping[str, str]) -> str | None:
    """The apiserver a pod reaches by the service variables the kubelet sets (no DNS needed),
    as client-go's in-cluster config does; None outside a pod."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
