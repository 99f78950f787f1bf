"""An httpx transport that sends requests with aiohttp.

The executor speaks httpx (its request/response model, and `MockTransport`
as the seam in tests), but httpcore's pool spends 1.5-2.5 ms of CPU per
request on this class of machine, checking every pooled socket on every
request. aiohttp's connector does the same job for about a fifth of that,
so real calls go through this transport. Errors are mapped to the httpx
exceptions the executor classifies (timeouts and connection errors are
transient).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 100, keepalive_s: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive_s,
                                             enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                  trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                   if k.lower() not in (b"host", b"content-length", b"transfer-encoding")]
        body = await request.aread()
        try:
            async with self._get_session().request(
                request.method, str(request.url), data=body or None, headers=headers,
                timeout=timeout, allow_redirects=False, skip_auto_headers=("User-Agent", "Content-Type"),
            ) as response:
                content = await response.read()
                raw_headers = [(k, v) for k, v in response.raw_headers
                               if k.lower() not in (b"content-encoding", b"transfer-encoding", b"content-length")]
                return httpx.Response(response.status, headers=raw_headers, content=content, request=request)
        except (aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError) as exc:
            kind = httpx.ConnectTimeout if isinstance(exc, aiohttp.ConnectionTimeoutError) else httpx.ReadTimeout
            raise kind(str(exc) or "timed out", request=request) from exc
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout("timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(str(exc) or type(exc).__name__, request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
