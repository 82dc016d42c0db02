"""Failover HTTP client for the node's public API.

Any node is a gateway, so the CLI takes a list of node URLs and moves on to the next one when a
node cannot be reached or answers 503; every other answer (including 4xx) is final.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .failures import ApiError, BadInput, CliError, UnreachableError, os_reason, unreachable

__all__ = ["ApiError", "BadInput", "CliError", "UnreachableError"]

if TYPE_CHECKING:  # aiohttp is imported lazily: it is a third of the CLI's start-up time
    import aiohttp

DEFAULT_URL = "http://127.0.0.1:7000"
CHUNK = 1024 * 1024
CONNECT_TIMEOUT = 5.0
READ_IDLE_TIMEOUT = 300.0

BodyFactory = Callable[[], AsyncIterator[bytes]]


def parse_urls(raw: str | None) -> list[str]:
    """Split a comma-separated URL list; accept bare ``host:port`` for convenience."""
    urls = []
    for part in (raw or DEFAULT_URL).split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        if "://" not in part:
            part = "http://" + part
        urls.append(part)
    if not urls:
        raise BadInput("no node URL given (use --url or P2PSTORE_URL)")
    return urls


def key_path(key: str) -> str:
    """``/files/<key>`` with every segment quoted but the slashes kept."""
    if not key:
        raise BadInput("key must not be empty")
    return "/files/" + "/".join(quote(seg, safe="") for seg in key.split("/"))


def _reason(exc: BaseException) -> str:
    """A short, human reason for a connection failure ("connection refused", "timed out")."""
    import aiohttp

    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):  # its errno 1 would read "not permitted"
        cert_error = exc.certificate_error
        why = getattr(cert_error, "verify_message", None) or getattr(cert_error, "reason", None) or cert_error
        return f"its TLS certificate is not trusted ({why}); name its CA with SSL_CERT_FILE=ca.pem"
    os_error = getattr(exc, "os_error", None)
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(os_error, socket.gaierror):
        return os_reason(os_error if isinstance(os_error, socket.gaierror) else socket.gaierror(str(exc)))
    if isinstance(os_error, OSError) and os_error.errno:
        return os_reason(os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


async def error_from(resp: aiohttp.ClientResponse, node: str = "") -> ApiError:
    """Turn an error response into an ApiError, tolerating non-JSON bodies."""
    import aiohttp

    message = ""
    detail: Any = None
    if resp.method != "HEAD":
        try:
            body = await resp.read()
            data = json.loads(body) if body else {}
            if isinstance(data, dict):
                message = str(data.get("error") or "")
                detail = data.get("detail")
            if not message and body:
                message = body.decode("utf-8", "replace").strip().splitlines()[0][:200]
        except (ValueError, aiohttp.ClientError, UnicodeDecodeError):
            pass
    if not message:
        message = resp.reason or f"HTTP {resp.status}"
    return ApiError(resp.status, message, detail, node)


@dataclass
class Client:
    """Talks to the first reachable node of ``urls``; use as ``async with Client(...)``."""

    urls: list[str]
    token: str | None = None
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> Client:
        import aiohttp

        # No total timeout: a multi-GB transfer may legitimately take hours. A dead peer is
        # still caught by the connect timeout and a stalled one by the per-read idle timeout.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=CONNECT_TIMEOUT,
            sock_connect=CONNECT_TIMEOUT,
            sock_read=READ_IDLE_TIMEOUT,
        )
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        data: Any = None,
        json_body: Any = None,
    ) -> aiohttp.ClientResponse:
        """Send a request with failover and return the (unread) response.

        The caller must ``release()`` the response. Error statuses other than 503 raise
        ApiError; a 503 or a connection failure moves on to the next URL. ``body`` is a
        factory so a streamed upload can be restarted against the next node.
        """
        import aiohttp
        from yarl import URL

        assert self._session is not None, "use 'async with Client(...)'"
        failures: list[str] = []
        last_503: ApiError | None = None
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        for base in self.urls:
            url = URL(base + path, encoded=True)
            if query:
                url = url.update_query(query)
            payload = body() if body is not None else data
            try:
                resp = await self._session.request(
                    method, url, headers=self._headers(headers), data=payload, json=json_body
                )
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                failures.append(f"{base}: {_reason(exc)}")
                continue
            if resp.status < 400:
                return resp
            try:
                err = await error_from(resp, base.split("://", 1)[-1])
            finally:
                resp.release()
            if resp.status == 503:
                last_503 = err
                failures.append(f"{base}: {err.message}")
                continue
            raise err
        if last_503 is not None:
            raise last_503  # a node answered: its reason, not "cannot reach"
        raise unreachable(self.urls, failures)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode its JSON answer."""
        resp = await self.open(method, path, **kwargs)
        try:
            body = await resp.read()
        finally:
            resp.release()
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError as exc:
            raise CliError(f"node sent an invalid JSON answer: {exc}") from exc
