"""The long-lived objects one gateway process shares between requests and workers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.ratelimit import Limiter
from app.core.settings import Settings
from app.payments.chain import ChainReader
from app.payments.facilitator import Facilitator
from app.payments.offer import OfferCache
from app.upstream.client import UpstreamClient

FAILURE_TTL_S = 2.0


@dataclass
class Gateway:
    """Settings plus the shared clients, pools and caches of one process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # The same pool without BEGIN/COMMIT round trips: for single statements, each atomic
    # by itself (see `app.core.db.autocommit_engine`).
    autocommit: AsyncEngine
    facilitator: Facilitator
    upstream: UpstreamClient
    http: httpx.AsyncClient
    hot_wallet: LocalAccount  # the operator's hot wallet (pays the upstream, signs refunds)
    facilitator_http: httpx.AsyncClient | None = None  # the remote facilitator's client
    chain: ChainReader | None = None
    offers: OfferCache = field(default_factory=OfferCache)
    limiter: Limiter | None = None  # counts new payments before they reach the facilitator
    # The facilitator's /supported answer (or failure) and until when it holds (for /readyz).
    _supported: tuple[float, set[tuple[int, str, str]] | Exception] | None = None
    _supported_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Operator reads cached per process (hot-wallet balance, readiness checks), by name.
    caches: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        """Release every client and pool this gateway opened."""
        await self.http.aclose()
        await self.upstream.statuses.aclose()
        if self.facilitator_http is not None:
            await self.facilitator_http.aclose()
        if self.limiter is not None:
            await self.limiter.close()
        if self.chain is not None:
            await self.chain.close()
        await self.engine.dispose()

    async def supported_kinds(self) -> set[tuple[int, str, str]]:
        """(x402Version, scheme, network) triples the facilitator supports."""
        fac = self.facilitator
        if hasattr(fac, "supported"):
            response = await fac.supported()
        else:  # the SDK's HTTP client only has a blocking get_supported()
            response = await asyncio.to_thread(fac.get_supported)  # type: ignore[attr-defined]
        return {(k.x402_version, k.scheme, str(k.network)) for k in response.kinds}

    async def supported_kinds_cached(self, max_age_s: float) -> set[tuple[int, str, str]]:
        """`supported_kinds`, fetched at most once per `max_age_s`; concurrent callers wait for
        the one fetch. A failure is remembered for at most FAILURE_TTL_S, then retried."""
        async with self._supported_lock:
            now = asyncio.get_running_loop().time()
            cached = self._supported
            if cached is not None and now < cached[0]:
                if isinstance(cached[1], Exception):
                    raise cached[1]
                return cached[1]
            try:
                kinds = await self.supported_kinds()
            except Exception as exc:
                self._supported = (now + min(max_age_s, FAILURE_TTL_S), exc)
                raise
            self._supported = (now + max_age_s, kinds)
            return kinds
