"""Every upstream outcome after the client paid, under every refund policy, with and without
a chain: the answer, where the job ends, the ledger, the refund (at most one)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.core.modes import RefundPolicy, SettlementOrder
from app.jobs.models import JobState
from app.jobs.policy import MAX_UPSTREAM_ATTEMPTS
from app.jobs.polling import MAX_BAD_STATUS_READS
from tests.fast.checks import error_of, kinds, money_is_consistent
from tests.fast.pool import Opener
from tests.fast.rules import failed_job_end, known_upstream_charge
from tests.fast.upstream import Quote, Status, Submit

# Answers that say the upstream took our payment and made the job, readably.
RECEIPTED = {Submit.ACCEPT, Submit.ELSEWHERE}
# Answers that end the purchase at once (retrying cannot help); the others are retried.
DEFINITE = {Submit.REFUSE, Submit.REJECT, Submit.ELSEWHERE}
PAID = {Submit.ACCEPT, Submit.ELSEWHERE, Submit.MALFORMED}


@dataclass(frozen=True)
class Upstream:
    """What the upstream answers, and the code the job fails with (None: served)."""

    submits: tuple[Submit, ...]
    statuses: tuple[Status, ...] = ()
    failure: str | None = None

    @property
    def paid(self) -> bool:
        """Whether our payment to the upstream was executed."""
        return any(s in PAID for s in self.submits)

    @property
    def receipt(self) -> bool:
        """Whether an answer we could read named the upstream's settlement."""
        return any(s in RECEIPTED for s in self.submits)

    @property
    def fails_in_request(self) -> bool:
        """Whether the paid request itself sees the job fail."""
        return self.submits[0] in DEFINITE and self.failure is not None


RETRIES = MAX_UPSTREAM_ATTEMPTS
BAD_READS = MAX_BAD_STATUS_READS
SCENARIOS = {
    "served": Upstream((Submit.ACCEPT,), (Status.COMPLETED,)),
    "served_after_pending": Upstream((Submit.ACCEPT,), (Status.PROCESSING, Status.COMPLETED)),
    "served_after_status_outage": Upstream((Submit.ACCEPT,), (Status.DOWN, Status.COMPLETED)),
    "served_after_a_bad_read": Upstream((Submit.ACCEPT,), (Status.MALFORMED, Status.COMPLETED)),
    "served_after_unreachable": Upstream((Submit.UNREACHABLE, Submit.ACCEPT)),
    "job_failed": Upstream((Submit.ACCEPT,), (Status.FAILED,), "upstream_job_failed"),
    "job_lost": Upstream((Submit.ACCEPT,), (Status.LOST,), "upstream_job_lost"),
    "status_malformed": Upstream(
        (Submit.ACCEPT,), (Status.MALFORMED,) * BAD_READS, "upstream_status_unreadable"
    ),
    "status_oversize": Upstream(
        (Submit.ACCEPT,), (Status.OVERSIZE,) * BAD_READS, "upstream_status_unreadable"
    ),
    "status_url_elsewhere": Upstream((Submit.ELSEWHERE,), (), "upstream_status_url_refused"),
    "payment_refused": Upstream((Submit.REFUSE,), (), "upstream_payment_refused"),
    "request_rejected": Upstream((Submit.REJECT,), (), "upstream_rejected"),
    "unreachable": Upstream((Submit.UNREACHABLE,) * RETRIES, (), "upstream_unreachable"),
    "server_errors": Upstream((Submit.ERROR_5XX,) * RETRIES, (), "upstream_http_error"),
    # Paid, but the answer cut off: the resent payment is refused as used.
    "acceptance_unreadable": Upstream((Submit.MALFORMED,), (), "upstream_payment_refused"),
}


# A served job never consults the refund policy: one policy is enough for it.
CASES = [
    pytest.param(name, policy, chain, id=f"{name}-{policy}-{'chain' if chain else 'no_chain'}")
    for name, upstream in SCENARIOS.items()
    for policy in (RefundPolicy if upstream.failure else [RefundPolicy.IF_UPSTREAM_NOT_CHARGED])
    for chain in (True, False)
]


@pytest.mark.parametrize(("name", "policy", "chain"), CASES)
async def test_upstream_outcome(
    gateways: Opener, name: str, policy: RefundPolicy, chain: bool
) -> None:
    upstream = SCENARIOS[name]
    charged = known_upstream_charge(paid=upstream.paid, tx_in_answer=upstream.receipt, chain=chain)
    end = JobState.COMPLETED if upstream.failure is None else failed_job_end(policy, charged)
    async with gateways(chain=chain, refund_policy=policy) as h:
        h.world.upstream.script(submit=list(upstream.submits), status=list(upstream.statuses))
        spent = await h.spent()
        answer = await h.pay()
        if upstream.fails_in_request:
            assert (answer.status_code, error_of(answer)) == (502, upstream.failure)
        else:
            assert answer.status_code == 200, answer.text
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (end, upstream.failure)
        expected_rows = {"charge"} | ({"upstream"} if charged else set())
        if end is JobState.REFUNDED:
            expected_rows.add("refund")
        assert sorted(kinds(await h.ledger_rows(job.id))) == sorted(expected_rows)
        refunds = h.world.facilitator.settles("refund")
        assert len(refunds) == (1 if end is JobState.REFUNDED else 0)
        assert h.world.upstream.count("submit") == len(upstream.submits) + (
            1 if Submit.MALFORMED in upstream.submits else 0  # the resent payment
        )
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize(
    ("quote", "code"),
    [
        (Quote.UNREACHABLE, "upstream_unavailable"),
        (Quote.ABOVE_PAID, "upstream_price_above_paid"),
        (Quote.TOO_EXPENSIVE, "upstream_price_above_ceiling"),
    ],
)
async def test_no_sale_when_the_upstream_does_not_quote_a_price_we_pay(
    gateways: Opener, quote: Quote, code: str
) -> None:
    async with gateways() as h:
        h.world.upstream.script(quote=[quote])
        spent = await h.spent()
        answer = await h.pay()
        assert (answer.status_code, error_of(answer)) == (503, code)
        assert await h.job() is None
        assert h.world.facilitator.settles("client") == []
        assert await h.spent() == spent


async def test_no_sale_above_the_daily_spend_cap(gateways: Opener) -> None:
    async with gateways(daily_upstream_cap_atomic=1) as h:
        spent = await h.spent()
        answer = await h.pay()
        assert (answer.status_code, error_of(answer)) == (503, "daily_spend_cap_reached")
        assert await h.job() is None
        assert h.world.facilitator.settles("client") == []
        assert h.world.upstream.count("submit") == 0
        assert await h.spent() == spent


# Settling after the upstream: the client is charged only once the upstream accepted the job
# readably (on an allowed origin); a job that fails before that charged nobody but us.
CHARGES_THE_CLIENT = {Submit.ACCEPT}


def _charges_the_client(upstream: Upstream) -> bool:
    return upstream.submits[-1] in CHARGES_THE_CLIENT


# The refund policy matters only for a charged client whose job failed.
CASES_AFTER = [
    pytest.param(name, policy, chain, id=f"{name}-{policy}-{'chain' if chain else 'no_chain'}")
    for name, upstream in SCENARIOS.items()
    for policy in (
        RefundPolicy
        if upstream.failure and _charges_the_client(upstream)
        else [RefundPolicy.IF_UPSTREAM_NOT_CHARGED]
    )
    for chain in (True, False)
]


@pytest.mark.parametrize(("name", "policy", "chain"), CASES_AFTER)
async def test_upstream_outcome_settling_after(
    gateways: Opener, name: str, policy: RefundPolicy, chain: bool
) -> None:
    upstream = SCENARIOS[name]
    charged = known_upstream_charge(paid=upstream.paid, tx_in_answer=upstream.receipt, chain=chain)
    client_charged = _charges_the_client(upstream)
    if upstream.failure is None:
        end = JobState.COMPLETED
    elif client_charged:
        end = failed_job_end(policy, charged)
    else:  # an uncharged client has nothing to get back
        end = JobState.FAILED
    order = SettlementOrder.SETTLE_AFTER
    async with gateways(chain=chain, refund_policy=policy, settlement_order=order) as h:
        h.world.upstream.script(submit=list(upstream.submits), status=list(upstream.statuses))
        spent = await h.spent()
        answer = await h.pay()
        if upstream.fails_in_request:
            assert (answer.status_code, error_of(answer)) == (502, upstream.failure)
        else:
            assert answer.status_code == 200, answer.text
        job = await h.work((await h.the_job()).id)
        assert (job.state, job.error_code) == (end, upstream.failure)
        expected_rows = {"upstream"} if charged else set()
        expected_rows |= {"charge"} if client_charged else set()
        expected_rows |= {"refund"} if end is JobState.REFUNDED else set()
        assert sorted(kinds(await h.ledger_rows(job.id))) == sorted(expected_rows)
        assert len(h.world.facilitator.settles("client")) == (1 if client_charged else 0)
        await money_is_consistent(h, job, spent)
