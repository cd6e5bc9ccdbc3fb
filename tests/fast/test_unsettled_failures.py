"""Settling after the upstream, a job can fail while the client's settlement is still
unknown: it may have moved the client's money. Such a job is never closed as "failed,
nothing to refund": it is parked as an unresolved settlement, for the operator."""

from __future__ import annotations

import pytest

from app.core.modes import RefundPolicy, SettlementOrder
from app.jobs.models import JobState
from tests.fast.checks import error_of, money_is_consistent
from tests.fast.facilitator import Settle
from tests.fast.pool import Opener
from tests.fast.upstream import Status

AFTER = SettlementOrder.SETTLE_AFTER


@pytest.mark.parametrize("policy", list(RefundPolicy))
@pytest.mark.parametrize("outcome", [Settle.TIMEOUT_LANDED, Settle.RAISES])
async def test_an_upstream_failure_while_the_charge_is_unknown_is_parked(
    gateways: Opener, outcome: Settle, policy: RefundPolicy
) -> None:
    """No chain: the worker's settle retry stays unknown, then the upstream job fails."""
    async with gateways(chain=False, settlement_order=AFTER, refund_policy=policy) as h:
        h.world.facilitator.script(settle=[outcome, Settle.TIMEOUT])
        h.world.upstream.script(status=[Status.FAILED])
        spent = await h.spent()
        first = await h.pay()
        assert error_of(first) == "payment_outcome_unknown"
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (JobState.NEEDS_ATTENTION, "settlement_unresolved")
        again = await h.pay(h.header)  # never told to pay again
        assert (again.status_code, error_of(again)) == (503, "settlement_unresolved")
        await money_is_consistent(h, job, spent)


async def test_a_failure_a_status_read_recorded_waits_for_the_charge(gateways: Opener) -> None:
    """With a chain: the read hands the failure over while the settlement is unknown."""
    async with gateways(settlement_order=AFTER) as h:
        h.world.facilitator.script(settle=[Settle.RAISES])
        h.world.upstream.script(status=[Status.FAILED])
        spent = await h.spent()
        first = await h.pay()
        assert error_of(first) == "payment_outcome_unknown"
        job = await h.the_job()
        read = await h.http.get(f"/v1/jobs/{job.id}")
        assert read.status_code == 200
        job = await h.work(job.id)
        assert (job.state, job.error_code) == (JobState.NEEDS_ATTENTION, "settlement_unresolved")
        await money_is_consistent(h, job, spent)
