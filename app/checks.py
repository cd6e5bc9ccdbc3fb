"""`x402-reseller check`: validate the configuration and reach every dependency.

Prints one line per check and what this gateway will sell at; exits 1 if anything failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from importlib.resources import as_file, files

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from web3 import AsyncHTTPProvider, AsyncWeb3

from app.context import Gateway
from app.core.networks import caip2, chain_id
from app.core.settings import Settings
from app.payments.pricing import sale_price
from app.startup import database_kind, public_origin
from app.upstream.schemas import EXAMPLE_EDIT

_BALANCE_OF = [
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    }
]
TIMEOUT_S = 15


def usdc(atomic: int) -> str:
    """Atomic units as a decimal USDC amount (display only)."""
    return f"{Decimal(atomic) / 10**6:f} USDC"


def _migration_heads() -> set[str]:
    with as_file(files("app") / "migrations") as location:
        cfg = Config()
        cfg.set_main_option("script_location", str(location))
        return set(ScriptDirectory.from_config(cfg).get_heads())


async def _database(gw: Gateway) -> str:
    async with gw.engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            raise RuntimeError("never migrated: run `x402-reseller migrate`")
        rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        current = {str(r[0]) for r in rows}
    if current != _migration_heads():
        raise RuntimeError("migrations are not at head: run `x402-reseller migrate`")
    return database_kind(gw.settings.database_url) + ", migrations at head"


async def _facilitator(gw: Gateway) -> str:
    s = gw.settings
    kinds = await gw.supported_kinds()
    wanted = {(1, "exact", s.network), (2, "exact", caip2(s.network))}
    for option in s.pay_options[1:]:  # every further way to pay must settle too
        wanted.add((2, "exact", option.network_caip2))
        if not option.network.startswith("eip155:"):
            wanted.add((1, "exact", option.network))
    missing = wanted - kinds
    if missing:
        raise RuntimeError(f"does not support {sorted(missing)}")
    where = public_origin(s.facilitator_url) if s.facilitator_url else "embedded"
    return f"{where} supports exact on {s.network} (v1) and {caip2(s.network)} (v2)" + (
        f" and {len(s.pay_options) - 1} further option(s)" if len(s.pay_options) > 1 else ""
    )


async def _rpc(gw: Gateway) -> str:
    s = gw.settings
    if s.rpc_url is None:
        raise RuntimeError("X402R_RPC_URL is not set: unknown settlements cannot be reconciled")
    w3 = AsyncWeb3(AsyncHTTPProvider(str(s.rpc_url), request_kwargs={"timeout": TIMEOUT_S}))
    try:
        actual = await w3.eth.chain_id
        if actual != chain_id(s.network):
            raise RuntimeError(f"chain id {actual}, expected {chain_id(s.network)}")
        token = w3.eth.contract(address=AsyncWeb3.to_checksum_address(s.asset), abi=_BALANCE_OF)
        balance = int(await token.functions.balanceOf(s.hot_wallet_address).call())
    finally:
        await w3.provider.disconnect()
    return f"{public_origin(s.rpc_url)} chain {actual}; hot wallet holds {usdc(balance)}"


async def _upstream(gw: Gateway) -> str:
    s = gw.settings
    quote = await gw.upstream.quote(EXAMPLE_EDIT)
    if quote.amount > s.max_upstream_price_atomic:
        raise RuntimeError(
            f"quotes {usdc(quote.amount)}, above X402R_MAX_UPSTREAM_PRICE_ATOMIC "
            f"({usdc(s.max_upstream_price_atomic)})"
        )
    price = sale_price(
        max(quote.amount, s.upstream_price_atomic), s.markup_bps, s.markup_fixed_atomic
    )
    return (
        f"{public_origin(s.upstream_url)} quotes {usdc(quote.amount)} on {quote.network}; "
        f"we sell at {usdc(price)} (margin {usdc(price - quote.amount)})"
    )


CHECKS: dict[str, Callable[[Gateway], Awaitable[str]]] = {
    "database": _database,
    "facilitator": _facilitator,
    "rpc": _rpc,
    "upstream": _upstream,
}


async def run_checks(settings: Settings) -> int:
    """Run every check; 0 when all passed, 1 otherwise."""
    from app.main import build_gateway

    print(
        f"ok    configuration  pay-to {settings.pay_to}, hot wallet {settings.hot_wallet_address}"
    )
    gw = build_gateway(settings)
    failed = 0
    try:
        for name, check in CHECKS.items():
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    detail = await check(gw)
                print(f"ok    {name:<13}  {detail}")
            except Exception as exc:
                failed += 1
                reason = str(exc).splitlines()[0][:300] if str(exc) else ""
                print(f"FAIL  {name:<13}  {type(exc).__name__}: {reason}")
    finally:
        await gw.close()
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0
