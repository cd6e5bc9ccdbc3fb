"""The upstream's price changes between the quote a sale is admitted on and the purchase:
the daily cap counts what is signed; a price we must not pay fails the charged job, which
is refunded by policy (the upstream charged nothing)."""

from __future__ import annotations

import pytest

from app.core.modes import RefundPolicy, SettlementOrder
from app.jobs.models import JobState
from tests.fast.checks import error_of, kinds, money_is_consistent
from tests.fast.pool import Opener
from tests.fast.rules import failed_job_end
from tests.fast.upstream import PRICES, Quote

REFUSED_PRICES = {
    Quote.ABOVE_PAID: "upstream_price_above_paid",
    Quote.TOO_EXPENSIVE: "upstream_price_above_ceiling",
}
FRESH_QUOTES = {"upstream_requirements_ttl_s": 0}  # every purchase asks the upstream anew


@pytest.mark.parametrize("order", list(SettlementOrder))
async def test_a_cheaper_price_is_what_the_cap_counts(
    gateways: Opener, order: SettlementOrder
) -> None:
    async with gateways(settlement_order=order, **FRESH_QUOTES) as h:
        h.world.upstream.script(quote=[Quote.OFFER, Quote.CHEAPER])
        spent = await h.spent()
        assert (await h.pay()).status_code == 200
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.upstream_amount) == (JobState.COMPLETED, PRICES[Quote.CHEAPER])
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("policy", list(RefundPolicy))
@pytest.mark.parametrize("price", list(REFUSED_PRICES))
async def test_a_price_we_must_not_pay_fails_the_charged_job(
    gateways: Opener, price: Quote, policy: RefundPolicy
) -> None:
    code = REFUSED_PRICES[price]
    end = failed_job_end(policy, upstream_charged=False)
    async with gateways(refund_policy=policy, **FRESH_QUOTES) as h:
        h.world.upstream.script(quote=[Quote.OFFER, price])
        spent = await h.spent()
        answer = await h.pay()
        assert (answer.status_code, error_of(answer)) == (502, code)
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code, job.upstream_nonce) == (end, code, None)
        expected = ["charge", "refund"] if end is JobState.REFUNDED else ["charge"]
        assert kinds(await h.ledger_rows(job.id)) == expected
        assert h.world.upstream.count("submit") == 0
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("price", list(REFUSED_PRICES))
async def test_settling_after_a_price_we_must_not_pay_charges_nobody(
    gateways: Opener, price: Quote
) -> None:
    order = SettlementOrder.SETTLE_AFTER
    async with gateways(settlement_order=order, **FRESH_QUOTES) as h:
        h.world.upstream.script(quote=[Quote.OFFER, price])
        spent = await h.spent()
        answer = await h.pay()
        assert (answer.status_code, error_of(answer)) == (502, REFUSED_PRICES[price])
        job = await h.work((await h.the_job()).id)
        assert (job.state, await h.ledger_rows(job.id)) == (JobState.FAILED, [])
        assert h.world.facilitator.settles("client") == []
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("policy", list(RefundPolicy))
async def test_a_dearer_price_beyond_the_cap_fails_the_charged_job(
    gateways: Opener, policy: RefundPolicy
) -> None:
    """Admitted on the listing's price with just enough room; the signed price needs more."""
    end = failed_job_end(policy, upstream_charged=False)
    async with gateways(refund_policy=policy, **FRESH_QUOTES) as h:
        spent = await h.spent()
        h.gw.settings = h.gw.settings.model_copy(
            update={"daily_upstream_cap_atomic": spent + 52_700 + 1_000}
        )
        h.world.upstream.script(quote=[Quote.OFFER, Quote.DEARER])
        answer = await h.pay()
        assert (answer.status_code, error_of(answer)) == (502, "daily_spend_cap_reached")
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (end, "daily_spend_cap_reached")
        await money_is_consistent(h, job, spent)
