"""Rate parsing, the client address behind proxies, and exact counts in every storage.

The counters are hit concurrently from two engines (as two replicas would) on Postgres, from
one on SQLite, and through the `limits` library on a private Redis server: exactly `amount`
hits pass per window, whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.requests import Request

from app.api.client_ip import client_address
from app.core.db import autocommit_engine
from app.core.migrate import upgrade_to_head
from app.core.ratelimit import (
    Bucket,
    Limiter,
    Rate,
    RateLimited,
    RedisLimiter,
    SqlLimiter,
    check_verify_rate,
)
from app.core.settings import Settings
from sandbox.chain import free_port

DAY = Rate(amount=10, seconds=86_400, text="10/day")  # no window boundary during a test
OPERATOR = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
HOT_KEY = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"


@pytest.mark.parametrize(
    ("spec", "amount", "seconds"),
    [("30/minute", 30, 60), ("5 per 10 seconds", 5, 10), (12, 12, 60), ("7", 7, 60)],
)
def test_rates_parse(spec: str | int, amount: int, seconds: int) -> None:
    rate = Rate.parse(spec)
    assert rate is not None
    assert (rate.amount, rate.seconds) == (amount, seconds)


@pytest.mark.parametrize("spec", ["off", "0", 0, "OFF"])
def test_off_means_no_limit(spec: str | int) -> None:
    assert Rate.parse(spec) is None


@pytest.mark.parametrize("spec", ["lots", "3/fortnight", "-1/minute", "1.5/minute"])
def test_bad_rates_are_refused_at_start_up(spec: str) -> None:
    with pytest.raises(ValidationError, match="verify_rate_per_payer"):
        Settings(
            database_url="sqlite:///:memory:",
            allow_no_rpc=True,
            pay_to=OPERATOR,
            hot_wallet_private_key=HOT_KEY,  # type: ignore[arg-type]
            facilitator_url="http://127.0.0.1:9/",  # type: ignore[arg-type]
            verify_rate_per_payer=spec,
            _env_file=None,  # type: ignore[call-arg]
        )


def _request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "headers": headers, "client": (peer, 5000)})


def test_without_trusted_proxies_forwarded_for_is_ignored() -> None:
    assert client_address(_request("203.0.113.9", "10.0.0.1"), 0) == "203.0.113.9"


def test_one_trusted_proxy_names_the_address_it_saw() -> None:
    # The client wrote "1.2.3.4" itself; our proxy appended the address it really saw.
    request = _request("10.0.0.2", "1.2.3.4, 198.51.100.7")
    assert client_address(request, 1) == "198.51.100.7"


def test_two_trusted_proxies_and_repeated_headers() -> None:
    request = _request("10.0.0.3", "1.2.3.4", "198.51.100.8, 10.0.0.2")
    assert client_address(request, 2) == "198.51.100.8"


def test_a_request_that_skipped_the_header_falls_back_to_the_peer() -> None:
    assert client_address(_request("10.0.0.2"), 1) == "10.0.0.2"


async def _exact_counts(limiters: list[Limiter], key: str) -> None:
    """40 concurrent hits over the given limiters: exactly `DAY.amount` pass."""
    bucket = [Bucket(key, DAY)]
    waits = await asyncio.gather(*(limiters[i % len(limiters)].hit(bucket) for i in range(40)))
    assert sum(w is None for w in waits) == DAY.amount
    assert all(w is None or 1 <= w <= DAY.seconds for w in waits)


async def test_postgres_counts_are_exact_across_replicas(
    new_database: Callable[[], str],
) -> None:
    url = await asyncio.to_thread(new_database)  # it runs its own event loop
    engines = [create_async_engine(url, pool_size=10) for _ in range(2)]
    try:
        limiters: list[Limiter] = [SqlLimiter(autocommit_engine(e)) for e in engines]
        await _exact_counts(limiters, "test:pg")
        # Each bucket of a check is counted: the second bucket is still within its rate.
        other = Rate(amount=100, seconds=86_400, text="100/day")
        wait = await limiters[0].hit([Bucket("test:pg", DAY), Bucket("test:pg:other", other)])
        assert wait is not None
        assert await limiters[1].hit([Bucket("test:pg:other", other)]) is None
    finally:
        for engine in engines:
            await engine.dispose()


async def test_sqlite_counts_are_exact(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_async_engine(url)
    try:
        await _exact_counts([SqlLimiter(autocommit_engine(engine))], "test:sqlite")
    finally:
        await engine.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private Redis server on a free port, stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_redis_counts_are_exact_across_replicas(redis_url: str) -> None:
    limiters: list[Limiter] = [RedisLimiter(redis_url), RedisLimiter(redis_url)]
    try:
        await _exact_counts(limiters, "test:redis")
    finally:
        for limiter in limiters:
            await limiter.close()


async def test_the_429_names_its_wait(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_async_engine(url)
    limiter = SqlLimiter(autocommit_engine(engine))
    one = Rate(amount=1, seconds=86_400, text="1/day")
    try:
        await check_verify_rate(limiter, per_payer=one, per_client=None, payer="0xA", client=None)
        with pytest.raises(RateLimited) as info:
            await check_verify_rate(
                limiter, per_payer=one, per_client=None, payer="0xa", client=None
            )
    finally:
        await engine.dispose()
    assert info.value.status_code == 429
    assert info.value.body()["error"] == "rate_limited"
    wait = int(info.value.headers["Retry-After"])
    assert 1 <= wait <= 86_400
    assert info.value.details == {"retryAfter": wait}


async def test_a_storage_outage_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    """Limits save facilitator calls; they never block paying clients when Redis is down."""
    limiter = RedisLimiter(f"redis://:hunter2@127.0.0.1:{free_port()}/0")  # nothing listens
    one = Rate(amount=1, seconds=60, text="1/minute")
    for _ in range(3):
        await check_verify_rate(limiter, per_payer=one, per_client=one, payer="0xa", client="c")
    assert "rate-limit storage failed" in caplog.text
    assert "hunter2" not in caplog.text
