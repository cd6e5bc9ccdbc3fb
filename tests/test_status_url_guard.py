"""Guarded status reads (`app.upstream.status_fetch`): origins, addresses, redirects, size.

Real sockets on 127.0.0.1 stand in for the upstream and for an internal service; every
server counts the requests it got, so "never fetched" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.core.origins import origin_of
from app.core.settings import Settings
from app.upstream.errors import UpstreamMalformed, UpstreamRejected, UpstreamUnavailable
from app.upstream.status_fetch import (
    StatusPolicy,
    StatusReader,
    address_allowed,
    check_origin,
    resolve_checked,
)
from sandbox.world import HOT_WALLET, OPERATOR, address, key_hex

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]
DOC = json.dumps({"status": "processing", "jobId": "j1"}).encode()


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1 that answers every request with `answer`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.hits = 0
        self.hosts: list[bytes] = []
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.hits += 1
        self.hosts += [x for x in head.split(b"\r\n") if x.lower().startswith(b"host:")]
        try:
            await self.answer(writer)
        except (ConnectionError, OSError):
            pass
        writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Server:
        server = Server(answer)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        server.url = f"http://127.0.0.1:{port}/api/ai/generations/jobs/j1"
        return server

    yield start
    for listening in servers:
        listening.close()


def reply(status: str, body: bytes = b"", headers: str = "") -> Answer:
    async def answer(writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{headers}\r\n"
        writer.write(head.encode() + body)
        await writer.drain()

    return answer


async def endless(writer: asyncio.StreamWriter) -> None:
    """200 with no length, then data forever (until the reader hangs up)."""
    writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"status": "p')
    chunk = b"x" * 65536
    for _ in range(4000):  # 256 MiB at most
        writer.write(chunk)
        await writer.drain()


def reader_for(*urls: str, allow_private: bool = True, max_bytes: int = 1 << 20) -> StatusReader:
    origins = frozenset(origin_of(u) for u in urls)
    return StatusReader(StatusPolicy(origins, allow_private, max_bytes, timeout_s=5))


# --------------------------------------------------------------------- origins and addresses


def test_only_the_configured_origins_are_read() -> None:
    policy = StatusPolicy(frozenset([origin_of("https://x402-dev.dopamint.ai/api/x")]))
    assert check_origin("https://X402-DEV.dopamint.ai:443/api/ai/generations/jobs/1", policy)
    for url in (
        "http://x402-dev.dopamint.ai/api/ai/generations/jobs/1",  # another scheme
        "https://x402-dev.dopamint.ai:8443/jobs/1",  # another port
        "https://evil.example/jobs/1",
        "https://x402-dev.dopamint.ai.evil.example/jobs/1",
        "https://user:pw@x402-dev.dopamint.ai/jobs/1",
        "file:///etc/passwd",
        "gopher://x402-dev.dopamint.ai/",
    ):
        with pytest.raises(UpstreamRejected) as failed:
            check_origin(url, policy)
        assert failed.value.code == "upstream_status_url_refused", url


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a01:203",  # NAT64 of 10.1.2.3
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert not address_allowed(address, StatusPolicy(frozenset()))


def test_public_addresses_pass_and_private_ones_only_when_allowed() -> None:
    strict, lenient = StatusPolicy(frozenset()), StatusPolicy(frozenset(), allow_private=True)
    assert address_allowed("93.184.216.34", strict)
    assert address_allowed("2606:2800:220:1::1", strict)
    assert address_allowed("2002:5db8:d822::1", strict)  # 6to4 of a public address
    assert address_allowed("64:ff9b::5db8:d822", strict)  # NAT64 of a public address
    assert address_allowed("127.0.0.1", lenient)
    assert address_allowed("10.0.0.1", lenient)
    assert not address_allowed("0.0.0.0", lenient)
    assert not address_allowed("224.0.0.1", lenient)


async def test_a_name_is_resolved_and_every_address_checked() -> None:
    strict = StatusPolicy(frozenset())
    with pytest.raises(UpstreamRejected) as failed:
        await resolve_checked("localhost", 80, strict)
    assert failed.value.code == "upstream_status_url_refused"
    lenient = StatusPolicy(frozenset(), allow_private=True)
    assert "127.0.0.1" in await resolve_checked("localhost", 80, lenient)


# ------------------------------------------------------------------------- reads over HTTP


async def test_a_good_answer_is_read_from_the_checked_address(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    upstream = await serve(reply("200 OK", DOC, "content-type: application/json\r\n"))
    reader = reader_for(upstream.url)
    by_name = upstream.url.replace("127.0.0.1", "localhost")
    named = StatusReader(
        StatusPolicy(frozenset([origin_of(by_name)]), allow_private=True, timeout_s=5)
    )
    try:
        assert (await reader.read(upstream.url))["status"] == "processing"
        assert (await named.read(by_name))["jobId"] == "j1"
    finally:
        await reader.aclose()
        await named.aclose()
    # Connected to the address it checked; the Host header still names the URL's host.
    assert upstream.hosts[-1].lower().startswith(b"host: localhost:")


async def test_loopback_is_refused_without_the_setting_and_never_contacted(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    internal = await serve(reply("200 OK", b'{"status": "completed", "secret": "s3cr3t"}'))
    reader = reader_for(internal.url, allow_private=False)
    try:
        with pytest.raises(UpstreamRejected) as failed:
            await reader.read(internal.url)
    finally:
        await reader.aclose()
    assert failed.value.code == "upstream_status_url_refused"
    assert internal.hits == 0


async def test_an_off_origin_url_is_never_contacted(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    upstream = await serve(reply("200 OK", DOC))
    internal = await serve(reply("200 OK", b'{"status": "completed", "secret": "s3cr3t"}'))
    reader = reader_for(upstream.url)
    try:
        assert not reader.origin_allowed(internal.url)
        with pytest.raises(UpstreamRejected):
            await reader.read(internal.url)
    finally:
        await reader.aclose()
    assert internal.hits == 0


async def test_a_redirect_is_not_followed(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    internal = await serve(reply("200 OK", b'{"status": "completed", "secret": "s3cr3t"}'))
    upstream = await serve(reply("302 Found", b"", f"location: {internal.url}\r\n"))
    reader = reader_for(upstream.url, internal.url)  # even to an allowed origin
    try:
        with pytest.raises(UpstreamMalformed, match="redirect"):
            await reader.read(upstream.url)
    finally:
        await reader.aclose()
    assert internal.hits == 0


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        (
            reply("404 Not Found", b'{"error": "Job not found"}'),
            UpstreamRejected,
            "upstream_job_lost",
        ),
        (reply("410 Gone", b"{}"), UpstreamRejected, "upstream_job_lost"),
        (reply("500 Oops", b"{}"), UpstreamUnavailable, "upstream_http_error"),
        (reply("429 Slow down", b"{}"), UpstreamUnavailable, "upstream_http_error"),
        (reply("403 Forbidden", b"{}"), UpstreamMalformed, "upstream_status_unreadable"),
        (reply("200 OK", b'{"sta'), UpstreamMalformed, "upstream_status_unreadable"),
        (reply("200 OK", b'{"status": "weird"}'), UpstreamMalformed, "upstream_status_unreadable"),
        (
            reply("200 OK", DOC, "content-encoding: gzip\r\n"),
            UpstreamMalformed,
            "upstream_status_unreadable",
        ),
    ],
    ids=["404", "410", "500", "429", "403", "malformed", "unknown-status", "compressed"],
)
async def test_each_answer_is_classified(
    serve: Callable[[Answer], Awaitable[Server]],
    answer: Answer,
    error: type[Exception],
    code: str,
) -> None:
    upstream = await serve(answer)
    reader = reader_for(upstream.url)
    try:
        with pytest.raises(error) as failed:
            await reader.read(upstream.url)
    finally:
        await reader.aclose()
    assert type(failed.value) is error
    assert getattr(failed.value, "code", None) == code


async def test_an_endless_answer_is_cut_at_the_cap(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    upstream = await serve(endless)
    reader = reader_for(upstream.url, max_bytes=256 * 1024)
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(UpstreamMalformed, match="too large"):
            await reader.read(upstream.url)
    finally:
        await reader.aclose()
    assert asyncio.get_running_loop().time() - started < 3


async def test_a_declared_length_over_the_cap_is_not_read(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    upstream = await serve(reply("200 OK", b"x" * 5000))
    reader = reader_for(upstream.url, max_bytes=1024)
    try:
        with pytest.raises(UpstreamMalformed, match="too large"):
            await reader.read(upstream.url)
    finally:
        await reader.aclose()


# -------------------------------------------------------------------------------- settings


def _settings(**env: str) -> Settings:
    return Settings(
        database_url="sqlite:///:memory:",
        allow_no_rpc=True,
        pay_to=address(OPERATOR),
        hot_wallet_private_key=key_hex(HOT_WALLET),
        facilitator_url="http://127.0.0.1:1",
        **env,  # type: ignore[arg-type]
    )


def test_settings_list_the_upstream_origin_and_the_configured_ones() -> None:
    settings = _settings(upstream_status_origins="https://cdn.dopamint.ai, http://10.0.0.5:8080")
    assert settings.status_origins == {
        ("https", "x402-dev.dopamint.ai", 443),
        ("https", "cdn.dopamint.ai", 443),
        ("http", "10.0.0.5", 8080),
    }
    assert settings.upstream_allow_private_addresses is False
    assert settings.upstream_status_max_bytes == 1 << 20
    assert settings.max_job_age_s == 3600


@pytest.mark.parametrize(
    "origins", ["https://cdn.dopamint.ai/path", "ftp://cdn.dopamint.ai", "cdn.dopamint.ai"]
)
def test_settings_refuse_what_is_not_an_origin(origins: str) -> None:
    with pytest.raises(ValueError, match="upstream_status_origins"):
        _settings(upstream_status_origins=origins)
