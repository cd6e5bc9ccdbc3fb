"""The operator's `retry` and `refund` on jobs the gateway parked, then its worker until the
job ends: the client gets back exactly one refund transfer (x402) or one key credit
(key-paid), a settlement moves the client's money at most once, and the action is recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.api.edits import EDIT_PATH, current_offer
from app.core.db import transaction
from app.core.modes import RefundPolicy
from app.jobs.models import Job, JobState, OperatorAction
from app.jobs.policy import MAX_REFUND_ATTEMPTS, MAX_SETTLE_ATTEMPTS
from app.operator import actions
from app.operator.actions import ActionRefused
from tests.fast.chain import authorization_of
from tests.fast.checks import error_of, kinds, money_is_consistent
from tests.fast.facilitator import Settle
from tests.fast.harness import FastGateway
from tests.fast.pool import Opener
from tests.fast.upstream import Submit

FULL, IF_NOT_CHARGED = RefundPolicy.FULL, RefundPolicy.IF_UPSTREAM_NOT_CHARGED
PARKED = JobState.NEEDS_ATTENTION
CHAIN = pytest.mark.parametrize("chain", [True, False], ids=["chain", "no_chain"])


async def act(h: FastGateway, action: str, job_id: str) -> Job:
    """The operator's `retry` or `refund` of the job, as the admin API and the CLI take it."""
    async with transaction(h.gw.sessions) as session:
        if action == "retry":
            order = h.gw.settings.settlement_order
            return await actions.retry(
                session, job_id, reason="checked by hand", actor="ops", order=order
            )
        return await actions.refund(session, job_id, reason="checked by hand", actor="ops")


async def recorded(h: FastGateway, job_id: str) -> list[tuple[str, str]]:
    """The operator actions recorded for the job: (action, actor)."""
    async with h.gw.sessions() as session:
        stmt = select(OperatorAction).where(OperatorAction.job_id == job_id)
        return [(row.action, row.actor) for row in (await session.execute(stmt)).scalars()]


def refunds_to(h: FastGateway, job: Job) -> list[int]:
    """Every transfer from our hot wallet to the job's payer."""
    return h.world.ledger.moved(h.gw.settings.hot_wallet_address, job.payer)


@CHAIN
async def test_retry_an_unresolved_settlement(gateways: Opener, chain: bool) -> None:
    """Parked: every settle attempt's outcome stayed unknown (without a chain nothing moved;
    with one, the first landed while the chain could not be read). Retried: the chain is
    asked first, and the same authorization is sent again only if it shows nothing."""
    async with gateways(chain=chain) as h:
        if h.world.chain is not None:
            h.world.chain.down = True
            h.world.facilitator.script(settle=[Settle.TIMEOUT_LANDED])
        else:
            h.world.facilitator.script(settle=[Settle.TIMEOUT] * MAX_SETTLE_ATTEMPTS)
        spent = await h.spent()
        assert error_of(await h.pay()) == "payment_outcome_unknown"
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (PARKED, "settlement_unresolved")
        h.world.facilitator.client_script.clear()  # the facilitator and the chain are back
        if h.world.chain is not None:
            h.world.chain.down = False
        settles_before = len(h.world.facilitator.settles("client"))
        assert (await act(h, "retry", job.id)).state == JobState.VERIFIED
        job = await h.work(job.id)
        assert job.state == JobState.COMPLETED, job.error_code
        # With a chain the landed transfer is found: nothing is sent again.
        assert len(h.world.facilitator.settles("client")) - settles_before == (0 if chain else 1)
        assert h.world.ledger.moved(job.payer, job.pay_to) == [job.pay_amount]
        assert kinds(await h.ledger_rows(job.id)) == ["charge", "upstream"]
        assert await recorded(h, job.id) == [("retry", "ops")]
        await money_is_consistent(h, job, spent)


async def test_a_retried_settlement_that_had_landed_unseen_charges_once(gateways: Opener) -> None:
    """Without a chain, the first attempt landed but nothing can show it: the retry sends the
    same authorization (answered "nonce used", still unknown) and parks the job again, the
    client charged exactly once."""
    async with gateways(chain=False) as h:
        h.world.facilitator.script(settle=[Settle.TIMEOUT_LANDED])
        spent = await h.spent()
        assert error_of(await h.pay()) == "payment_outcome_unknown"
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (PARKED, "settlement_unresolved")
        await act(h, "retry", job.id)
        job = await h.work(job.id)
        assert (job.state, job.error_code, job.settle_tx) == (PARKED, "settlement_unresolved", None)
        assert h.world.ledger.moved(job.payer, job.pay_to) == [job.pay_amount]
        assert h.world.upstream.count("submit") == 0  # nothing bought for an unknown charge
        assert await recorded(h, job.id) == [("retry", "ops")]
        await money_is_consistent(h, job, spent)


# How a refund gets parked: refused (with or without a chain), or unknown on every attempt
# (without a chain: nothing could tell whether it moved; here nothing did).
REFUND_PARKINGS = {
    "refused-chain": (True, [Settle.REFUSED], "refund_refused"),
    "refused-no_chain": (False, [Settle.REFUSED], "refund_refused"),
    "unresolved-no_chain": (False, [Settle.TIMEOUT] * MAX_REFUND_ATTEMPTS, "refund_unresolved"),
}


@pytest.mark.parametrize("parking", list(REFUND_PARKINGS))
async def test_retry_a_parked_refund(gateways: Opener, parking: str) -> None:
    """Retried: the same stored authorization is sent again, and refunds the client once."""
    chain, script, code = REFUND_PARKINGS[parking]
    async with gateways(chain=chain, refund_policy=FULL) as h:
        h.world.upstream.script(submit=[Submit.REFUSE])
        h.world.facilitator.script(refund=script)
        await h.pay()
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (PARKED, code)
        assert refunds_to(h, job) == []
        assert job.refund_payload is not None
        nonce = authorization_of(job.refund_payload)["nonce"]
        with pytest.raises(ActionRefused) as refused:
            await act(h, "refund", job.id)  # the stored authorization may still pay
        assert refused.value.code == "job_not_refundable"
        h.world.facilitator.refund_script.clear()
        sent_before = len(h.world.facilitator.settles("refund"))
        assert (await act(h, "retry", job.id)).state == JobState.REFUNDING
        job = await h.work(job.id)
        assert job.state == JobState.REFUNDED, job.error_code
        assert job.refund_payload is not None
        assert authorization_of(job.refund_payload)["nonce"] == nonce
        assert refunds_to(h, job) == [job.pay_amount]
        assert len(h.world.facilitator.settles("refund")) == sent_before + 1
        assert len(h.world.facilitator.settles("client")) == 1
        assert kinds(await h.ledger_rows(job.id)) == ["charge", "refund"]
        assert await recorded(h, job.id) == [("retry", "ops")]


async def test_refund_a_refund_the_chain_shows_not_made(gateways: Opener) -> None:
    """Parked: the refund's authorization was used by a transfer that did not pay the client.
    Refunded by the operator: a fresh authorization, and exactly one refund to the client."""
    async with gateways(refund_policy=FULL) as h:
        h.world.upstream.script(submit=[Submit.REFUSE])
        h.world.facilitator.script(refund=[Settle.FRONTRUN])
        await h.pay()
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (PARKED, "refund_not_made")
        assert job.refund_payload is not None
        used = authorization_of(job.refund_payload)["nonce"]
        with pytest.raises(ActionRefused) as refused:
            await act(h, "retry", job.id)
        assert refused.value.code == "job_not_retryable"
        assert (await act(h, "refund", job.id)).state == JobState.REFUNDING
        job = await h.work(job.id)
        assert job.state == JobState.REFUNDED, job.error_code
        assert job.refund_payload is not None
        assert authorization_of(job.refund_payload)["nonce"] != used
        assert refunds_to(h, job) == [job.pay_amount]
        assert kinds(await h.ledger_rows(job.id)) == ["charge", "refund"]
        assert await recorded(h, job.id) == [("refund", "ops")]


async def test_refund_a_job_the_upstream_may_have_charged(gateways: Opener) -> None:
    """Parked: the upstream refused our payment, and without a chain nothing tells whether it
    took it anyway. Refunded by the operator: the worker signs and sends one refund."""
    async with gateways(chain=False, refund_policy=IF_NOT_CHARGED) as h:
        h.world.upstream.script(submit=[Submit.REFUSE])
        spent = await h.spent()
        assert error_of(await h.pay()) == "upstream_payment_refused"
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (PARKED, "upstream_payment_refused")
        with pytest.raises(ActionRefused) as refused:
            await act(h, "retry", job.id)  # a resent purchase could be refused as used
        assert refused.value.code == "job_not_retryable"
        assert (await act(h, "refund", job.id)).state == JobState.REFUNDING
        job = await h.work(job.id)
        assert (job.state, job.refund_amount) == (JobState.REFUNDED, job.pay_amount)
        assert refunds_to(h, job) == [job.pay_amount]
        assert len(h.world.facilitator.settles("refund")) == 1
        assert kinds(await h.ledger_rows(job.id)) == ["charge", "refund"]
        with pytest.raises(ActionRefused) as again:
            await act(h, "refund", job.id)
        assert again.value.code == "job_not_parked"
        assert await recorded(h, job.id) == [("refund", "ops")]
        await money_is_consistent(h, job, spent)


async def test_refund_a_key_paid_job_the_upstream_may_have_charged(gateways: Opener) -> None:
    """The same parking for a key-paid job: refunded by crediting its key, in one write."""
    async with gateways(chain=False, refund_policy=IF_NOT_CHARGED) as h:
        price = current_offer(h.gw, EDIT_PATH).terms.price_atomic
        h.world.upstream.script(submit=[Submit.REFUSE])
        key_id, secret = await h.new_key(budget_atomic=price)
        spent = await h.spent()
        assert error_of(await h.pay_with_key(secret)) == "upstream_payment_refused"
        [job] = await h.key_jobs(key_id)
        job = await h.work(job.id)
        assert (job.state, job.error_code) == (PARKED, "upstream_payment_refused")
        assert await h.key_spent(key_id) == price
        with pytest.raises(ActionRefused) as refused:
            await act(h, "retry", job.id)
        assert refused.value.code == "job_not_retryable"
        assert (await act(h, "refund", job.id)).state == JobState.REFUNDED
        job = await h.work(job.id)
        assert (job.state, job.refund_amount, job.refund_tx) == (JobState.REFUNDED, price, None)
        with pytest.raises(ActionRefused):
            await act(h, "refund", job.id)
        assert await h.key_ledger(key_id) == [("debit", job.id, price), ("credit", job.id, price)]
        assert await h.key_spent(key_id) == 0
        assert h.world.facilitator.calls == []  # no verify, no settle, no refund transfer
        assert kinds(await h.ledger_rows(job.id)) == []
        assert await recorded(h, job.id) == [("refund", "ops")]
        await money_is_consistent(h, job, spent)
