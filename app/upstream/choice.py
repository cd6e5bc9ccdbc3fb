"""Picking the one payment option we pay the upstream with, out of whatever its 402 lists.

The SDK signs whichever option its selector prefers; we never let it choose. The option must
be `exact` on the configured network and asset (and to the pinned payee, if any), with an
integer amount; the cheapest such option is taken and the SDK is handed only that one, its
`maxTimeoutSeconds` cut to our own limit: the SDK signs `validBefore = now + maxTimeoutSeconds`,
and until then whoever holds our authorization can execute it (so a refund that depends on
the upstream not having charged us waits that long).
"""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from x402.schemas import PaymentRequired, PaymentRequiredV1, PaymentRequirements
from x402.schemas import PaymentRequirementsV1 as RequirementsV1

from app.core.networks import caip2
from app.upstream.errors import UpstreamRejected

PaymentRequiredAny = PaymentRequired | PaymentRequiredV1
Requirements = PaymentRequirements | RequirementsV1


@dataclass(frozen=True)
class OfferPins:
    """What an upstream option must be for us to pay it."""

    network: str = "base"
    asset: str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    pay_to: str | None = None  # None: any payee


@dataclass(frozen=True)
class Choice:
    """The chosen option as offered, and a 402 that offers only it with its validity cut
    (what the SDK gets to sign)."""

    payment_required: PaymentRequiredAny
    option: Requirements
    amount: int


def amount_of(option: Requirements) -> int | None:
    """The option's integer amount, or None when it has none."""
    raw = option.max_amount_required if isinstance(option, RequirementsV1) else option.amount
    text = str(raw)
    return int(text) if text.isascii() and text.isdigit() else None


def _same_network(network: str, pinned: str) -> bool:
    try:
        return caip2(network) == caip2(pinned)
    except ValueError:
        return False


def _same_address(value: str, pinned: str) -> bool:
    return Web3.is_address(value) and value.lower() == pinned.lower()


def _acceptable(option: Requirements, pins: OfferPins) -> bool:
    return (
        option.scheme == "exact"
        and _same_network(str(option.network), pins.network)
        and _same_address(option.asset, pins.asset)
        and Web3.is_address(option.pay_to)
        and (pins.pay_to is None or _same_address(option.pay_to, pins.pay_to))
        and amount_of(option) is not None
    )


def with_validity(option: Requirements, max_validity_s: int | None) -> Requirements:
    """`option` with `maxTimeoutSeconds` at most `max_validity_s` (None: unchanged); an option
    without one (the SDK then signs for 10 min or more) gets `max_validity_s`."""
    if max_validity_s is None:
        return option
    current = option.max_timeout_seconds or max_validity_s
    return option.model_copy(update={"max_timeout_seconds": min(current, max_validity_s)})


def choose(
    payment_required: PaymentRequiredAny, pins: OfferPins, max_validity_s: int | None = None
) -> Choice:
    """The cheapest acceptable option; UpstreamRejected when the 402 offers none."""
    options: list[Requirements] = list(payment_required.accepts)
    fitting = [o for o in options if _acceptable(o, pins)]
    if not fitting:
        offered = ", ".join(f"{o.scheme}/{o.network}" for o in options[:5]) or "nothing"
        raise UpstreamRejected(
            "upstream_no_acceptable_offer",
            f"upstream 402 offers no exact payment on {pins.network} in the configured asset"
            f"{' to the pinned payee' if pins.pay_to else ''} (offered: {offered[:200]})",
        )
    option = min(fitting, key=lambda o: amount_of(o) or 0)
    amount = amount_of(option)
    assert amount is not None
    signed = with_validity(option, max_validity_s)
    narrowed = payment_required.model_copy(update={"accepts": [signed]})
    return Choice(narrowed, option, amount)
