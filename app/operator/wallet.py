"""The hot wallet's balance (read from the chain, cached) against the daily spend cap."""

from __future__ import annotations

from typing import Any

from app.context import Gateway
from app.core.ttl import TtlValue
from app.jobs import spend


def _cache(gw: Gateway) -> TtlValue[int]:
    cache: TtlValue[int] = gw.caches.setdefault(
        "hot_wallet_balance", TtlValue(gw.settings.operator_cache_ttl_s)
    )
    return cache


async def hot_wallet_balance(gw: Gateway) -> int | None:
    """The hot wallet's token balance; None without an RPC; raises when the chain fails."""
    chain = gw.chain
    if chain is None:
        return None
    return await _cache(gw).get(lambda: chain.balance_of(gw.settings.hot_wallet_address))


def cached_balance(gw: Gateway) -> int | None:
    """The last balance read, if still fresh (never calls the chain: for metrics scrapes)."""
    return _cache(gw).peek()


async def spent_today(gw: Gateway) -> int:
    """Upstream money committed in the daily cap's window (the last 24 hours)."""
    async with gw.autocommit.connect() as conn:
        return await spend.spent_in_window(conn)


async def wallet_status(gw: Gateway) -> dict[str, Any]:
    """Balance, floor, spend against the daily cap; why the balance is missing, if it is."""
    s = gw.settings
    status: dict[str, Any] = {
        "address": s.hot_wallet_address,
        "asset": s.asset,
        "network": s.network,
        "balance": None,
        "balanceError": None,
        "floor": str(s.hot_wallet_floor_atomic),
        "dailyCap": str(s.daily_upstream_cap_atomic),
        "spentToday": str(await spent_today(gw)),
    }
    if gw.chain is None:
        status["balanceError"] = "no RPC configured (X402R_RPC_URL): the balance is unknown"
        return status
    try:
        status["balance"] = str(await hot_wallet_balance(gw))
    except Exception as exc:  # the page says so; the rest of the status still shows
        status["balanceError"] = f"the chain could not be read ({type(exc).__name__})"
    return status
