"""Outgoing HTTP (`app.core.http`): httpx's API on aiohttp, with failures named for what they are.

Real sockets on 127.0.0.1: a server that answers, one that hangs up, one that never answers,
and a port nobody listens on. The upstream client's error codes depend on telling a timeout
(the other side may still be working) from a connection that failed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from eth_account import Account

from app.core.http import http_client
from app.upstream.client import UpstreamClient
from app.upstream.errors import UpstreamUnavailable
from sandbox.chain import free_port
from sandbox.world import HOT_WALLET, key_hex

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            body = await _read_request(reader)
        except asyncio.IncompleteReadError:
            break
        answer = json.dumps({"echo": json.loads(body)}).encode()
        writer.write(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-trace: t1\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
    writer.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.close()  # the request arrived; no answer, ever


async def _hang_up_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial')
    await writer.drain()
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(30)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/x"

    yield start
    for server in servers:
        server.close()


async def test_a_request_and_its_answer_come_through_unchanged(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    url = await serve(_echo)
    async with http_client() as http:
        for i in range(3):  # the same pooled connection, reused
            response = await http.post(url, json={"n": i}, headers={"x-pay": "abc"})
            assert response.status_code == 201
            assert response.headers["x-trace"] == "t1"
            assert response.json() == {"echo": {"n": i}}


async def test_a_dropped_connection_is_not_called_a_timeout(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    for handler in (_hang_up, _hang_up_mid_body):
        url = await serve(handler)
        async with http_client() as http:
            with pytest.raises(httpx.HTTPError) as failed:
                await http.post(url, json={})
        assert not isinstance(failed.value, httpx.TimeoutException), repr(failed.value)
        assert isinstance(failed.value, httpx.RemoteProtocolError | httpx.ReadError)


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with http_client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(f"http://127.0.0.1:{free_port()}/x", json={})


async def test_a_silent_server_is_a_timeout(serve: Callable[[Handler], Awaitable[str]]) -> None:
    url = await serve(_silent)
    async with http_client(timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, json={})


@pytest.mark.parametrize(
    ("handler", "code"),
    [
        (_silent, "upstream_timeout"),
        (_hang_up, "upstream_unreachable"),
        (None, "upstream_unreachable"),
    ],
)
async def test_the_upstream_client_names_each_failure(
    serve: Callable[[Handler], Awaitable[str]], handler: Handler | None, code: str
) -> None:
    url = await serve(handler) if handler else f"http://127.0.0.1:{free_port()}/x"
    wallet = Account.from_key(key_hex(HOT_WALLET))
    async with http_client() as http:
        upstream = UpstreamClient(url, wallet, http, timeout_s=0.3, quote_ttl_s=60)
        with pytest.raises(UpstreamUnavailable) as failed:
            await upstream.submit({"prompt": "x"}, "PAYMENT-SIGNATURE", "e30=")
    assert failed.value.code == code
