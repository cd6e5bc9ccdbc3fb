"""The ledger invariant, checked against the chain after every money scenario.

charges - refunds - upstream spend = margin, every row carries a transaction hash, and every
hash is a successful on-chain USDC transfer of exactly that amount between exactly those
addresses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job, LedgerEntry
from sandbox.chain import USDC_ADDRESS, rpc_call

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def _topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


def transfers_in(rpc_url: str, tx_hash: str) -> list[tuple[str, str, int]]:
    """USDC (from, to, amount) transfers of a successful transaction; [] if it failed."""
    receipt: dict[str, Any] | None = rpc_call(rpc_url, "eth_getTransactionReceipt", [tx_hash])
    if receipt is None or int(receipt["status"], 16) != 1:
        return []
    out = []
    for log in receipt["logs"]:
        if log["address"].lower() == USDC_ADDRESS.lower() and log["topics"][0] == TRANSFER_TOPIC:
            out.append(
                (
                    _topic_address(log["topics"][1]),
                    _topic_address(log["topics"][2]),
                    int(log["data"], 16),
                )
            )
    return out


async def audit(
    database_url: str, rpc_url: str, job_ids: list[str] | None = None
) -> dict[str, int]:
    """Check the ledger (optionally of some jobs) against the chain; return the sums."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            stmt = select(LedgerEntry)
            if job_ids is not None:
                stmt = stmt.where(LedgerEntry.job_id.in_(job_ids))
            rows = (await conn.execute(stmt)).all()
            jobs_stmt = select(Job.id, Job.state, Job.settle_tx, Job.refund_tx, Job.api_key_id)
            if job_ids is not None:
                jobs_stmt = jobs_stmt.where(Job.id.in_(job_ids))
            jobs = (await conn.execute(jobs_stmt)).all()
    finally:
        await engine.dispose()
    sums = {"charge": 0, "upstream": 0, "refund": 0}
    seen_tx: set[str] = set()
    for row in rows:
        assert row.tx_hash.startswith("0x"), row
        assert len(row.tx_hash) == 66, row
        assert row.tx_hash not in seen_tx, f"transfer recorded twice: {row}"
        seen_tx.add(row.tx_hash)
        moved = (row.from_address.lower(), row.to_address.lower(), row.amount)
        assert moved in transfers_in(rpc_url, row.tx_hash), f"ledger row not on chain: {row}"
        sums[row.kind] += row.amount
    by_job: dict[str, set[str]] = {}
    for row in rows:
        by_job.setdefault(row.job_id, set()).add(row.kind)
    for job in jobs:
        kinds = by_job.get(job.id, set())
        assert ("charge" in kinds) == (job.settle_tx is not None), job
        assert ("refund" in kinds) == (job.refund_tx is not None), job
        if job.state == "refunded" and job.api_key_id is None:  # a key is credited instead
            assert "refund" in kinds, job
    sums["margin"] = sums["charge"] - sums["refund"] - sums["upstream"]
    return sums
