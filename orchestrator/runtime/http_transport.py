"""The executor's one HTTP seam: `HttpClient.request(...) -> HttpReply`.

Two implementations:
- `AiohttpClient`, for real calls. httpx's pool (httpcore) cost 1.5-2.5 ms of
  CPU per request on this class of machine, checking every pooled socket on
  every request, and its request/response models another few hundred
  microseconds; aiohttp's connector does the same work for about a fifth.
- `HttpxClient`, which wraps any `httpx.AsyncClient`: tests hand the executor
  an httpx client over `httpx.MockTransport` or `ASGITransport`.

Both raise the same three errors, which the executor classifies
(timeouts and connection errors are transient, invalid requests are not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx

__all__ = [
    "HttpReply",
    "HttpClient",
    "HttpTimeout",
    "HttpConnectionError",
    "HttpInvalidRequest",
    "AiohttpClient",
    "HttpxClient",
    "as_http_client",
]


@dataclass(frozen=True)
class HttpReply:
    status: int
    reason: str
    content_type: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class HttpTimeout(Exception):
    pass


class HttpConnectionError(Exception):
    pass


class HttpInvalidRequest(Exception):
    pass


class HttpClient(Protocol):
    async def request(self, method: str, url: str, *, headers: Mapping[str, str], params: Mapping[str, Any],
                      body: bytes | None, timeout_s: float, connect_timeout_s: float) -> HttpReply: ...

    async def aclose(self) -> None: ...


class AiohttpClient:
    def __init__(self, *, max_connections: int = 100, keepalive_s: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive_s)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], params: Mapping[str, Any],
                      body: bytes | None, timeout_s: float, connect_timeout_s: float) -> HttpReply:
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=timeout_s)
        try:
            async with self._get_session().request(
                method, url, headers=dict(headers), params=dict(params) or None, data=body,
                timeout=timeout, allow_redirects=False, skip_auto_headers=("User-Agent",),
            ) as response:
                content = await response.read()
                return HttpReply(response.status, response.reason or "",
                                 response.headers.get("Content-Type", ""), content)
        except (aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
            raise HttpTimeout(str(exc) or type(exc).__name__) from exc
        except aiohttp.InvalidURL as exc:
            raise HttpInvalidRequest(f"invalid URL {exc}") from exc
        except aiohttp.ClientError as exc:
            raise HttpConnectionError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], params: Mapping[str, Any],
                      body: bytes | None, timeout_s: float, connect_timeout_s: float) -> HttpReply:
        timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        try:
            response = await self.client.request(method, url, headers=dict(headers), params=dict(params) or None,
                                                 content=body, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise HttpTimeout(type(exc).__name__) from exc
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise HttpInvalidRequest(str(exc)) from exc
        except httpx.TransportError as exc:
            raise HttpConnectionError(str(exc) or type(exc).__name__) from exc
        return HttpReply(response.status_code, response.reason_phrase or "",
                         response.headers.get("content-type", ""), response.content)

    async def aclose(self) -> None:
        await self.client.aclose()


def as_http_client(http: HttpClient | httpx.AsyncClient) -> HttpClient:
    return HttpxClient(http) if isinstance(http, httpx.AsyncClient) else http
