"""The declared money rules, restated independently of the code under test: what a settle
attempt proves, what the gateway can know about the upstream's charge, and what the refund
policy then decides (docs/money-safety.md). The tests compare the gateway against these."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.core.modes import RefundPolicy
from app.jobs.models import JobState
from tests.fast.facilitator import REFUSAL, Settle


class Verdict(StrEnum):
    """What is known about a settlement of an authorization."""

    SETTLED = "settled"  # our transfer executed, and we know it
    REFUSED = "refused"  # it never will execute as ours: nothing moved to us
    UNKNOWN = "unknown"  # maybe: retried later
    UNRESOLVED = "unresolved"  # still unknown when the retries run out: the operator decides


@dataclass(frozen=True)
class SettleRule:
    """A settle attempt's verdict when it is made, and after the retries that follow."""

    at_first: Verdict
    finally_: Verdict
    refusal: str | None = None  # the reason a refused payment is answered with


def settle_rule(outcome: Settle, *, chain: bool) -> SettleRule:
    """A settlement whose first attempt goes `outcome`, every later attempt answered as a
    real facilitator would ("settled", or "nonce used" once the authorization is spent).

    A facilitator's success counts only when the chain (if there is one) shows the transfer;
    an unknown answer is settled by the chain when it shows the nonce used (by our transfer:
    settled; by another: refused), and retried otherwise. Without a chain, a spent nonce
    stays unknown on every retry: the retries run out and the operator decides.
    """
    if outcome is Settle.SETTLED or (outcome is Settle.LIES and not chain):
        return SettleRule(Verdict.SETTLED, Verdict.SETTLED)
    if outcome is Settle.REFUSED:
        return SettleRule(Verdict.REFUSED, Verdict.REFUSED, REFUSAL)
    nonce_spent_by = {Settle.TIMEOUT_LANDED: "us", Settle.FRONTRUN: "another"}.get(outcome)
    if nonce_spent_by is None:  # nothing moved: the next attempt settles
        return SettleRule(Verdict.UNKNOWN, Verdict.SETTLED)
    if not chain:
        return SettleRule(Verdict.UNKNOWN, Verdict.UNRESOLVED)
    if nonce_spent_by == "us":
        return SettleRule(Verdict.SETTLED, Verdict.SETTLED)
    return SettleRule(Verdict.REFUSED, Verdict.REFUSED, "payment_not_received")


def refund_end(outcome: Settle, *, chain: bool) -> tuple[JobState, str | None]:
    """Where a refund whose first settle attempt goes `outcome` ends, and its error code."""
    rule = settle_rule(outcome, chain=chain)
    if rule.finally_ is Verdict.SETTLED:
        return JobState.REFUNDED, None
    if rule.finally_ is Verdict.UNRESOLVED:
        return JobState.NEEDS_ATTENTION, "refund_unresolved"
    code = "refund_refused" if outcome is Settle.REFUSED else "refund_not_made"
    return JobState.NEEDS_ATTENTION, code


def should_refund(policy: RefundPolicy, upstream_charged: bool | None) -> bool | None:
    """Refund a failed, paid job? None: the policy cannot decide (the operator does)."""
    if policy is RefundPolicy.OFF:
        return False
    if policy is RefundPolicy.FULL:
        return True
    return None if upstream_charged is None else not upstream_charged


def failed_job_end(policy: RefundPolicy, upstream_charged: bool | None) -> JobState:
    """Where a paid job that failed ends, its refund (if any) settling at once."""
    decision = should_refund(policy, upstream_charged)
    if decision is None:
        return JobState.NEEDS_ATTENTION
    return JobState.REFUNDED if decision else JobState.FAILED


def known_upstream_charge(*, paid: bool, tx_in_answer: bool, chain: bool) -> bool | None:
    """What the gateway can know of the upstream's charge: from the upstream's own receipt,
    or from the chain; without either it cannot know."""
    if tx_in_answer:
        return True
    if chain:
        return paid
    return None
