"""The client's payment: every verify and settle outcome, settling first and after the
upstream, with and without a chain to ask; the answer, the job, the ledger, the reservation."""

from __future__ import annotations

import pytest

from app.core.modes import SettlementOrder
from app.jobs.models import JobState
from tests.fast.checks import error_of, kinds, money_is_consistent
from tests.fast.facilitator import Settle, Verify
from tests.fast.pool import Opener
from tests.fast.rules import Verdict, settle_rule

ORDERS = list(SettlementOrder)
# Every settle outcome, with and without a chain; but without a chain a facilitator's
# success is all there is (X402R_ALLOW_NO_RPC: sandbox and tests only), so a lying one is
# believed: see test_without_a_chain_a_lying_facilitator_is_believed.
SETTLE_CASES = [
    pytest.param(outcome, chain, id=f"{outcome}-{'chain' if chain else 'no_chain'}")
    for outcome in Settle
    for chain in (True, False)
    if chain or outcome is not Settle.LIES
]


@pytest.mark.parametrize(
    ("verify", "status", "code"),
    [(Verify.INVALID, 402, "insufficient_funds"), (Verify.RAISES, 503, "facilitator_unavailable")],
)
@pytest.mark.parametrize("order", ORDERS)
async def test_unverified_payment_buys_nothing(
    gateways: Opener, verify: Verify, status: int, code: str, order: SettlementOrder
) -> None:
    async with gateways(settlement_order=order) as h:
        h.world.facilitator.script(verify=[verify])
        spent = await h.spent()
        answer = await h.pay()
        assert (answer.status_code, error_of(answer)) == (status, code)
        assert await h.job() is None
        assert h.world.facilitator.settles("client") == []
        assert h.world.upstream.count("submit") == 0
        assert await h.spent() == spent


@pytest.mark.parametrize(("outcome", "chain"), SETTLE_CASES)
async def test_settle_first(gateways: Opener, outcome: Settle, chain: bool) -> None:
    """Charged first: the upstream is bought only once the payment is known settled."""
    rule = settle_rule(outcome, chain=chain)
    async with gateways(chain=chain) as h:
        h.world.facilitator.script(settle=[outcome])
        spent = await h.spent()
        answer = await h.pay()
        job = await h.the_job()
        expected_answer = {
            Verdict.SETTLED: (200, None, JobState.SUBMITTED),
            Verdict.REFUSED: (402, rule.refusal, JobState.PAYMENT_FAILED),
            Verdict.UNKNOWN: (503, "payment_outcome_unknown", JobState.VERIFIED),
        }[rule.at_first]
        assert (answer.status_code, error_of(answer), job.state) == expected_answer
        if rule.at_first is not Verdict.SETTLED:
            assert h.world.upstream.count("submit") == 0  # nothing bought before the charge
        job = await h.work(job.id)
        rows = await h.ledger_rows(job.id)
        if rule.finally_ is Verdict.SETTLED:
            assert (job.state, kinds(rows)) == (JobState.COMPLETED, ["charge", "upstream"])
        elif rule.finally_ is Verdict.REFUSED:
            assert (job.state, rows) == (JobState.PAYMENT_FAILED, [])
        else:
            assert (job.state, job.error_code, rows) == (
                JobState.NEEDS_ATTENTION,
                "settlement_unresolved",
                [],
            )
            assert h.world.upstream.count("submit") == 0
            again = await h.pay(h.header)  # the same payment: never asked to pay again
            assert (again.status_code, error_of(again)) == (503, "settlement_unresolved")
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize(("outcome", "chain"), SETTLE_CASES)
async def test_settle_after(gateways: Opener, outcome: Settle, chain: bool) -> None:
    """Charged once the upstream accepted the job: a refusal then leaves us out of pocket."""
    rule = settle_rule(outcome, chain=chain)
    order = SettlementOrder.SETTLE_AFTER
    async with gateways(chain=chain, settlement_order=order) as h:
        h.world.facilitator.script(settle=[outcome])
        spent = await h.spent()
        answer = await h.pay()
        job = await h.the_job()
        assert h.world.upstream.count("submit") == 1  # bought before the charge
        expected_answer = {
            Verdict.SETTLED: (200, None, JobState.SUBMITTED),
            Verdict.REFUSED: (402, rule.refusal, JobState.NEEDS_ATTENTION),
            Verdict.UNKNOWN: (503, "payment_outcome_unknown", JobState.SUBMITTED),
        }[rule.at_first]
        assert (answer.status_code, error_of(answer), job.state) == expected_answer
        job = await h.work(job.id)
        rows = await h.ledger_rows(job.id)
        if rule.finally_ is Verdict.SETTLED:
            assert (job.state, kinds(rows)) == (JobState.COMPLETED, ["upstream", "charge"])
            assert job.result is not None  # served only once charged
        else:
            code = {
                Verdict.REFUSED: "client_payment_refused_after_purchase",
                Verdict.UNRESOLVED: "settlement_unresolved",
            }[rule.finally_]
            assert (job.state, job.error_code, kinds(rows)) == (
                JobState.NEEDS_ATTENTION,
                code,
                ["upstream"],
            )
            assert job.result is None  # nothing served to a client who did not pay
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("order", ORDERS)
async def test_a_retry_of_a_served_payment_is_the_same_job(
    gateways: Opener, order: SettlementOrder
) -> None:
    async with gateways(settlement_order=order) as h:
        first = await h.pay()
        spent = await h.spent()
        again = await h.pay(h.header)
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json()["jobId"] == first.json()["jobId"]
        assert len(h.world.facilitator.settles("client")) == 1
        assert h.world.upstream.count("submit") == 1
        job = await h.the_job()
        assert await h.spent() == spent
        await money_is_consistent(h, job, spent - job.spend_reserved)


async def test_without_a_chain_a_lying_facilitator_is_believed(gateways: Opener) -> None:
    """The documented limit of running without a chain: nothing can check the claim."""
    async with gateways(chain=False) as h:
        h.world.facilitator.script(settle=[Settle.LIES])
        answer = await h.pay()
        job = await h.work((await h.the_job()).id)
        assert (answer.status_code, job.state) == (200, JobState.COMPLETED)
        (charge, _upstream) = await h.ledger_rows(job.id)
        assert charge.tx_hash not in h.world.ledger.transfers  # recorded, never moved
