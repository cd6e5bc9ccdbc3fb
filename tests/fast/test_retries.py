"""The client's own retries: the same payment resumes its job (never a second charge), an
idempotency key buys once, and a payer's refunds the operator pays for are limited."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account

from app.core.modes import RefundPolicy, SettlementOrder
from app.jobs.models import JobState
from app.jobs.policy import MAX_SETTLE_ATTEMPTS
from tests.fast.checks import error_of, money_is_consistent
from tests.fast.facilitator import Settle
from tests.fast.pool import Opener
from tests.fast.rules import Verdict, settle_rule
from tests.fast.upstream import Status

UNKNOWN_FIRST = [
    pytest.param(outcome, chain, id=f"{outcome}-{'chain' if chain else 'no_chain'}")
    for outcome in Settle
    for chain in (True, False)
    if settle_rule(outcome, chain=chain).at_first is Verdict.UNKNOWN
]


@pytest.mark.parametrize(("outcome", "chain"), UNKNOWN_FIRST)
async def test_retrying_the_same_payment_resumes_an_unknown_settlement(
    gateways: Opener, outcome: Settle, chain: bool
) -> None:
    """Told "retry with the SAME payment", the client does; the worker never runs."""
    rule = settle_rule(outcome, chain=chain)
    async with gateways(chain=chain) as h:
        h.world.facilitator.script(settle=[outcome])
        spent = await h.spent()
        answers = [await h.pay()]
        job = await h.the_job()
        while error_of(answers[-1]) == "payment_outcome_unknown":
            assert len(answers) <= MAX_SETTLE_ATTEMPTS, [error_of(a) for a in answers]
            await h.make_due(job.id)  # the backoff is over
            answers.append(await h.pay(h.header))
        expected = {
            Verdict.SETTLED: (200, None),
            Verdict.REFUSED: (402, rule.refusal),
            Verdict.UNRESOLVED: (503, "settlement_unresolved"),
        }[rule.finally_]
        assert (answers[-1].status_code, error_of(answers[-1])) == expected
        await money_is_consistent(h, await h.the_job(), spent)


async def test_a_key_whose_payment_was_refused_buys_with_the_next_payment(
    gateways: Opener,
) -> None:
    async with gateways() as h:
        h.world.facilitator.script(settle=[Settle.REFUSED])
        refused = await h.pay(key="edit-1")
        assert refused.status_code == 402
        refused_job = await h.the_job()
        served = await h.pay(key="edit-1")  # a new payment, the same key
        assert served.status_code == 200, served.text
        assert served.json()["jobId"] != refused_job.id
        assert [c.outcome for c in h.world.facilitator.settles("client")] == [
            Settle.REFUSED,
            Settle.SETTLED,
        ]


async def test_a_served_key_never_settles_another_payment(gateways: Opener) -> None:
    async with gateways() as h:
        first = await h.pay(key="edit-2")
        spent = await h.spent()
        again = await h.pay(key="edit-2")  # signed anew: another nonce
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json()["jobId"] == first.json()["jobId"]
        assert len(h.world.facilitator.settles("client")) == 1
        assert await h.job() is None  # the second payment bought nothing
        assert await h.spent() == spent


async def test_refunds_the_operator_pays_for_are_limited_per_payer(gateways: Opener) -> None:
    """Under `full`, a payer whose accepted jobs keep failing is refunded only so often."""
    payer = Account.create()
    ends = []
    for _ in range(2):
        settings = {"refund_policy": RefundPolicy.FULL, "refunds_per_payer_per_day": 1}
        async with gateways(payer=payer, **settings) as h:
            h.world.upstream.script(status=[Status.FAILED])
            spent = await h.spent()
            await h.pay()
            job = await h.work((await h.the_job()).id)
            await money_is_consistent(h, job, spent)
            ends.append((job.state, job.error_code))
    assert ends == [
        (JobState.REFUNDED, "upstream_job_failed"),
        (JobState.FAILED, "refund_limit_reached"),
    ]


async def test_one_payment_sent_twice_at_once_is_charged_once(gateways: Opener) -> None:
    async with gateways() as h:
        header = await h.sign()
        spent = await h.spent()
        answers = await asyncio.gather(h.pay(header), h.pay(header))
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[0].json()["jobId"] == answers[1].json()["jobId"]
        assert len(h.world.facilitator.settles("client")) == 1
        assert h.world.upstream.count("submit") == 1
        await money_is_consistent(h, await h.the_job(), spent)


async def test_settling_after_a_payer_waits_for_its_unsettled_job(gateways: Opener) -> None:
    """One unsettled job per payer: a second payment meanwhile buys nothing."""
    async with gateways(settlement_order=SettlementOrder.SETTLE_AFTER) as h:
        h.world.facilitator.script(settle=[Settle.TIMEOUT])
        first = await h.pay()
        assert error_of(first) == "payment_outcome_unknown"
        job = await h.the_job()
        second = await h.pay()
        assert (second.status_code, error_of(second)) == (409, "unsettled_payment_in_flight")
        assert await h.job() is None
        assert h.world.upstream.count("submit") == 1
        assert (await h.work(job.id)).state == JobState.COMPLETED
        third = await h.pay()
        assert third.status_code == 200, third.text


async def test_one_key_with_two_payments_at_once_buys_once(gateways: Opener) -> None:
    async with gateways() as h:
        first, second = await h.sign(), await h.sign()
        spent = await h.spent()
        answers = await asyncio.gather(h.pay(first, key="edit-3"), h.pay(second, key="edit-3"))
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[0].json()["jobId"] == answers[1].json()["jobId"]
        assert len(h.world.facilitator.settles("client")) == 1
        assert h.world.upstream.count("submit") == 1
        job_id = answers[0].json()["jobId"]
        job = await h.work(job_id)
        assert job.state == JobState.COMPLETED
        await money_is_consistent(h, job, spent)
