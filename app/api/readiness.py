"""The checks behind /readyz besides the database and the facilitator: the upstream's 402,
the RPC, and the hot wallet's balance against its floor. Each is cached (probes come every
few seconds from every replica's orchestrator), each answers "ok" or "error: why"."""

from __future__ import annotations

import asyncio

from app.context import Gateway
from app.core.ttl import TtlValue
from app.operator.wallet import hot_wallet_balance
from app.payments.pricing import format_usdc
from app.upstream.schemas import EXAMPLE_EDIT

TIMEOUT_S = 5


def _cache(gw: Gateway, name: str) -> TtlValue[int]:
    cache: TtlValue[int] = gw.caches.setdefault(name, TtlValue(gw.settings.operator_cache_ttl_s))
    return cache


async def upstream_check(gw: Gateway) -> str:
    """The upstream answers an unpaid request with a 402 we would pay (within the ceiling)."""

    async def quote() -> int:
        return (await gw.upstream.quote(EXAMPLE_EDIT)).amount

    try:
        amount = await asyncio.wait_for(_cache(gw, "readyz_upstream").get(quote), TIMEOUT_S)
    except Exception as exc:
        return f"error: no usable 402 ({type(exc).__name__})"
    if amount > gw.settings.max_upstream_price_atomic:
        return f"error: upstream price {format_usdc(amount)} above the ceiling"
    return "ok"


async def rpc_check(gw: Gateway) -> str | None:
    """The chain answers (None without an RPC: allowed only in a sandbox)."""
    if gw.chain is None:
        return None
    try:
        await asyncio.wait_for(hot_wallet_balance(gw), TIMEOUT_S)
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def hot_wallet_check(gw: Gateway) -> str | None:
    """The hot wallet holds at least X402R_HOT_WALLET_FLOOR_ATOMIC (None without a floor or
    an RPC)."""
    floor = gw.settings.hot_wallet_floor_atomic
    if gw.chain is None or floor == 0:
        return None
    try:
        balance = await asyncio.wait_for(hot_wallet_balance(gw), TIMEOUT_S)
    except Exception:
        return "error: balance unreadable"
    if balance is None or balance < floor:
        return f"error: balance {format_usdc(balance or 0)} below floor {format_usdc(floor)}"
    return "ok"


async def more_checks(gw: Gateway) -> dict[str, str]:
    """The three checks, by name; a check that does not apply is left out."""
    upstream, rpc, wallet = await asyncio.gather(
        upstream_check(gw), rpc_check(gw), hot_wallet_check(gw)
    )
    found = {"upstream": upstream, "rpc": rpc, "hot_wallet": wallet}
    return {name: result for name, result in found.items() if result is not None}
