"""The aiohttp client behind the executor's HTTP seam: answers, and the errors it classifies."""

from __future__ import annotations

import asyncio
import socket

import pytest

from orchestrator.runtime.http_transport import AiohttpClient, HttpConnectionError, HttpTimeout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(port: int, reply: bytes | None) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next((l.split(b":")[1] for l in head.lower().split(b"\r\n") if l.startswith(b"content-length")), 0))
        body = await reader.readexactly(length)
        handle.seen.append((head, body))
        if reply is None:
            await asyncio.sleep(10)  # never answers
        writer.write(reply)
        await writer.drain()
        writer.close()

    handle.seen = []
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    server.seen = handle.seen
    return server


def test_a_json_request_and_answer_round_trip():
    async def main() -> None:
        port = free_port()
        server = await serve(port, b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                                   b"content-length: 9\r\n\r\n{\"id\":7}\n")
        client = AiohttpClient()
        response = await client.request("POST", f"http://127.0.0.1:{port}/x", body=b'{"a":1}', params={},
                                        headers={"Idempotency-Key": "e/s", "Content-Type": "application/json"},
                                        timeout_s=5, connect_timeout_s=1)
        await client.aclose()
        server.close()
        assert response.status == 201 and response.content == b'{"id":7}\n'
        assert response.content_type == "application/json"
        head, body = server.seen[0]
        assert b"idempotency-key: e/s" in head.lower() and body == b'{"a":1}'

    asyncio.run(main())


def test_connection_refused_is_a_connect_error():
    async def main() -> None:
        client = AiohttpClient()
        with pytest.raises(HttpConnectionError):
            await client.request("GET", f"http://127.0.0.1:{free_port()}/", headers={}, params={}, body=None,
                                 timeout_s=5, connect_timeout_s=1)
        await client.aclose()

    asyncio.run(main())


def test_a_silent_server_is_a_read_timeout():
    async def main() -> None:
        port = free_port()
        server = await serve(port, None)
        client = AiohttpClient()
        with pytest.raises(HttpTimeout):
            await client.request("GET", f"http://127.0.0.1:{port}/", headers={}, params={}, body=None,
                                 timeout_s=0.2, connect_timeout_s=0.2)
        await client.aclose()
        server.close()

    asyncio.run(main())
