"""One gateway process in-process, as a test drives it: payments signed by the SDK client
(parsed and checked for real), its HTTP answers, its worker's steps, its rows."""

from __future__ import annotations

from datetime import UTC, timedelta
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
from app.context import Gateway
from app.jobs.models import Job, JobState, LedgerEntry, SpendHour
from app.jobs.polling import Poller
from app.jobs.repository import JobRepository, load_job, utcnow
from app.jobs.workers import ACTIVE, advance, run_once
from app.keys.models import ApiKey, KeyLedgerEntry
from app.payments.incoming import IncomingPayment, parse_payment
from sandbox.pay import EDIT_BODY, payer_client
from tests.fast.world import World
from tests.key_helpers import create_key_in

MAX_WORKER_STEPS = 40  # more than any retry budget the policy allows (12 settle attempts)


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
            required: Any = PaymentRequiredV1.model_validate_json(offer.unpaid.body)
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

    async def pay_with_key(self, secret: str, *, key: str | None = None) -> httpx.Response:
        """POST the edit paid with the API key `secret` (no x402 payment), and an
        idempotency key."""
        headers = {"Authorization": f"Bearer {secret}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.http.post(EDIT_PATH, json=EDIT_BODY, headers=headers)

    async def new_key(self, **limits: Any) -> tuple[str, str]:
        """(id, secret) of a key made by the service, as the CLI and the admin API do."""
        view, secret = await create_key_in(self.gw.engine, **limits)
        return str(view["id"]), secret

    async def key_jobs(self, key_id: str) -> list[Job]:
        """The jobs the key bought."""
        async with self.gw.sessions() as session:
            stmt = select(Job).where(Job.api_key_id == key_id)
            return list((await session.execute(stmt)).scalars())

    async def key_spent(self, key_id: str) -> int:
        """What the key's row says it spent."""
        async with self.gw.sessions() as session:
            spent = await session.scalar(select(ApiKey.spent_atomic).where(ApiKey.id == key_id))
        return int(spent or 0)

    async def key_ledger(self, key_id: str) -> list[tuple[str, str | None, int]]:
        """The key's budget movements, oldest first: (kind, job id, amount)."""
        async with self.gw.sessions() as session:
            stmt = (
                select(KeyLedgerEntry)
                .where(KeyLedgerEntry.key_id == key_id)
                .order_by(KeyLedgerEntry.id)
            )
            rows = (await session.execute(stmt)).scalars()
            return [(str(r.kind), r.job_id, int(r.amount)) for r in rows]

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
        clock, written directly: no state changes); the chain's clock reaches the moment the
        job was due."""
        due = (await load_job(self.gw.autocommit, job_id)).next_check_at
        if due is not None and self.world.chain is not None:
            self.world.chain.reach(due.replace(tzinfo=due.tzinfo or UTC).timestamp())
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
            job = await load_job(self.gw.autocommit, job_id)
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
            await advance(self.gw, self.poller, await load_job(self.gw.autocommit, job_id))
        return await load_job(self.gw.autocommit, job_id)

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
