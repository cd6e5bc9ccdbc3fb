"""Did our upstream authorization charge us? Charged, not charged, still live, or unknown.

"Not charged" needs more than an unused nonce: until its `validBefore` our signed
authorization can still be executed (by the upstream, or by an honest upstream whose
settlement lands after our timeout). It is concluded only once the chain's latest block is
past `validBefore` plus a grace for reorgs and clock skew, with the nonce still unused: no
later block can then execute it. Until then the answer is LIVE, with when it can be decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.context import Gateway
from app.jobs import onchain
from app.jobs.models import Job

# Blocks after validBefore before "unused" counts as "never": a reorg could still replace
# the latest blocks with ones carrying the transfer (about 5 blocks on Base).
EXPIRY_GRACE_S = 10
# A row without the signed validBefore (written before it was stored): the SDK signs for at
# most this long, counted from the job's creation, minus the look-back of its window.
UNKNOWN_VALIDITY_S = 3600 + onchain.LOOKBACK_S


class Charge(StrEnum):
    """What is known about our upstream authorization."""

    CHARGED = "charged"  # executed by a transfer that paid the upstream
    NOT_CHARGED = "not_charged"  # never signed, or expired unused: it can never move money
    LIVE = "live"  # unused, but still executable: not known yet
    UNREADABLE = "unreadable"  # the chain could not be read: ask again later
    UNKNOWABLE = "unknowable"  # no chain, or used by a transfer we cannot find or match


@dataclass(frozen=True)
class UpstreamCharge:
    """The answer, the transaction that charged us, and when a live one can be decided."""

    charge: Charge
    tx: str | None = None
    decidable_at: int | None = None  # LIVE: unix time from which an unused one is expired

    @property
    def charged(self) -> bool | None:
        """As the refund policy reads it: True, False, or None when not known (yet)."""
        return {Charge.CHARGED: True, Charge.NOT_CHARGED: False}.get(self.charge)


NOT_CHARGED = UpstreamCharge(Charge.NOT_CHARGED)


def decidable_at(job: Job) -> int:
    """When the job's upstream authorization, if still unused, can no longer be executed."""
    valid_before = job.upstream_valid_before
    if valid_before is None:
        valid_before = onchain.created(job) + UNKNOWN_VALIDITY_S
    return valid_before + EXPIRY_GRACE_S


async def upstream_charge(gw: Gateway, job: Job) -> UpstreamCharge:
    """What the chain says about the job's upstream authorization (see the module doc)."""
    if job.upstream_nonce is None:
        return NOT_CHARGED
    if job.upstream_tx:
        return UpstreamCharge(Charge.CHARGED, job.upstream_tx)
    if gw.chain is None:
        return UpstreamCharge(Charge.UNKNOWABLE)
    try:
        # Read first: an expiry seen at this block holds for the state read at a later one.
        chain_now = await gw.chain.latest_timestamp()
        use = await onchain.upstream_payment(gw, job)
    except Exception as exc:  # the chain could not be read: unknown, and said so
        onchain.unreadable(job, "the upstream payment", exc)
        return UpstreamCharge(Charge.UNREADABLE)
    if not use.used:
        deadline = decidable_at(job)
        if chain_now < deadline:
            return UpstreamCharge(Charge.LIVE, decidable_at=deadline)
        return NOT_CHARGED
    # Used, but not by a transfer that paid the upstream (or none found): nobody can say.
    return UpstreamCharge(Charge.CHARGED, use.tx) if use.paid else UpstreamCharge(Charge.UNKNOWABLE)
