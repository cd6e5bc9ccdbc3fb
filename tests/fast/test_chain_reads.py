"""When the chain cannot be read (the RPC is down, or a lagging node does not find the
transaction yet), nothing is decided on a guess: the outcome stays unknown and is asked
again, and nothing is settled twice meanwhile."""

from __future__ import annotations

import pytest

from app.core.modes import RefundPolicy, SettlementOrder
from app.jobs.models import JobState
from tests.fast.checks import error_of, money_is_consistent
from tests.fast.facilitator import Settle
from tests.fast.pool import Opener
from tests.fast.rules import failed_job_end
from tests.fast.upstream import Submit


async def test_a_landed_settlement_waits_for_the_rpc(gateways: Opener) -> None:
    async with gateways() as h:
        assert h.world.chain is not None
        h.world.facilitator.script(settle=[Settle.TIMEOUT_LANDED])
        h.world.chain.down = True
        spent = await h.spent()
        answer = await h.pay()
        assert error_of(answer) == "payment_outcome_unknown"
        h.world.chain.down = False
        job = await h.work((await h.the_job()).id)
        assert job.state == JobState.COMPLETED
        # The retry asked the chain before the facilitator: it found the charge, settled once.
        assert len(h.world.facilitator.settles("client")) == 1
        await money_is_consistent(h, job, spent)


async def test_a_lagging_node_leaves_the_settlement_unknown(gateways: Opener) -> None:
    async with gateways() as h:
        assert h.world.chain is not None
        h.world.facilitator.script(settle=[Settle.TIMEOUT_LANDED])
        h.world.chain.hidden.add(h.payer.address.lower())
        spent = await h.spent()
        assert error_of(await h.pay()) == "payment_outcome_unknown"
        job = await h.step((await h.the_job()).id)
        assert (job.state, job.settle_tx) == (JobState.VERIFIED, None)  # still unknown
        h.world.chain.hidden.clear()
        job = await h.work(job.id)
        assert job.state == JobState.COMPLETED
        assert len(h.world.ledger.moved(job.payer, job.pay_to)) == 1
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("policy", list(RefundPolicy))
async def test_an_unreadable_upstream_charge_is_unknown(
    gateways: Opener, policy: RefundPolicy
) -> None:
    """The upstream never answered; the RPC is down when the job fails: charged or not is
    unknown, and the policy decides on that (a refund then waits for the chain too)."""
    async with gateways(refund_policy=policy) as h:
        assert h.world.chain is not None
        h.world.upstream.script(submit=[Submit.UNREACHABLE] * 3)
        spent = await h.spent()
        assert (await h.pay()).status_code == 200
        job = await h.the_job()
        h.world.chain.down = True
        while job.state == JobState.UPSTREAM_SIGNED:
            job = await h.step(job.id)
        h.world.chain.down = False
        job = await h.work(job.id)
        assert (job.state, job.error_code) == (
            failed_job_end(policy, upstream_charged=None),
            "upstream_unreachable",
        )
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("order", list(SettlementOrder))
async def test_a_refusal_after_an_unknown_settlement_waits_for_the_chain(
    gateways: Opener, order: SettlementOrder
) -> None:
    """The first attempt landed but its answer was lost; the retry, made while the RPC is
    down, is refused (e.g. the authorization expired meanwhile). That refusal proves nothing
    about the first attempt: the client is never told to pay again for a payment the chain
    shows made."""
    async with gateways(settlement_order=order) as h:
        assert h.world.chain is not None
        h.world.facilitator.script(settle=[Settle.TIMEOUT_LANDED, Settle.REFUSED])
        h.world.chain.down = True
        spent = await h.spent()
        assert error_of(await h.pay()) == "payment_outcome_unknown"
        job = await h.step((await h.the_job()).id)  # refused, and the chain unreadable
        assert (job.state, job.settle_tx) in {
            (JobState.VERIFIED, None),
            (JobState.SUBMITTED, None),
        }
        h.world.chain.down = False
        job = await h.work(job.id)
        assert job.state == JobState.COMPLETED
        assert len(h.world.ledger.moved(job.payer, job.pay_to)) == 1
        await money_is_consistent(h, job, spent)
