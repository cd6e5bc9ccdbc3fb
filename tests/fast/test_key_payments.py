"""Jobs paid with an API key's budget: debited once with the job, never settled, and credited
back to the key (never refunded on chain) when the refund policy refunds a failed job."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.api.edits import EDIT_PATH, current_offer
from app.core.modes import RefundPolicy, SettlementOrder
from app.jobs.key_purchase import purchase_with_key
from app.jobs.models import JobState
from app.jobs.repository import utcnow
from app.keys.auth import authenticate
from sandbox.pay import EDIT_BODY
from tests.fast.checks import error_of, kinds, money_is_consistent
from tests.fast.crashes import Crash
from tests.fast.harness import FastGateway
from tests.fast.pool import Opener
from tests.fast.rules import failed_job_end, known_upstream_charge
from tests.fast.upstream import Status, Submit

FULL = RefundPolicy.FULL
# A key-paid job has no x402 payment: the settlement order must change nothing for it.
ORDERS = pytest.mark.parametrize("order", list(SettlementOrder))


def price_of(h: FastGateway) -> int:
    """What a key pays for one edit (charge_at=sale: the x402 price)."""
    return current_offer(h.gw, EDIT_PATH).terms.price_atomic


async def key_money_is_consistent(h: FastGateway, key_id: str, job_id: str) -> None:
    """A key-paid job never touches the facilitator; its key's spend is its ledger's."""
    assert h.world.facilitator.calls == [], h.world.facilitator.calls  # no verify, no settle
    movements = await h.key_ledger(key_id)
    debits = sum(amount for kind, _, amount in movements if kind == "debit")
    credits = sum(amount for kind, _, amount in movements if kind == "credit")
    assert await h.key_spent(key_id) == debits - credits
    assert "charge" not in kinds(await h.ledger_rows(job_id))
    assert "refund" not in kinds(await h.ledger_rows(job_id))


@ORDERS
async def test_a_key_paid_job_is_served(gateways: Opener, order: SettlementOrder) -> None:
    async with gateways(settlement_order=order) as h:
        price = price_of(h)
        key_id, secret = await h.new_key(budget_atomic=3 * price)
        spent = await h.spent()
        answer = await h.pay_with_key(secret)
        assert answer.status_code == 200, answer.text
        [job] = await h.key_jobs(key_id)
        job = await h.work(job.id)
        assert (job.state, job.settle_tx, job.pay_amount) == (JobState.COMPLETED, None, price)
        assert await h.key_ledger(key_id) == [("debit", job.id, price)]
        assert await h.key_spent(key_id) == price
        assert kinds(await h.ledger_rows(job.id)) == ["upstream"]
        await key_money_is_consistent(h, key_id, job.id)
        await money_is_consistent(h, job, spent)


@dataclass(frozen=True)
class Failure:
    """An upstream failure of a key-paid job, and the code it fails with."""

    submit: Submit
    status: Status | None
    code: str

    @property
    def paid(self) -> bool:
        """Whether our payment to the upstream executed (and its answer said so)."""
        return self.submit is Submit.ACCEPT


FAILURES = {
    "job_failed": Failure(Submit.ACCEPT, Status.FAILED, "upstream_job_failed"),
    "payment_refused": Failure(Submit.REFUSE, None, "upstream_payment_refused"),
}
FAILURE_CASES = [
    pytest.param(name, policy, chain, id=f"{name}-{policy}-{'chain' if chain else 'no_chain'}")
    for name in FAILURES
    for policy in RefundPolicy
    for chain in (True, False)
]


@ORDERS
@pytest.mark.parametrize(("name", "policy", "chain"), FAILURE_CASES)
async def test_a_failed_key_paid_job_is_credited_by_policy(
    gateways: Opener, name: str, policy: RefundPolicy, chain: bool, order: SettlementOrder
) -> None:
    failure = FAILURES[name]
    charged = known_upstream_charge(paid=failure.paid, tx_in_answer=failure.paid, chain=chain)
    end = failed_job_end(policy, charged)
    async with gateways(chain=chain, refund_policy=policy, settlement_order=order) as h:
        price = price_of(h)
        h.world.upstream.script(
            submit=[failure.submit], status=[failure.status] if failure.status else []
        )
        key_id, secret = await h.new_key(budget_atomic=price)
        spent = await h.spent()
        answer = await h.pay_with_key(secret)
        if failure.paid:
            assert answer.status_code == 200, answer.text  # fails later, while polled
        else:
            assert (answer.status_code, error_of(answer)) == (502, failure.code)
        [job] = await h.key_jobs(key_id)
        job = await h.work(job.id)
        job = await h.work(job.id)  # a second pass credits nothing more
        assert (job.state, job.error_code) == (end, failure.code)
        credited = end is JobState.REFUNDED
        expected = [("debit", job.id, price)] + ([("credit", job.id, price)] if credited else [])
        assert await h.key_ledger(key_id) == expected
        assert await h.key_spent(key_id) == (0 if credited else price)
        assert job.refund_amount == (price if credited else None)
        assert (job.refund_tx, job.refund_payload) == (None, None)  # nothing signed or sent
        assert kinds(await h.ledger_rows(job.id)) == (["upstream"] if charged else [])
        await key_money_is_consistent(h, key_id, job.id)
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("budget", ["budget_atomic", "daily_budget_atomic"])
async def test_an_exhausted_budget_is_a_402_and_debits_nothing(
    gateways: Opener, budget: str
) -> None:
    async with gateways() as h:
        price = price_of(h)
        key_id, secret = await h.new_key(**{budget: price + price // 2})  # room for one job
        assert (await h.pay_with_key(secret)).status_code == 200
        refused = await h.pay_with_key(secret)
        assert (refused.status_code, error_of(refused)) == (402, "budget_exhausted")
        which = "total" if budget == "budget_atomic" else "daily"
        assert refused.json()["details"]["budget"] == which
        assert refused.json()["accepts"], "the 402 offers the x402 payment instead"
        [job] = await h.key_jobs(key_id)
        assert await h.key_ledger(key_id) == [("debit", job.id, price)]
        assert await h.key_spent(key_id) == price
        assert h.world.upstream.count("submit") == 1  # nothing bought for the refused request
        await key_money_is_consistent(h, key_id, job.id)


@pytest.mark.parametrize("upstream", [Submit.ACCEPT, Submit.REFUSE])
async def test_resumed_after_a_crash_past_the_debit(
    gateways: Opener, crash_at: list[str], upstream: Submit
) -> None:
    """The process dies once the job and its debit are committed: a restarted worker buys
    (or fails and credits) the job without debiting the key again."""
    async with gateways(refund_policy=FULL) as h:
        price = price_of(h)
        h.world.upstream.script(submit=[upstream])
        key_id, secret = await h.new_key(budget_atomic=2 * price)
        spent = await h.spent()
        caller = await authenticate(h.gw.autocommit, f"Bearer {secret}", utcnow())
        crash_at.append("after_key_debit")
        with pytest.raises(Crash):
            await purchase_with_key(
                h.gw, key=caller, route=EDIT_PATH, body=EDIT_BODY, sale_price=price,
                idempotency_key=None,
            )  # fmt: skip
        crash_at.clear()
        [job] = await h.key_jobs(key_id)
        assert job.state == JobState.PAID
        assert h.world.upstream.count("submit") == 0
        world = h.world
    async with gateways(world, restarted=True, refund_policy=FULL) as restarted:
        job = await restarted.work(job.id, claimed=True)
        served = upstream is Submit.ACCEPT
        assert job.state == (JobState.COMPLETED if served else JobState.REFUNDED)
        credit = [] if served else [("credit", job.id, price)]
        assert await restarted.key_ledger(key_id) == [("debit", job.id, price), *credit]
        assert await restarted.key_spent(key_id) == (price if served else 0)
        assert world.upstream.count("submit") == 1
        await key_money_is_consistent(restarted, key_id, job.id)
        await money_is_consistent(restarted, job, spent)


async def test_a_repeated_idempotency_key_debits_once(gateways: Opener) -> None:
    async with gateways() as h:
        price = price_of(h)
        key_id, secret = await h.new_key(budget_atomic=3 * price)
        first = await h.pay_with_key(secret, key="order-1")
        again = await h.pay_with_key(secret, key="order-1")
        assert (first.status_code, again.status_code) == (200, 200), again.text
        assert first.json()["jobId"] == again.json()["jobId"]
        [job] = await h.key_jobs(key_id)
        assert await h.key_ledger(key_id) == [("debit", job.id, price)]
        assert h.world.upstream.count("submit") == 1
        await key_money_is_consistent(h, key_id, job.id)


async def test_a_credited_job_gives_its_day_back(gateways: Opener) -> None:
    """The credit lowers the day's spend too: the day's budget pays for the next job."""
    async with gateways(refund_policy=FULL) as h:
        price = price_of(h)
        h.world.upstream.script(submit=[Submit.REFUSE])
        key_id, secret = await h.new_key(daily_budget_atomic=price)
        assert error_of(await h.pay_with_key(secret)) == "upstream_payment_refused"
        # Credited once our upstream authorization expired unused (the worker decides it).
        [pending] = await h.key_jobs(key_id)
        assert (await h.work(pending.id)).state == JobState.REFUNDED
        served = await h.pay_with_key(secret)
        assert served.status_code == 200, served.text
        jobs = {job.state: job for job in await h.key_jobs(key_id)}
        failed, bought = jobs[JobState.REFUNDED], jobs[JobState.SUBMITTED]
        debit, credit = ("debit", failed.id, price), ("credit", failed.id, price)
        assert await h.key_ledger(key_id) == [debit, credit, ("debit", bought.id, price)]
        assert await h.key_spent(key_id) == price
