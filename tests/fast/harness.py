"""A real `Gateway` and its ASGI app on a given database, with the outside world faked: a
scripted facilitator, a MockTransport upstream and (optionally) a chain reader, all over one
fake token ledger. Payments are signed by the SDK client and parsed and checked for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from sqlalchemy import func, select, update
from x402.http import (
    PAYMENT_SIGNATURE_HEADER,
    X_PAYMENT_HEADER,
    decode_payment_required_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentRequiredV1

from app.api.edits import EDIT_PATH, current_offer
from app.api.job_reads import close_job_reads
from app.context import Gateway
from app.core.settings import Settings
from app.jobs.models import Job, JobState, LedgerEntry, SpendHour
from app.jobs.polling import Poller
from app.jobs.repository import JobRepository, load_job, utcnow
from app.jobs.workers import ACTIVE, advance, run_once
from app.main import _upstream_client, build_gateway, create_app
from app.payments.incoming import IncomingPayment, parse_payment
from app.upstream.status_fetch import StatusReader
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import UPSTREAM_PAYEE, address
from tests.fast.chain import FakeChain, Ledger
from tests.fast.facilitator import ScriptedFacilitator
from tests.fast.upstream import URL, FakeUpstream
from tests.settings_factory import make_settings

MAX_WORKER_STEPS = 40  # more than any retry budget the policy allows (12 settle attempts)


@dataclass
class World:
    """Everything outside the gateway; it outlives a gateway (a crash and a restart)."""

    ledger: Ledger
    facilitator: ScriptedFacilitator
    upstream: FakeUpstream
    chain: FakeChain | None


def new_world(hot_wallet: str, *, chain: bool) -> World:
    """A fresh ledger, facilitator and upstream; a chain reader over them when `chain`."""
    ledger = Ledger()
    reader = FakeChain(ledger) if chain else None
    return World(
        ledger=ledger,
        facilitator=ScriptedFacilitator(ledger, hot_wallet, chain=reader),
        upstream=FakeUpstream(ledger, address(UPSTREAM_PAYEE)),
        chain=reader,
    )


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


class FastGateway:
    """One gateway process, in-process; a new payer per instance."""

    def __init__(
        self, gw: Gateway, app: FastAPI, world: World, payer: LocalAccount | None = None
    ) -> None:
        self.gw, self.app, self.world = gw, app, world
        self.poller: Poller = app.state.poller
        self.payer: LocalAccount = payer or Account.create()
        self.payment: IncomingPayment | None = None
        self.header = ""  # the last payment signed, and the header it goes in
        self.header_name = PAYMENT_SIGNATURE_HEADER
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://internal:8080"
        )

    async def sign(self, *, v1: bool = False) -> str:
        """A payment header for our offer, signed by the SDK client with this payer's key:
        v2 from our PAYMENT-REQUIRED header, or v1 from our 402 body (a v1-only client)."""
        offer = current_offer(self.gw, EDIT_PATH)
        client = payer_client("0x" + bytes(self.payer.key).hex(), v1_only=v1)
        if v1:
            required: Any = PaymentRequiredV1.model_validate_json(offer.unpaid_body)
        else:
            required = decode_payment_required_header(offer.unpaid_header)
        payload = await client.create_payment_payload(required)
        self.header = encode_payment_signature_header(payload)
        self.header_name = X_PAYMENT_HEADER if v1 else PAYMENT_SIGNATURE_HEADER
        self.payment = parse_payment(self.header, offer)  # for looking the job up by its nonce
        return self.header

    async def pay(
        self, header: str | None = None, *, key: str | None = None, v1: bool = False
    ) -> httpx.Response:
        """POST the edit with a (new, unless given) signed payment, and an idempotency key."""
        header = header or await self.sign(v1=v1)
        headers = {self.header_name: header}
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.http.post(EDIT_PATH, json=EDIT_BODY, headers=headers)

    async def job(self) -> Job | None:
        """The job the last signed payment bought, if any."""
        assert self.payment is not None
        p = self.payment
        async with self.gw.sessions() as session:
            return await JobRepository(session).by_payment(p.network, p.payer, p.nonce)

    async def the_job(self) -> Job:
        """The job the last payment bought (there must be one)."""
        job = await self.job()
        assert job is not None, "the payment bought no job"
        return job

    async def make_due(self, job_id: str) -> None:
        """Time passes: the job's lease or backoff is over and its poll interval too (a test's
        clock, written directly: no state changes)."""
        async with self.gw.engine.begin() as conn:
            await conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(next_check_at=utcnow(), last_polled_at=None)
            )

    async def work(
        self, job_id: str, max_steps: int = MAX_WORKER_STEPS, *, claimed: bool = False
    ) -> Job:
        """Let the recovery worker advance the job until it leaves the worker's states.

        `claimed`: through the worker's own batch (`run_once`: claim, lease, advance); the
        other tests' jobs in this database are put off meanwhile, so only this one is due.
        """
        for _ in range(max_steps):
            job = await load_job(self.gw.sessions, job_id)
            if JobState(job.state) not in ACTIVE:
                return job
            await self.step(job_id, claimed=claimed)
        raise AssertionError(f"job still {job.state} after {max_steps} worker steps")

    async def step(self, job_id: str, *, claimed: bool = False) -> Job:
        """One step of the recovery worker for the job, once its lease or backoff is over."""
        await self.make_due(job_id)
        if claimed:
            await self._put_off_others(job_id)
            assert await run_once(self.gw, self.poller) == 1
        else:
            await advance(self.gw, self.poller, await load_job(self.gw.sessions, job_id))
        return await load_job(self.gw.sessions, job_id)

    async def _put_off_others(self, job_id: str) -> None:
        """Other tests' unfinished jobs are not due today (their worlds are gone)."""
        later = utcnow() + timedelta(days=1)
        async with self.gw.engine.begin() as conn:
            await conn.execute(
                update(Job)
                .where(Job.id != job_id, Job.state.in_([s.value for s in ACTIVE]))
                .values(next_check_at=later)
            )

    async def ledger_rows(self, job_id: str) -> list[LedgerEntry]:
        """The job's ledger rows, oldest first."""
        async with self.gw.sessions() as session:
            stmt = select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
            return list((await session.execute(stmt)).scalars())

    async def spent(self) -> int:
        """The upstream spend counted in the database (every hour)."""
        async with self.gw.sessions() as session:
            total = await session.scalar(select(func.coalesce(func.sum(SpendHour.amount), 0)))
        return int(total or 0)


Opener = Callable[..., AbstractAsyncContextManager[FastGateway]]


# Settings read once, when the gateway is built (by its upstream client).
BUILT_IN = frozenset({"upstream_requirements_ttl_s", "upstream_timeout_s"})


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
