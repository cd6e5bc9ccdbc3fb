"""Real gateways on the fast suite's databases, kept open for the session, each test's
world installed in one: its facilitator, chain reader and upstream (over a MockTransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from app.api.job_reads import close_job_reads
from app.context import Gateway
from app.core.settings import Settings
from app.jobs.polling import Poller
from app.main import _upstream_client, build_gateway, create_app
from app.upstream.status_fetch import StatusReader
from tests.fast.harness import FastGateway
from tests.fast.upstream import URL, FakeUpstream
from tests.fast.world import World, new_world
from tests.settings_factory import make_settings


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a gateway on an already migrated database, workers driven by the test."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "upstream_url": URL,
        "auto_migrate": False,
        "workers_enabled": False,
        "upstream_allow_private_addresses": True,  # the fake upstream is on 127.0.0.1
        "upstream_status_max_bytes": 1024,
        "verify_rate_per_payer": "off",
        "verify_rate_per_client": "off",
        "db_pool_size": 2,
        **overrides,
    }
    return make_settings(**values)


class Relay:
    """The upstream transport of a pooled gateway: hands each request to the current test's
    fake upstream (the client and its TLS-free transports are built once per gateway)."""

    def __init__(self) -> None:
        self.upstream: FakeUpstream | None = None
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        assert self.upstream is not None, "no fake upstream installed"
        return self.upstream.handle(request)


@dataclass
class Built:
    """A gateway, its app, and what talks to its fake upstream."""

    gw: Gateway
    app: FastAPI
    relay: Relay
    upstream_http: httpx.AsyncClient  # the upstream client's (the gateway closes only its own)

    async def aclose(self) -> None:
        """Stop it as the lifespan would."""
        await close_job_reads(self.app)
        await self.upstream_http.aclose()
        await self.gw.close()


async def build_fast_gateway(settings: Settings) -> Built:
    """A gateway and its app from settings; its upstream client talks to a `Relay`."""
    gw = build_gateway(settings)
    relay = Relay()
    upstream_http = httpx.AsyncClient(transport=relay.transport)
    policy = gw.upstream.statuses.policy
    await gw.upstream.statuses.aclose()
    gw.upstream = _upstream_client(settings, gw.hot_wallet, upstream_http)
    await gw.upstream.statuses.aclose()
    gw.upstream.statuses = StatusReader(policy, relay.transport)
    app = create_app(settings)
    app.state.gateway, app.state.poller = gw, Poller(gw)
    return Built(gw, app, relay, upstream_http)


def install_world(gw: Gateway, relay: Relay, world: World) -> None:
    """Point the gateway's facilitator, chain and upstream at `world`."""
    gw.facilitator = world.facilitator
    gw.chain = world.chain  # type: ignore[assignment]  # the ChainReader surface, faked
    relay.upstream = world.upstream
    gw.upstream.forget_quote()  # a quote is the last world's


Opener = Callable[..., AbstractAsyncContextManager[FastGateway]]


# Settings read once, when the gateway is built (by its upstream client).
BUILT_IN = frozenset(
    {"upstream_requirements_ttl_s", "upstream_timeout_s", "upstream_auth_validity_s"}
)


class GatewayPool:
    """Gateways kept open for the session, two per database (a first process and a restarted
    one): building one costs more than a paid request (TLS contexts, connections). Each test
    gets a new world and its own settings: every part reads `gw.settings` when it acts,
    except the settings in BUILT_IN (a gateway of their own) and those the harness fixes."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, bool, tuple[tuple[str, Any], ...]], Built] = {}

    @asynccontextmanager
    async def open(
        self,
        database_url: str,
        world: World | None = None,
        *,
        chain: bool = True,
        restarted: bool = False,
        payer: LocalAccount | None = None,
        **overrides: Any,
    ) -> AsyncIterator[FastGateway]:
        """A gateway on `database_url` whose outside world is `world` (a new one by default);
        `restarted`: another process than the one a test opened first; `payer`: who pays
        (a new account by default)."""
        settings = fast_settings(database_url, **overrides)
        fixed = tuple((name, overrides[name]) for name in sorted(BUILT_IN & set(overrides)))
        key = (database_url, restarted, fixed)
        built = self._open.get(key)
        if built is None:
            built = self._open[key] = await build_fast_gateway(settings)
        built.gw.settings = settings
        world = world or new_world(settings.hot_wallet_address, chain=chain)
        install_world(built.gw, built.relay, world)
        fast = FastGateway(built.gw, built.app, world, payer)
        try:
            yield fast
        finally:
            await fast.http.aclose()

    async def aclose(self) -> None:
        """Close every gateway kept open."""
        for built in self._open.values():
            await built.aclose()
        self._open.clear()
