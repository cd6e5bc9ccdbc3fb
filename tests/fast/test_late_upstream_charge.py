"""A refund that depends on the upstream not having charged us waits until our upstream
authorization can no longer be executed: the upstream (or its late settlement) may still
cash it after it answered with a failure."""

from __future__ import annotations

import time
from datetime import UTC

import pytest
from x402.http import decode_payment_signature_header

from app.core.modes import RefundPolicy
from app.jobs.models import Job, JobState
from app.jobs.refund_gate import CHARGED_LATE
from app.jobs.refund_limit import CODE as LIMIT_REACHED
from app.jobs.refunding import refund
from app.jobs.upstream_charge import EXPIRY_GRACE_S
from app.jobs.views import money_outcome, refund_view
from tests.fast.checks import error_of, kinds, money_is_consistent
from tests.fast.harness import FastGateway
from tests.fast.pool import Opener
from tests.fast.upstream import Submit

FULL, DEFAULT = RefundPolicy.FULL, RefundPolicy.IF_UPSTREAM_NOT_CHARGED
POLICIES = pytest.mark.parametrize("policy", [DEFAULT, FULL])


async def failed_unpaid(h: FastGateway, *, key: str | None = None) -> Job:
    """A paid request whose upstream refuses our payment (nothing moved): the job after it."""
    h.world.upstream.script(submit=[Submit.REFUSE])
    answer = await (h.pay_with_key(key) if key else h.pay())
    assert error_of(answer) == "upstream_payment_refused"
    return await h.the_job() if key is None else answer_job(h, answer.json())


def answer_job(h: FastGateway, body: dict[str, object]) -> Job:
    details = body["details"]
    assert isinstance(details, dict)
    return details["jobId"]  # type: ignore[no-any-return]


def cash_it(h: FastGateway, job: Job) -> None:
    """The upstream executes our stored authorization after all."""
    assert job.upstream_payment_header is not None
    assert h.world.ledger.execute_payload(
        decode_payment_signature_header(job.upstream_payment_header)
    )


def deferred_until(job: Job) -> float:
    assert job.next_check_at is not None
    return job.next_check_at.replace(tzinfo=job.next_check_at.tzinfo or UTC).timestamp()


@POLICIES
async def test_a_live_authorization_postpones_the_refund(
    gateways: Opener, policy: RefundPolicy
) -> None:
    async with gateways(refund_policy=policy) as h:
        spent = await h.spent()
        job = await failed_unpaid(h)
        assert job.upstream_valid_before is not None
        assert (job.state, job.refund_payload) == (JobState.REFUNDING, None)
        assert deferred_until(job) >= job.upstream_valid_before + EXPIRY_GRACE_S - 1
        view = refund_view(job)
        assert view is not None
        assert view["status"] == "pending"
        assert view["nextAttemptAt"] is not None
        assert "decided once that payment expires" in money_outcome(job)  # not "being refunded"
        job = await refund(h.gw, job.id)  # the worker, before it expired: postponed
        assert (job.state, job.refund_payload) == (JobState.REFUNDING, None)
        assert deferred_until(job) >= job.upstream_valid_before + EXPIRY_GRACE_S - 1
        assert h.world.facilitator.settles("refund") == []
        job = await h.work(job.id)  # expired unused: refunded, once
        assert job.state == JobState.REFUNDED
        assert kinds(await h.ledger_rows(job.id)) == ["charge", "refund"]
        await money_is_consistent(h, job, spent)


async def test_cashed_late_the_refund_is_withdrawn(gateways: Opener) -> None:
    async with gateways(refund_policy=DEFAULT) as h:
        spent = await h.spent()
        job = await failed_unpaid(h)
        cash_it(h, job)
        job = await h.work(job.id)
        assert (job.state, job.error_code) == (JobState.FAILED, CHARGED_LATE)
        assert (job.refund_amount, job.upstream_tx) == (None, job.upstream_tx)
        assert job.upstream_tx is not None
        assert refund_view(job) is None
        assert sorted(kinds(await h.ledger_rows(job.id))) == ["charge", "upstream"]
        assert h.world.facilitator.settles("refund") == []
        await money_is_consistent(h, job, spent)


@POLICIES
async def test_an_unreadable_chain_retries_never_refunds(
    gateways: Opener, policy: RefundPolicy
) -> None:
    async with gateways(refund_policy=policy) as h:
        assert h.world.chain is not None
        spent = await h.spent()
        job = await failed_unpaid(h)
        h.world.chain.down = True
        job = await h.step(job.id)
        assert (job.state, job.refund_payload) == (JobState.REFUNDING, None)
        assert deferred_until(job) > time.time() + 10  # asked again later
        assert h.world.facilitator.settles("refund") == []
        h.world.chain.down = False
        job = await h.work(job.id)
        assert job.state == JobState.REFUNDED
        await money_is_consistent(h, job, spent)


async def test_a_use_nobody_can_match_is_parked(gateways: Opener) -> None:
    """Used, but its transaction is not found: whether the upstream charged us is unknown."""
    async with gateways(refund_policy=DEFAULT) as h:
        assert h.world.chain is not None
        spent = await h.spent()
        job = await failed_unpaid(h)
        cash_it(h, job)
        h.world.chain.hidden.add(h.gw.settings.hot_wallet_address.lower())
        job = await h.work(job.id)
        assert (job.state, job.error_code) == (JobState.NEEDS_ATTENTION, "upstream_payment_refused")
        assert h.world.facilitator.settles("refund") == []
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("cashed", [False, True], ids=["expired_unused", "cashed_late"])
async def test_a_key_paid_job_is_credited_only_once_it_expired_unused(
    gateways: Opener, cashed: bool
) -> None:
    async with gateways(refund_policy=DEFAULT) as h:
        key_id, secret = await h.new_key()
        job_id = answer_job(h, (await _refused_with_key(h, secret)).json())
        [job] = await h.key_jobs(key_id)
        assert job.id == job_id
        assert job.state == JobState.REFUNDING
        job = await refund(h.gw, job.id)  # still live: no credit
        assert job.state == JobState.REFUNDING
        assert [kind for kind, _, _ in await h.key_ledger(key_id)] == ["debit"]
        if cashed:
            cash_it(h, job)
        job = await h.work(job.id)
        if cashed:
            assert (job.state, job.error_code) == (JobState.FAILED, CHARGED_LATE)
            assert [kind for kind, _, _ in await h.key_ledger(key_id)] == ["debit"]
        else:
            assert job.state == JobState.REFUNDED
            assert [kind for kind, _, _ in await h.key_ledger(key_id)] == ["debit", "credit"]


async def _refused_with_key(h: FastGateway, secret: str):  # type: ignore[no-untyped-def]
    h.world.upstream.script(submit=[Submit.REFUSE])
    answer = await h.pay_with_key(secret)
    assert error_of(answer) == "upstream_payment_refused"
    return answer


async def test_full_counts_a_late_charged_refund_against_the_limit(gateways: Opener) -> None:
    """Under `full` a refund the upstream charged us for counts against the payer's limit,
    also when the charge landed after the failure."""
    async with gateways(refund_policy=FULL, refunds_per_payer_per_day=1) as h:
        first = await failed_unpaid(h)
        cash_it(h, first)
        first = await h.work(first.id)
        assert first.state == JobState.REFUNDED  # the one refund allowed, paid by the operator
        assert first.upstream_tx is not None
        assert h.world.chain is not None
        h.world.chain.ahead_s = 0  # the SDK signs by the wall clock: the chain's back on it
        second = await failed_unpaid(h)
        cash_it(h, second)
        second = await h.work(second.id)
        assert (second.state, second.error_code) == (JobState.FAILED, LIMIT_REACHED)
        assert second.refund_amount is None
        assert sorted(kinds(await h.ledger_rows(second.id))) == ["charge", "upstream"]


async def test_our_upstream_authorization_lives_no_longer_than_the_setting(
    gateways: Opener,
) -> None:
    async with gateways(upstream_auth_validity_s=30) as h:
        answer = await h.pay()
        assert answer.status_code == 200, answer.text
        job = await h.the_job()
        assert job.upstream_valid_before is not None
        assert job.upstream_valid_before <= time.time() + 31
