"""All job and ledger queries; callers own the transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.core.metrics import TRANSFERRED_ATOMIC, TRANSFERS
from app.jobs.models import Job, JobState, LedgerEntry, LedgerKind


def utcnow() -> datetime:
    """Timezone-aware now (stored as UTC everywhere)."""
    return datetime.now(UTC)


async def load_job(sessions: async_sessionmaker[AsyncSession], job_id: str) -> Job:
    """A fresh copy of a job that must exist, read in its own short session."""
    async with sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None, job_id
    return job


class JobRepository:
    """Queries over `jobs` and `ledger` inside one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, job_id: str) -> Job | None:
        """A job by id."""
        return await self.session.get(Job, job_id)

    async def by_payment(self, network: str, payer: str, nonce: str) -> Job | None:
        """The job bought by this payment identity, if any."""
        stmt = select(Job).where(
            Job.pay_network == network, Job.payer == payer, Job.pay_nonce == nonce
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_idempotency_key(self, key: str) -> Job | None:
        """The job created under this idempotency key, if any."""
        stmt = select(Job).where(Job.idempotency_key == key)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def release_failed_key(self, key: str) -> None:
        """Detach an idempotency key from a job whose payment was refused (nothing bought)."""
        await self.session.execute(
            update(Job)
            .where(Job.idempotency_key == key, Job.state == JobState.PAYMENT_FAILED.value)
            .values(idempotency_key=None)
        )

    async def claim_due(self, states: list[JobState], limit: int) -> list[Job]:
        """Rows due for background work, locked so other replicas skip them."""
        now = utcnow()
        stmt = (
            select(Job)
            .where(
                Job.state.in_([s.value for s in states]),
                or_(Job.next_check_at.is_(None), Job.next_check_at <= now),
            )
            .order_by(Job.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def try_lease(self, job_id: str, seconds: float) -> bool:
        """Take a job whose lease has expired (nobody is working on it) for `seconds`."""
        now = utcnow()
        stmt = (
            update(Job)
            .where(Job.id == job_id, or_(Job.next_check_at.is_(None), Job.next_check_at <= now))
            .values(next_check_at=now + timedelta(seconds=seconds))
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def claim_poll(self, job_id: str, interval_s: float) -> Job | None:
        """Atomically take the right to poll the upstream for this job now (one per interval);
        the job as claimed, or None when it is not due (or no longer in progress)."""
        now = utcnow()
        stmt = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.state == JobState.SUBMITTED.value,
                or_(
                    Job.last_polled_at.is_(None),
                    Job.last_polled_at <= now - timedelta(seconds=interval_s),
                ),
            )
            .values(last_polled_at=now)
            .returning(Job)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return (await self.session.scalars(stmt)).one_or_none()

    def record(
        self,
        job: Job,
        kind: LedgerKind,
        *,
        amount: int,
        asset: str,
        network: str,
        from_address: str,
        to_address: str,
        tx_hash: str,
    ) -> LedgerEntry:
        """Append a ledger row for a confirmed transfer."""
        entry = LedgerEntry(
            job_id=job.id,
            kind=kind.value,
            amount=amount,
            asset=asset,
            network=network,
            from_address=from_address,
            to_address=to_address,
            tx_hash=tx_hash,
        )
        self.session.add(entry)
        # Counted when staged: a rolled-back unit of work can overcount, never undercount.
        TRANSFERS.labels(kind.value).inc()
        TRANSFERRED_ATOMIC.labels(kind.value).inc(amount)
        return entry

    def record_charge(self, job: Job, tx_hash: str) -> LedgerEntry:
        """The client's payment to the operator."""
        return self.record(
            job,
            LedgerKind.CHARGE,
            amount=job.pay_amount,
            asset=job.pay_asset,
            network=job.pay_network,
            from_address=job.payer,
            to_address=job.pay_to,
            tx_hash=tx_hash,
        )

    def record_upstream(self, job: Job, hot_wallet: str, tx_hash: str) -> LedgerEntry:
        """Our payment to the upstream."""
        assert job.upstream_amount is not None
        assert job.upstream_pay_to is not None
        return self.record(
            job,
            LedgerKind.UPSTREAM,
            amount=job.upstream_amount,
            asset=job.pay_asset,
            network=job.pay_network,
            from_address=hot_wallet,
            to_address=job.upstream_pay_to,
            tx_hash=tx_hash,
        )

    def record_refund(self, job: Job, hot_wallet: str, tx_hash: str) -> LedgerEntry:
        """The refund from the hot wallet to the client."""
        assert job.refund_amount is not None
        return self.record(
            job,
            LedgerKind.REFUND,
            amount=job.refund_amount,
            asset=job.pay_asset,
            network=job.pay_network,
            from_address=hot_wallet,
            to_address=job.payer,
            tx_hash=tx_hash,
        )

    async def ledger_for(self, job_id: str) -> list[LedgerEntry]:
        """A job's transfers in order."""
        stmt = select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
        return list((await self.session.execute(stmt)).scalars())

    async def count_by_state(self) -> dict[str, int]:
        """How many jobs are in each state."""
        stmt = select(Job.state, func.count()).group_by(Job.state)
        return {state: int(n) for state, n in (await self.session.execute(stmt)).all()}

    async def needing_attention(self, limit: int = 100) -> list[Job]:
        """Jobs parked for the operator, newest first."""
        stmt = (
            select(Job)
            .where(Job.state == JobState.NEEDS_ATTENTION.value)
            .order_by(Job.updated_at.desc())
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def ledger_totals(self) -> dict[str, Any]:
        """Sum per ledger kind, and the margin they imply."""
        stmt = select(LedgerEntry.kind, func.coalesce(func.sum(LedgerEntry.amount), 0)).group_by(
            LedgerEntry.kind
        )
        sums = {kind: int(total) for kind, total in (await self.session.execute(stmt)).all()}
        charges = sums.get(LedgerKind.CHARGE.value, 0)
        refunds = sums.get(LedgerKind.REFUND.value, 0)
        upstream = sums.get(LedgerKind.UPSTREAM.value, 0)
        return {
            "charges": charges,
            "refunds": refunds,
            "upstream_spend": upstream,
            "margin": charges - refunds - upstream,
        }


async def transition(
    session: AsyncSession,
    job_id: str,
    from_states: list[JobState],
    *conditions: ColumnElement[bool],
    **values: Any,
) -> Job | None:
    """Compare-and-set a job's columns and return the row as written, in one statement;
    None if the job left `from_states` (or `conditions` no longer hold) meanwhile."""
    values.setdefault("updated_at", utcnow())
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.state.in_([s.value for s in from_states]), *conditions)
        .values(**values)
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()
