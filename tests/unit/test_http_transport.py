"""The aiohttp-backed httpx transport: answers and the httpx errors the executor classifies."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from orchestrator.runtime.http_transport import AiohttpTransport


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
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            response = await client.post(f"http://127.0.0.1:{port}/x", json={"a": 1},
                                         headers={"Idempotency-Key": "e/s"})
        server.close()
        assert response.status_code == 201 and response.json() == {"id": 7}
        head, body = server.seen[0]
        assert b"idempotency-key: e/s" in head.lower() and body == b'{"a":1}'

    asyncio.run(main())


def test_connection_refused_is_a_connect_error():
    async def main() -> None:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{free_port()}/")

    asyncio.run(main())


def test_a_silent_server_is_a_read_timeout():
    async def main() -> None:
        port = free_port()
        server = await serve(port, None)
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"http://127.0.0.1:{port}/", timeout=httpx.Timeout(0.2))
        server.close()

    asyncio.run(main())
