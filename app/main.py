"""Application factory and lifespan: engine, clients, workers started and stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from app import __version__
from app.api import (
    admin,
    admin_dashboard,
    admin_jobs,
    admin_keys,
    admin_report,
    discovery,
    edits,
    health,
    index,
    jobs,
)
from app.api.fastpath import FastPath
from app.api.front import FastPathApp
from app.api.job_reads import close_job_reads
from app.api.mcp_server import MCP_PATH, McpEndpoint
from app.api.openapi import install_openapi
from app.context import Gateway
from app.core.body_limit import BodyLimit
from app.core.db import autocommit_engine, create_engine, create_sessionmaker
from app.core.errors import install_error_handlers
from app.core.http import http_client
from app.core.migrate import upgrade_to_head
from app.core.ratelimit import RedisLimiter, SqlLimiter
from app.core.settings import Settings
from app.jobs.polling import Poller
from app.jobs.workers import run_forever
from app.payments.chain import ChainReader
from app.payments.facilitator import build_facilitator
from app.upstream.choice import OfferPins
from app.upstream.client import UpstreamClient
from app.upstream.schemas import MAX_BODY_BYTES
from app.upstream.status_fetch import StatusPolicy, StatusReader

log = logging.getLogger(__name__)

EXPOSED_HEADERS = ["PAYMENT-REQUIRED", "PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"]


def build_gateway(settings: Settings) -> Gateway:
    """Wire the long-lived objects from settings."""
    engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    http = http_client(max_connections=200)
    # The SDK's facilitator client would build its own httpx client; ours is lighter. Same
    # timeout and redirect policy as the SDK's default.
    facilitator_http = (
        http_client(timeout=settings.facilitator_timeout_s, follow_redirects=True)
        if settings.facilitator_url is not None
        else None
    )
    hot_wallet: LocalAccount = Account.from_key(settings.hot_wallet_private_key.get_secret_value())
    autocommit = autocommit_engine(engine)
    return Gateway(
        settings=settings,
        engine=engine,
        sessions=create_sessionmaker(engine),
        autocommit=autocommit,
        facilitator=build_facilitator(settings, facilitator_http),
        upstream=_upstream_client(settings, hot_wallet, http),
        http=http,
        hot_wallet=hot_wallet,
        facilitator_http=facilitator_http,
        chain=_chain_reader(settings),
        limiter=RedisLimiter(settings.redis_url.get_secret_value())
        if settings.redis_url is not None
        else SqlLimiter(autocommit),
    )


def _chain_reader(settings: Settings) -> ChainReader | None:
    """The primary chain's reader, with a reader of every other network we are paid on."""
    if not settings.rpc_url:
        return None
    blocks = settings.rpc_log_range_blocks
    primary = settings.pay_options[0]
    elsewhere = {
        option.network_caip2: ChainReader(option.rpc_url, option.asset, log_range_blocks=blocks)
        for option in settings.pay_options[1:]
        if option.rpc_url and option.network_caip2 != primary.network_caip2
    }
    return ChainReader(
        str(settings.rpc_url),
        settings.asset,
        log_range_blocks=blocks,
        network=primary.network_caip2,
        elsewhere=elsewhere,
    )


def _upstream_client(
    settings: Settings, hot_wallet: LocalAccount, http: httpx.AsyncClient
) -> UpstreamClient:
    """The upstream's client: pays with the hot wallet, reads statuses only where allowed."""
    return UpstreamClient(
        str(settings.upstream_url),
        hot_wallet,
        http,
        timeout_s=settings.upstream_timeout_s,
        quote_ttl_s=settings.upstream_requirements_ttl_s,
        pins=OfferPins(
            settings.upstream_network, settings.upstream_asset, settings.upstream_pay_to
        ),
        auth_validity_s=settings.upstream_auth_validity_s,
        status_reader=StatusReader(
            StatusPolicy(
                settings.status_origins,
                allow_private=settings.upstream_allow_private_addresses,
                max_bytes=settings.upstream_status_max_bytes,
                timeout_s=settings.upstream_timeout_s,
            )
        ),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; settings are read from the environment when not given."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await asyncio.to_thread(upgrade_to_head, settings.database_url)
        gw = build_gateway(settings)
        poller = Poller(gw)
        app.state.gateway, app.state.poller = gw, poller
        if isinstance(app, FastPathApp):
            app.gateway = gw
        stop = asyncio.Event()
        worker = (
            asyncio.create_task(run_forever(gw, poller, stop)) if settings.workers_enabled else None
        )
        gc.collect()
        gc.freeze()  # objects alive since start-up never need scanning again
        try:
            async with mcp.running():
                yield
        finally:
            stop.set()
            if worker is not None:
                with suppress(asyncio.CancelledError):
                    await asyncio.wait_for(worker, 10)
            await close_job_reads(app)
            await gw.close()

    app = FastPathApp(
        title="x402-reseller",
        version=__version__,
        summary="Pay with x402; we buy the upstream job for you and track it.",
        lifespan=lifespan,
        docs_url=None,  # offline docs instead: see install_openapi
        redoc_url=None,
    )
    app.add_middleware(FastPath)  # added first, so it runs inside CORS
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(  # outermost, so error answers carry CORS headers too
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )
    install_error_handlers(app)
    mcp = McpEndpoint(app)
    # A raw ASGI endpoint (not a request handler): the MCP transport answers by itself.
    app.router.routes.append(
        Route(MCP_PATH, endpoint=mcp, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    )
    app.include_router(edits.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(admin_jobs.router)
    app.include_router(admin_report.router)
    app.include_router(admin_dashboard.router)
    app.include_router(admin_keys.router)
    app.include_router(index.router)
    app.include_router(discovery.router)
    install_openapi(app)
    return app
