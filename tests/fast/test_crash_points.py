"""The process dies at each crash point of the paid path; a restarted gateway's worker
resumes the job from its row: the right end, nothing charged, bought or refunded twice."""

from __future__ import annotations

import pytest

from app.api.edits import EDIT_PATH
from app.core.modes import RefundPolicy, SettlementOrder
from app.jobs.models import JobState
from app.jobs.purchase import purchase
from sandbox.pay import EDIT_BODY
from tests.fast.checks import kinds, money_is_consistent
from tests.fast.crashes import Crash
from tests.fast.pool import Opener
from tests.fast.rules import failed_job_end, known_upstream_charge
from tests.fast.upstream import Submit

FIRST, AFTER = SettlementOrder.SETTLE_FIRST, SettlementOrder.SETTLE_AFTER
FULL = RefundPolicy.FULL


def _ends(point: str, order: SettlementOrder, chain: bool, policy: RefundPolicy) -> JobState:
    """Where the resumed job ends, by the rules: resumed from its row, it is served; but an
    upstream acceptance that died unrecorded cannot be asked for again (a resent payment is
    refused as used): the job fails as one the upstream charged, if anything can tell."""
    if point == "after_verify" and order is AFTER:
        return JobState.FAILED  # nothing bought, nothing charged: abandoned
    if point == "after_refund_signed":
        return JobState.REFUNDED
    if point != "after_upstream_submit":
        return JobState.COMPLETED
    if order is AFTER:
        return JobState.FAILED  # the client was never charged: nothing to refund
    charged = known_upstream_charge(paid=True, tx_in_answer=False, chain=chain)
    return failed_job_end(policy, charged)


def _policies(point: str, order: SettlementOrder) -> list[RefundPolicy]:
    """The refund policy matters only where a charged job fails."""
    if point == "after_refund_signed":
        return [FULL]  # refunds whatever the upstream did
    if point == "after_upstream_submit" and order is FIRST:
        return list(RefundPolicy)
    return [RefundPolicy.IF_UPSTREAM_NOT_CHARGED]


CASES = [
    pytest.param(point, order, chain, policy, id=f"{point}-{order}-{policy}-{c_id}")
    for point, orders in {
        "after_verify": (FIRST, AFTER),
        "after_settle": (FIRST,),
        "after_upstream_signed": (FIRST, AFTER),
        "after_upstream_submit": (FIRST, AFTER),
        "after_refund_signed": (FIRST,),
    }.items()
    for order in orders
    for chain, c_id in ((True, "chain"), (False, "no_chain"))
    for policy in _policies(point, order)
]


@pytest.mark.parametrize(("point", "order", "chain", "policy"), CASES)
async def test_resumed_after_a_crash(
    gateways: Opener,
    crash_at: list[str],
    point: str,
    order: SettlementOrder,
    chain: bool,
    policy: RefundPolicy,
) -> None:
    settings = {"settlement_order": order, "refund_policy": policy}
    async with gateways(chain=chain, **settings) as h:
        if point == "after_refund_signed":
            h.world.upstream.script(submit=[Submit.REFUSE])  # the job fails, refunded by policy
        spent = await h.spent()
        await h.sign()
        assert h.payment is not None
        crash_at.append(point)
        paid = purchase(
            h.gw, route=EDIT_PATH, body=EDIT_BODY, payment=h.payment, idempotency_key=None
        )
        if point == "after_refund_signed" and chain:
            # Our upstream authorization is still live: the request leaves the refund pending,
            # and the worker signs it once that authorization expired unused.
            await paid
            job_id = (await h.the_job()).id
            with pytest.raises(Crash):
                await h.step(job_id)
        else:
            with pytest.raises(Crash):
                await paid
            job_id = (await h.the_job()).id
        crash_at.clear()
        world = h.world
    async with gateways(world, restarted=True, **settings) as restarted:
        job = await restarted.work(job_id, claimed=True)  # the worker's own batch
        assert job.state == _ends(point, order, chain, policy), job.error_code
        client_settled = [c for c in world.facilitator.settles("client") if c.tx]
        assert len(client_settled) == (0 if job.settle_tx is None else 1)
        assert len(world.ledger.moved(job.payer, job.pay_to)) == len(client_settled)
        rows = kinds(await restarted.ledger_rows(job.id))
        assert ("charge" in rows) == (job.settle_tx is not None)
        assert ("refund" in rows) == (job.state == JobState.REFUNDED)
        await money_is_consistent(restarted, job, spent)
