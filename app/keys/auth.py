"""Who pays with a key: the bearer looked up by its hash, refused unless usable, rate-limited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.logs import get_logger
from app.core.ratelimit import Bucket, Limiter, Rate, RateLimited
from app.keys.budget import KEYS, utc_moment
from app.keys.errors import InvalidApiKey
from app.keys.tokens import bearer_secret, secret_hash

log = get_logger(__name__)
_BY_HASH = select(
    KEYS.c.id,
    KEYS.c.charge_at,
    KEYS.c.rate_per_minute,
    KEYS.c.own_jobs_only,
    KEYS.c.expires_at,
    KEYS.c.revoked_at,
).where(KEYS.c.secret_hash == bindparam("secret_hash"))


@dataclass(frozen=True)
class KeyCaller:
    """A usable key, as a paid request needs it (never its secret)."""

    id: str
    charge_at: str
    rate_per_minute: int | None
    own_jobs_only: bool


async def authenticate(engine: AsyncEngine, authorization: str | None, now: datetime) -> KeyCaller:
    """The key behind `Authorization: Bearer …`; InvalidApiKey when missing, unknown,
    revoked or expired (one answer for all: the caller learns nothing about other keys)."""
    secret = bearer_secret(authorization)
    if secret is None:
        raise InvalidApiKey("send Authorization: Bearer <API key>, or pay with x402")
    async with engine.connect() as conn:
        row = (await conn.execute(_BY_HASH, {"secret_hash": secret_hash(secret)})).one_or_none()
    if row is None:
        raise InvalidApiKey()
    if row.revoked_at is not None or (
        row.expires_at is not None and utc_moment(row.expires_at) <= now
    ):
        raise InvalidApiKey("this API key is revoked or expired")
    return KeyCaller(row.id, row.charge_at, row.rate_per_minute, bool(row.own_jobs_only))


async def check_key_rate(limiter: Limiter | None, key: KeyCaller) -> None:
    """Count one request against the key's rate (shared storage: every replica counts)."""
    if limiter is None or key.rate_per_minute is None:
        return
    rate = Rate(amount=key.rate_per_minute, seconds=60, text=f"{key.rate_per_minute}/minute")
    try:
        wait = await limiter.hit([Bucket(f"key:{key.id}", rate)])
    except Exception as exc:
        # Fail open, as the verify limits do: the budget, not the rate, guards the money.
        log.warning("rate-limit storage failed, key not limited", error=type(exc).__name__)
        return
    if wait is not None:
        raise RateLimited(
            "too many requests with this API key; retry later",
            details={"retryAfter": wait},
            headers={"Retry-After": str(wait)},
        )
