"""Money invariants every fast test ends with, whatever the scenario."""

from __future__ import annotations

from collections import Counter

import httpx

from app.jobs.models import FINAL_STATES, Job, JobState, LedgerEntry
from tests.fast.facilitator import Call, Settle
from tests.fast.harness import FastGateway

RESERVATION_RETURNED = {*FINAL_STATES, JobState.REFUNDING}


async def money_is_consistent(h: FastGateway, job: Job, spent_before: int) -> None:
    """The ledger tells the truth, nothing is paid twice, the reservation is right (for a
    world in which `job` is the one payment, and `spent_before` the spend before it)."""
    world = h.world
    rows = await h.ledger_rows(job.id)
    # Every ledger row is a transfer that happened, exactly as recorded; none twice.
    for row in rows:
        moved = world.ledger.transfers.get(row.tx_hash)
        assert moved is not None, f"{row.kind} row names {row.tx_hash}, which moved nothing"
        assert (moved.sender, moved.recipient, moved.amount) == (
            row.from_address.lower(),
            row.to_address.lower(),
            row.amount,
        ), f"{row.kind} row does not match its transfer"
    assert max(Counter(r.kind for r in rows).values(), default=0) <= 1, rows
    # Settled once: after a definite answer (it moved the money and said so, or refused)
    # nobody asks the facilitator again, for the client's payment or for the refund.
    for party in ("client", "refund"):
        settles = world.facilitator.settles(party)
        definite = [i for i, c in enumerate(settles) if _definite(c)]
        if definite:
            assert definite[0] == len(settles) - 1, f"{party} settled again: {settles}"
    # At most one refund moved, of exactly what was paid.
    refunds = world.ledger.moved(h.gw.settings.hot_wallet_address, job.payer)
    assert refunds in ([], [job.pay_amount]), refunds
    # One authorization per party: the upstream is paid at most once.
    upstream = world.ledger.moved(h.gw.settings.hot_wallet_address, world.upstream.pay_to)
    assert len(upstream) <= 1, upstream
    # The spend reservation: given back once the job ended without signing for the upstream,
    # kept (at the signed amount) once signed; the database counts exactly the job's share.
    if job.upstream_nonce is not None:
        assert job.spend_reserved == job.upstream_amount
    elif JobState(job.state) in RESERVATION_RETURNED:
        assert job.spend_reserved == 0
    assert await h.spent() - spent_before == job.spend_reserved


def _definite(call: Call) -> bool:
    """The gateway got a definite answer: "refused", or "settled" (it moved the money) that
    the chain, if there is one, could confirm (unconfirmed, the same authorization is sent
    again: it cannot move money twice)."""
    settled = call.outcome is Settle.SETTLED and bool(call.tx) and call.confirmable
    return call.outcome is Settle.REFUSED or settled


def error_of(answer: httpx.Response) -> str | None:
    """The error code of an answer (a 402's reason included); None for a success."""
    if answer.status_code == 200:
        return None
    return str(answer.json()["error"])


def kinds(rows: list[LedgerEntry]) -> list[str]:
    """The kinds of ledger rows, in order."""
    return [str(row.kind) for row in rows]
