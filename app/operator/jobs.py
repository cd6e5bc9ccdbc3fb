"""Job queries for the operator: filtered, paginated lists and one job's full money trail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.modes import SettlementOrder
from app.jobs.models import Job, LedgerEntry, OperatorAction
from app.jobs.views import rfc3339
from app.keys.models import ApiKey, KeyLedgerEntry
from app.operator import cursor as cursors
from app.operator.actions import refund_refusal, retry_refusal
from app.operator.report import as_utc

MAX_LIMIT = 500


@dataclass(frozen=True)
class JobFilter:
    """What an operator narrows a job list by (every field optional)."""

    state: str | None = None
    key: str | None = None  # an API key's id or name
    payer: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None  # a job id, a payer address or a transaction hash


@dataclass(frozen=True)
class Page:
    """One page of jobs, newest first, and the cursor of the next page (None: last page)."""

    jobs: list[Job]
    next_cursor: str | None


def _conditions(f: JobFilter) -> list[Any]:
    where: list[Any] = []
    if f.state:
        where.append(Job.state == f.state)
    if f.key:
        named = select(ApiKey.id).where(or_(ApiKey.id == f.key, ApiKey.name == f.key))
        where.append(Job.api_key_id.in_(named.scalar_subquery()))
    if f.payer:
        where.append(Job.payer.ilike(f.payer))
    if f.since:
        where.append(Job.created_at >= as_utc(f.since))
    if f.until:
        where.append(Job.created_at < as_utc(f.until))
    if f.search:
        term = f.search.strip()
        lower = term.lower()
        tx_in_ledger = exists().where(LedgerEntry.job_id == Job.id, LedgerEntry.tx_hash == lower)
        where.append(
            or_(
                Job.id == term,
                Job.payer.ilike(term),
                Job.settle_tx == lower,
                Job.upstream_tx == lower,
                Job.refund_tx == lower,
                tx_in_ledger,
            )
        )
    return where


async def list_jobs(
    session: AsyncSession, f: JobFilter, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """Jobs matching `f`, newest first, `limit` at a time, after `cursor`."""
    limit = max(1, min(limit, MAX_LIMIT))
    where = _conditions(f)
    if cursor:
        moment, last_id = cursors.decode(cursor)
        where.append(or_(Job.created_at < moment, and_(Job.created_at == moment, Job.id < last_id)))
    stmt = select(Job).where(*where).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    jobs = list((await session.execute(stmt)).scalars())
    more = len(jobs) > limit
    jobs = jobs[:limit]
    last = jobs[-1] if more else None
    return Page(jobs, cursors.encode(last.created_at, last.id) if last else None)


async def iterate_jobs(
    session: AsyncSession, f: JobFilter, batch: int = MAX_LIMIT
) -> AsyncIterator[Job]:
    """Every job matching `f`, newest first, read a page at a time (for long listings)."""
    cursor: str | None = None
    while True:
        page = await list_jobs(session, f, limit=batch, cursor=cursor)
        for job in page.jobs:
            yield job
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def job_summary(job: Job, order: SettlementOrder) -> dict[str, Any]:
    """One job as a list row: who paid what, where it stands, and what the operator can do."""
    return {
        "id": job.id,
        "state": job.state,
        "createdAt": rfc3339(job.created_at),
        "payer": job.payer,
        "apiKeyId": job.api_key_id,
        "amount": str(job.pay_amount),
        "upstreamAmount": None if job.upstream_amount is None else str(job.upstream_amount),
        "refundAmount": None if job.refund_amount is None else str(job.refund_amount),
        "settleTx": job.settle_tx,
        "upstreamTx": job.upstream_tx,
        "refundTx": job.refund_tx,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "actions": {
            "retry": retry_refusal(job, order) is None,
            "refund": refund_refusal(job) is None,
        },
    }


async def job_trail(session: AsyncSession, job_id: str, order: SettlementOrder) -> dict[str, Any]:
    """A job with every ledger row (with its tx), key-ledger row and operator action."""
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}", code="job_not_found")
    ledger = (
        await session.execute(
            select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
        )
    ).scalars()
    keyed = (
        await session.execute(
            select(KeyLedgerEntry)
            .where(KeyLedgerEntry.job_id == job_id)
            .order_by(KeyLedgerEntry.id)
        )
    ).scalars()
    acts = (
        await session.execute(
            select(OperatorAction)
            .where(OperatorAction.job_id == job_id)
            .order_by(OperatorAction.id)
        )
    ).scalars()
    return job_summary(job, order) | {
        "updatedAt": rfc3339(job.updated_at),
        "finishedAt": rfc3339(job.finished_at),
        "network": job.pay_network,
        "asset": job.pay_asset,
        "payTo": job.pay_to,
        "upstreamJobId": job.upstream_job_id,
        "upstreamNonce": job.upstream_nonce,
        "refundNonce": job.refund_nonce,
        "attempts": {
            "settle": job.settle_attempts,
            "upstream": job.upstream_attempts,
            "refund": job.refund_attempts,
        },
        "actionRefusals": {
            "retry": retry_refusal(job, order),
            "refund": refund_refusal(job),
        },
        "ledger": [
            {
                "kind": e.kind,
                "amount": str(e.amount),
                "from": e.from_address,
                "to": e.to_address,
                "txHash": e.tx_hash,
                "createdAt": rfc3339(e.created_at),
            }
            for e in ledger
        ],
        "keyLedger": [
            {
                "kind": e.kind,
                "keyId": e.key_id,
                "amount": str(e.amount),
                "reason": e.reason,
                "createdAt": rfc3339(e.created_at),
            }
            for e in keyed
        ],
        "operatorActions": [
            {
                "action": a.action,
                "reason": a.reason,
                "actor": a.actor,
                "createdAt": rfc3339(a.created_at),
            }
            for a in acts
        ],
    }
