"""Fixed-window rate limits that hold across replicas: in Redis (`limits`) or in the database.

A check names one or more buckets (e.g. a payer and a client address), each with its rate;
every bucket is counted, and the request is refused with 429 if any is over its rate.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

import limits
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy import BigInteger, Column, Integer, String, Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import Base
from app.core.errors import AppError

log = logging.getLogger(__name__)
_OFF = frozenset({"0", "off", "none", "unlimited"})


@dataclass(frozen=True)
class Rate:
    """At most `amount` hits per fixed window of `seconds`."""

    amount: int
    seconds: int
    text: str

    @classmethod
    def parse(cls, value: str | int) -> Rate | None:
        """`"30/minute"`, `"5 per 10 seconds"`, or an int meaning per minute; 0/off: no limit."""
        spec = str(value).strip().lower()
        if spec in _OFF:
            return None
        if spec.isdigit():
            spec += "/minute"
        try:
            item = limits.parse(spec)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate such as '30/minute' or an int") from exc
        if item.amount < 1:
            raise ValueError(f"{value!r}: the amount must be at least 1 (or 'off')")
        return cls(amount=item.amount, seconds=int(item.get_expiry()), text=str(value))


class RateLimited(AppError):
    """Too many requests from one payer or client; retry after the window ends."""

    status_code = 429
    code = "rate_limited"


@dataclass(frozen=True)
class Bucket:
    """What is counted (e.g. `verify:payer:0xab…`) and at which rate."""

    key: str
    rate: Rate


class Limiter(Protocol):
    """Counts a hit in each bucket; returns seconds to wait if any bucket is over its rate."""

    async def hit(self, buckets: list[Bucket]) -> int | None:
        """None when every bucket is within its rate."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _window(rate: Rate, now: float) -> int:
    return int(now // rate.seconds) * rate.seconds


def _retry_after(rate: Rate, now: float) -> int:
    return max(1, math.ceil(_window(rate, now) + rate.seconds - now))


# Hits per bucket and window, written with the raw UPSERT below (same text on both databases).
RATE_LIMIT_WINDOWS = Table(
    "rate_limit_windows",
    Base.metadata,
    Column("bucket", String(200), primary_key=True),
    Column("window_start", BigInteger, primary_key=True, index=True),
    Column("hits", Integer, nullable=False),
)

# One statement counts every bucket of a check: multi-row UPSERT … RETURNING (Postgres and
# SQLite ≥ 3.35 share the syntax). Rows of different buckets never conflict with each other.
_UPSERT = (
    "INSERT INTO rate_limit_windows (bucket, window_start, hits) VALUES {rows} "
    "ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limit_windows.hits + 1 "
    "RETURNING bucket, hits"
)
_SWEEP = text("DELETE FROM rate_limit_windows WHERE window_start < :before")
_STATEMENTS = {
    n: text(_UPSERT.format(rows=", ".join(f"(:b{i}, :w{i}, 1)" for i in range(n))))
    for n in range(1, 5)
}
SWEEP_EVERY_S = 60.0
KEEP_WINDOWS_S = 86_400  # longer than any sensible window; older rows are only clutter


class SqlLimiter:
    """Counters in the `rate_limit_windows` table: shared by every replica on one database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine  # autocommit: each UPSERT is atomic by itself
        self._next_sweep = 0.0

    async def hit(self, buckets: list[Bucket]) -> int | None:
        """Count the hits (one round trip); the longest wait among the buckets that are over."""
        if not buckets:
            return None
        now = time.time()
        params: dict[str, object] = {}
        for i, bucket in enumerate(buckets):
            params[f"b{i}"], params[f"w{i}"] = bucket.key, _window(bucket.rate, now)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_STATEMENTS[len(buckets)], params)).all()
            if now >= self._next_sweep:
                self._next_sweep = now + SWEEP_EVERY_S
                await conn.execute(_SWEEP, {"before": int(now) - KEEP_WINDOWS_S})
        hits = {row.bucket: int(row.hits) for row in rows}
        waits = [_retry_after(b.rate, now) for b in buckets if hits[b.key] > b.rate.amount]
        return max(waits) if waits else None

    async def close(self) -> None:
        """The engine belongs to the gateway."""


class RedisLimiter:
    """The `limits` library's fixed-window strategy on Redis (X402R_REDIS_URL)."""

    def __init__(self, url: str) -> None:
        self.storage = RedisStorage("async+" + url, key_prefix="x402r")
        self.strategy = FixedWindowRateLimiter(self.storage)
        self._items: dict[Rate, limits.RateLimitItem] = {}

    def _item(self, rate: Rate) -> limits.RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = limits.RateLimitItemPerSecond(rate.amount, rate.seconds)
        return item

    async def hit(self, buckets: list[Bucket]) -> int | None:
        """Count a hit in every bucket (each is counted even when another is over)."""
        waits = []
        for bucket in buckets:
            item = self._item(bucket.rate)
            if not await self.strategy.hit(item, bucket.key):
                stats = await self.strategy.get_window_stats(item, bucket.key)
                waits.append(max(1, math.ceil(stats.reset_time - time.time())))
        return max(waits) if waits else None

    async def close(self) -> None:
        """Nothing to release: the storage's pool closes with the process."""


async def check_verify_rate(
    limiter: Limiter | None,
    *,
    per_payer: Rate | None,
    per_client: Rate | None,
    payer: str,
    client: str | None,
) -> None:
    """Before a facilitator verify: count this payer and this client; 429 when over a rate.

    Call only for a payment whose signature recovered to `payer` (nobody else can spend a
    payer's allowance) and that is new (replays of known payments cost no verify).
    """
    if limiter is None:
        return
    buckets = []
    if per_payer is not None:
        buckets.append(Bucket(f"verify:payer:{payer.lower()}", per_payer))
    if per_client is not None and client:
        buckets.append(Bucket(f"verify:client:{client}", per_client))
    try:
        wait = await limiter.hit(buckets)
    except Exception as exc:
        # Fail open: the limits save facilitator round trips, they do not guard money (the
        # verify still does). The type only: a Redis URL in the message may hold a password.
        log.warning("rate-limit storage failed, request not limited: %s", type(exc).__name__)
        return
    if wait is not None:
        raise RateLimited(
            "too many payments to verify from this payer or client; retry later",
            details={"retryAfter": wait},
            headers={"Retry-After": str(wait)},
        )
