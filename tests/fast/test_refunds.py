"""Every refund settle outcome, with and without a chain: the client is refunded at most
once, and only a refund the chain (or, without one, the facilitator) confirms is recorded."""

from __future__ import annotations

import pytest

from app.core.modes import RefundPolicy
from app.jobs import refunding
from app.jobs.models import JobState
from tests.fast.chain import authorization_of
from tests.fast.checks import error_of, kinds, money_is_consistent
from tests.fast.facilitator import Settle
from tests.fast.pool import Opener
from tests.fast.rules import Verdict, refund_end, settle_rule
from tests.fast.upstream import Submit

FULL = RefundPolicy.FULL
# Without a chain a lying facilitator is believed (see test_client_payment.py).
REFUND_CASES = [
    pytest.param(outcome, chain, id=f"{outcome}-{'chain' if chain else 'no_chain'}")
    for outcome in Settle
    for chain in (True, False)
    if chain or outcome is not Settle.LIES
]


@pytest.mark.parametrize(("outcome", "chain"), REFUND_CASES)
async def test_refund_outcome(gateways: Opener, outcome: Settle, chain: bool) -> None:
    end, code = refund_end(outcome, chain=chain)
    async with gateways(chain=chain, refund_policy=FULL) as h:
        h.world.upstream.script(submit=[Submit.REFUSE])  # fails at once: refunded in the request
        h.world.facilitator.script(refund=[outcome])
        spent = await h.spent()
        answer = await h.pay()
        # The request answers with where the refund stands when it returns. With a chain the
        # refund waits until our upstream authorization expired unused: the worker makes it.
        at_first = settle_rule(outcome, chain=chain).at_first
        ended_at_once = not chain and at_first is not Verdict.UNKNOWN
        told = code if ended_at_once and code else "upstream_payment_refused"
        assert (answer.status_code, error_of(answer)) == (502, told)
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (end, code or "upstream_payment_refused")
        expected = ["charge", "refund"] if end is JobState.REFUNDED else ["charge"]
        assert kinds(await h.ledger_rows(job.id)) == expected
        # One authorization, however many attempts: its nonce never changes.
        assert job.refund_payload is not None
        assert job.refund_nonce == str(authorization_of(job.refund_payload)["nonce"]).lower()
        await money_is_consistent(h, job, spent)


async def test_an_expired_unused_refund_is_signed_again(
    gateways: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody can execute an expired authorization: replacing it cannot refund twice."""
    async with gateways(refund_policy=FULL) as h:
        h.world.upstream.script(submit=[Submit.REFUSE])
        h.world.facilitator.script(refund=[Settle.TIMEOUT])  # nothing moved, no answer
        spent = await h.spent()
        await h.pay()
        job = await h.the_job()
        job = await h.step(job.id)  # our upstream authorization expired: the first attempt
        assert job.state == JobState.REFUNDING
        assert job.refund_payload is not None
        first = authorization_of(job.refund_payload)
        expired = int(first["validBefore"]) + 1
        monkeypatch.setattr(refunding, "time", _Clock(expired))
        job = await h.work(job.id)
        assert job.state == JobState.REFUNDED
        assert job.refund_payload is not None
        assert authorization_of(job.refund_payload)["nonce"] != first["nonce"]
        assert len(h.world.facilitator.settles("refund")) == 2
        await money_is_consistent(h, job, spent)


async def test_an_expired_refund_that_was_used_is_kept(
    gateways: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain shows it executed: it is the refund, never replaced by a second one."""
    async with gateways(refund_policy=FULL) as h:
        h.world.upstream.script(submit=[Submit.REFUSE])
        h.world.facilitator.script(refund=[Settle.TIMEOUT_LANDED])
        spent = await h.spent()
        assert h.world.chain is not None
        hot_wallet = h.gw.settings.hot_wallet_address.lower()
        h.world.chain.hidden.add(hot_wallet)  # the refund's landing is not seen yet
        await h.pay()
        job = await h.the_job()
        job = await h.step(job.id)  # our upstream authorization expired: the first attempt
        assert job.state == JobState.REFUNDING
        assert job.refund_payload is not None
        expired = int(authorization_of(job.refund_payload)["validBefore"]) + 1
        monkeypatch.setattr(refunding, "time", _Clock(expired))
        h.world.chain.hidden.clear()
        job = await h.work(job.id)
        assert job.state == JobState.REFUNDED
        assert len(h.world.facilitator.settles("refund")) == 2  # the same authorization again
        await money_is_consistent(h, job, spent)


class _Clock:
    """The `time` module as app.jobs.refunding sees it: stopped at `now`."""

    def __init__(self, now: float) -> None:
        self._now = now

    def time(self) -> float:
        return self._now


async def test_a_refusal_after_a_refund_that_landed_unseen_is_not_a_refusal(
    gateways: Opener,
) -> None:
    """The first attempt landed but a lagging node did not show it; the retry is refused
    (e.g. its authorization expired meanwhile). That refusal proves nothing about the first
    attempt: the chain shows the client refunded, so the job is refunded, not parked as
    "refund refused" for an operator who might refund again."""
    async with gateways(refund_policy=FULL) as h:
        assert h.world.chain is not None
        h.world.upstream.script(submit=[Submit.REFUSE])
        h.world.facilitator.script(refund=[Settle.TIMEOUT_LANDED, Settle.REFUSED])
        h.world.chain.hidden.add(h.gw.settings.hot_wallet_address.lower())
        spent = await h.spent()
        await h.pay()
        job = await h.the_job()
        assert job.state == JobState.REFUNDING  # unknown: retried
        h.world.chain.hidden.clear()
        job = await h.work(job.id)
        landed = next(c.tx for c in h.world.facilitator.settles("refund") if c.tx)
        assert (job.state, job.refund_tx) == (JobState.REFUNDED, landed)
        assert kinds(await h.ledger_rows(job.id)) == ["charge", "refund"]
        await money_is_consistent(h, job, spent)
