"""`x402-reseller serve`: check the database, say what this process is, then run uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy import text

from app import __version__
from app.core.db import create_engine
from app.core.logs import get_logger
from app.core.settings import Settings
from app.payments.pricing import sale_price

log = get_logger("app.startup")


def public_origin(url: object) -> str:
    """scheme://host[:port] of a URL: never its credentials, path or query (keys hide there)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def database_kind(url: str) -> str:
    """`postgresql at host:port/db` or `sqlite at path`, without credentials."""
    parts = urlsplit(url)
    kind = parts.scheme.split("+", 1)[0]
    if kind == "sqlite":
        return f"sqlite at {url.split(':///', 1)[-1]}"
    return f"{kind} at {parts.hostname}:{parts.port or 5432}{parts.path}"


def describe(settings: Settings) -> dict[str, object]:
    """What an operator wants to see at start-up; nothing secret."""
    price = sale_price(
        settings.upstream_price_atomic, settings.markup_bps, settings.markup_fixed_atomic
    )
    upstream = str(settings.upstream_url)
    facilitator = (
        public_origin(settings.facilitator_url)
        if settings.facilitator_url is not None
        else "embedded"
    )
    return {
        "version": __version__,
        "price_atomic": price,
        "upstream_price_atomic": settings.upstream_price_atomic,
        "pay_to": settings.pay_to,
        "network": settings.network,
        "asset": settings.asset,
        "upstream": public_origin(upstream) + urlsplit(upstream).path,
        "facilitator": facilitator,
        "rpc": public_origin(settings.rpc_url) if settings.rpc_url else None,
        "database": database_kind(settings.database_url),
        "hot_wallet": settings.hot_wallet_address,
        "settlement_order": settings.settlement_order.value,
        "refund_policy": settings.refund_policy.value,
    }


async def ping_database(url: str) -> None:
    """One `SELECT 1`, bounded in time."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with asyncio.timeout(10), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def serve(settings: Settings, *, host: str, port: int, migrate: Callable[[Settings], None]) -> None:
    """Migrate (when enabled) and reach the database first: a failure is one clear line."""
    from app.cli import fail

    if settings.auto_migrate:
        migrate(settings)
    try:
        asyncio.run(ping_database(settings.database_url))
    except Exception as exc:
        raise fail("database connection", "X402R_DATABASE_URL", exc) from None

    import uvicorn

    from app.main import create_app

    log.info("starting", host=host, port=port, **describe(settings))
    uvicorn.run(
        create_app(settings.model_copy(update={"auto_migrate": False})),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        # The client address is ours to derive (X402R_TRUSTED_PROXY_HOPS); uvicorn would
        # otherwise trust X-Forwarded-For from any peer on 127.0.0.1.
        proxy_headers=False,
        log_config=None,  # keep our handlers (structlog rendering, capped loggers)
        log_level=settings.log_level.lower(),
    )
