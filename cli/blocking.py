"""A standard-library failover client: the quick commands and the parallel transfers use it.

aiohttp alone takes longer to import than a whole `p2pstore stat` may take, so the commands that
send a few requests (stat, ls, rm, status, members, keys) and the many-file transfers (one
keep-alive connection per worker thread) speak HTTP through ``http.client``. Failover is the
same as the asyncio client's: a node that cannot be reached or answers 503 hands the request
to the next URL; any other answer is final.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from .failures import ApiError, CliError, os_reason, unreachable

CONNECT_TIMEOUT = 5.0
READ_IDLE_TIMEOUT = 300.0
CHUNK = 1024 * 1024

BodyFactory = Callable[[], IO[bytes] | bytes]


def _error_from(resp: http.client.HTTPResponse, method: str, node: str) -> ApiError:
    """An ApiError from an error response, tolerating bodies that are not JSON."""
    body = b"" if method == "HEAD" else resp.read()
    message, detail = "", None
    try:
        data = json.loads(body) if body else {}
        if isinstance(data, dict):
            message = str(data.get("error") or "")
            detail = data.get("detail")
    except ValueError:
        pass
    if not message and body:
        message = body.decode("utf-8", "replace").strip().splitlines()[0][:200]
    return ApiError(resp.status, message or resp.reason or f"HTTP {resp.status}", detail, node)


class BlockingClient:
    """Talks to the first node of ``urls`` that answers; safe to share between threads."""

    def __init__(self, urls: list[str], token: str | None = None) -> None:
        self.urls = urls
        self.token = token
        self._local = threading.local()

    def _connection(self, base: str, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's kept-alive connection to ``base`` (and whether it was reused)."""
        conns: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(base)
        if conn is not None and not fresh:
            return conn, True
        if conn is not None:
            conn.close()
        parts = urlsplit(base)
        host, port = parts.hostname or "127.0.0.1", parts.port
        if parts.scheme == "https":
            import ssl

            ctx = ssl.create_default_context()
            conn = http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT, context=ctx,
                                               blocksize=CHUNK)  # fmt: skip
        else:
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT, blocksize=CHUNK)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(READ_IDLE_TIMEOUT)
        conns[base] = conn
        return conn, False

    def _send(
        self, base: str, method: str, target: str, headers: dict[str, str], body: BodyFactory | None
    ) -> http.client.HTTPResponse:
        """One request to one node; a kept-alive connection the node closed is retried once."""
        fresh = False
        while True:
            conn, reused = self._connection(base, fresh)
            try:
                conn.request(method, target, body=body() if body else None, headers=headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if not reused:
                    raise
                fresh = True

    @contextmanager
    def open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        """Send with failover; yields the response (its body is drained afterwards)."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        target = path + ("?" + urlencode(query) if query else "")
        all_headers = dict(headers or {})
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        failures: list[str] = []
        last_503: ApiError | None = None
        for base in self.urls:
            try:
                resp = self._send(base, method, target, all_headers, body)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{base}: {os_reason(exc)}")
                self._local.__dict__.get("conns", {}).pop(base, None)
                continue
            if resp.status >= 400:
                err = _error_from(resp, method, base.split("://", 1)[-1])
                if resp.status == 503:
                    last_503 = err
                    failures.append(f"{base}: {err.message}")
                    continue
                raise err
            try:
                yield resp
                resp.read()  # leave the connection clean for the next request
            finally:
                resp.close()
            return
        if last_503 is not None:
            raise last_503  # a node answered: its reason, not "cannot reach"
        raise unreachable(self.urls, failures)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode its JSON answer."""
        with self.open(method, path, **kwargs) as resp:
            body = resp.read()
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError as exc:
            raise CliError(f"node sent an invalid JSON answer: {exc}") from exc

    def close(self) -> None:
        """Close this thread's connections."""
        for conn in self._local.__dict__.get("conns", {}).values():
            conn.close()
