"""Decode an inbound payment header and check it against our offer before any facilitator call.

Everything here is cheap and local, including the payer's EIP-712 signature (recovered, not
trusted); balance, nonce and time checks are the facilitator's.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from web3 import Web3
from x402.mechanisms.evm.types import ExactEIP3009Payload
from x402.schemas import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
)

from app.payments.offer import Accepted, Offer
from app.payments.signature import SIGNATURE_REFUSED, signed_by_payer

MAX_HEADER_CHARS = 16 * 1024
UINT256_MAX = 2**256 - 1
TIMESTAMP_MAX = 2**63 - 1  # validAfter/validBefore are stored as BIGINT
_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_UINT = re.compile(r"^[0-9]{1,78}$")
_HEX = re.compile(r"^0x(?:[0-9a-fA-F]{2})+$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class PaymentRejected(Exception):
    """The payment cannot buy this offer; `reason` is an x402-style machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class IncomingPayment:
    """A decoded payment with its identity (network, payer, nonce) and matching requirements."""

    version: int
    payload: PaymentPayload | PaymentPayloadV1
    requirements: PaymentRequirements | PaymentRequirementsV1
    network: str  # CAIP-2
    asset: str  # the token paid in (the offer's option the payment chose)
    payer: str
    pay_to: str
    nonce: str  # lower-case 0x-hex
    value: int
    valid_before: int

    def payload_dict(self) -> dict[str, Any]:
        """The payload as stored (wire JSON)."""
        return self.payload.model_dump(mode="json", by_alias=True, exclude_none=True)

    def requirements_dict(self) -> dict[str, Any]:
        """Our requirements as stored (wire JSON)."""
        return self.requirements.model_dump(mode="json", by_alias=True, exclude_none=True)


def _same_address(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _is_address(value: object) -> bool:
    """A 20-byte hex address; mixed case must be a valid EIP-55 checksum (it catches typos)."""
    if not isinstance(value, str) or not _ADDRESS.match(value):
        return False
    digits = value[2:]
    return digits.islower() or digits.isupper() or bool(Web3.is_checksum_address(value))


def _decode(header: str) -> PaymentPayload | PaymentPayloadV1:
    if len(header) > MAX_HEADER_CHARS:
        raise PaymentRejected(
            "invalid_payment_header", f"payment header is too large (over {MAX_HEADER_CHARS} chars)"
        )
    try:
        raw = json.loads(binascii.a2b_base64(header.strip().encode("ascii")).decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise PaymentRejected(
            "invalid_payment_header", "payment header is not base64-encoded JSON"
        ) from exc
    except RecursionError as exc:
        raise PaymentRejected(
            "invalid_payment_header", "payment header JSON is nested too deeply"
        ) from exc
    return _payload(raw)


def _payload(raw: object) -> PaymentPayload | PaymentPayloadV1:
    """The decoded JSON as the SDK's payload model of its declared version."""
    if not isinstance(raw, dict):
        raise PaymentRejected("invalid_payment_header", "payment header JSON must be an object")
    version = raw.get("x402Version")
    if type(version) is not int or version not in (1, 2):
        raise PaymentRejected(
            "unsupported_x402_version", f"x402Version must be 1 or 2, got {version!r}"
        )
    model = PaymentPayloadV1 if version == 1 else PaymentPayload
    try:
        return model.model_validate(raw)
    except (ValidationError, ValueError, TypeError, RecursionError) as exc:
        raise PaymentRejected(
            "invalid_payment_payload", f"payment payload does not match x402 v{version} schema"
        ) from exc


def _uint(auth: dict[str, Any], key: str, maximum: int) -> None:
    value = auth.get(key)
    if not isinstance(value, str) or not _UINT.match(value) or int(value) > maximum:
        raise PaymentRejected(
            "invalid_payment_payload", f"authorization.{key} is not an integer in range"
        )


def _authorization(payload: dict[str, Any]) -> ExactEIP3009Payload:
    if "permit2Authorization" in payload:
        raise PaymentRejected(
            "unsupported_payload", "only EIP-3009 authorizations are accepted, not Permit2"
        )
    auth = payload.get("authorization")
    if not isinstance(auth, dict):
        raise PaymentRejected(
            "invalid_payment_payload", "exact EVM payload needs an EIP-3009 authorization"
        )
    signature = payload.get("signature")
    if not isinstance(signature, str) or not _HEX.match(signature):
        raise PaymentRejected("invalid_payment_payload", "payload.signature is not 0x-hex bytes")
    _uint(auth, "value", UINT256_MAX)
    _uint(auth, "validAfter", TIMESTAMP_MAX)
    _uint(auth, "validBefore", TIMESTAMP_MAX)
    if not isinstance(auth.get("nonce"), str) or not _NONCE.match(auth["nonce"]):
        raise PaymentRejected("invalid_payment_payload", "authorization.nonce is not bytes32")
    for key in ("from", "to"):
        if not _is_address(auth.get(key)):
            raise PaymentRejected("invalid_payment_payload", f"authorization.{key} not an address")
    return ExactEIP3009Payload.from_dict(payload)


def _options_on(network: str, offer: Offer, version: int) -> list[Accepted]:
    """The offer's options on `network` (as x402 `version` names it); refused when none."""
    if version == 1:
        found = [a for a in offer.accepts if a.v1 is not None and a.option.network == network]
        offered = [a.option.network for a in offer.accepts if a.v1 is not None]
    else:
        found = [a for a in offer.accepts if str(a.v2.network) == network]
        offered = [str(a.v2.network) for a in offer.accepts]
    if not found:
        names = list(dict.fromkeys(offered))
        uses = repr(names[0]) if len(names) == 1 else "one of " + ", ".join(map(repr, names))
        raise PaymentRejected(
            "network_mismatch", f"network {network!r} is not offered; x402 v{version} uses {uses}"
        )
    return found


def _v2_option(accepted: PaymentRequirements, offer: Offer) -> Accepted:
    """The one option a v2 payment chose: its network and asset, checked in full."""
    on_network = _options_on(str(accepted.network), offer, 2)
    chosen = next((a for a in on_network if _same_address(a.option.asset, accepted.asset)), None)
    if chosen is None:
        raise PaymentRejected("asset_mismatch", "accepted asset is not the offered token")
    if not _same_address(accepted.pay_to, chosen.option.pay_to):
        raise PaymentRejected("recipient_mismatch", "accepted payTo is not ours")
    if accepted.amount != chosen.v2.amount:
        raise PaymentRejected(
            "amount_mismatch", f"accepted amount {accepted.amount} != price {chosen.v2.amount}"
        )
    return chosen


def _authorizes(inner: ExactEIP3009Payload, chosen: Accepted, price: int) -> None:
    """The authorization pays `chosen`'s pay-to the price, signed by its `from` on that token."""
    auth = inner.authorization
    if not _same_address(auth.to, chosen.option.pay_to):
        raise PaymentRejected("recipient_mismatch", "authorization pays someone else")
    if int(auth.value) != price:
        raise PaymentRejected(
            "amount_mismatch", f"authorization value {auth.value} != price {price}"
        )
    # Before anything reads by payer (its jobs, its keys, its rate limit) or calls the
    # facilitator: the payer's address, nonce and signatures are public once settled.
    if not signed_by_payer(
        auth,
        inner.signature or "",
        network=chosen.option.network_caip2,
        asset=chosen.option.asset,
        extra=chosen.v2.extra or {},
    ):
        raise PaymentRejected(
            SIGNATURE_REFUSED, "the signature does not recover to authorization.from"
        )


def parse_payment(header: str, offer: Offer) -> IncomingPayment:
    """Decode `header` and check scheme, network, asset, recipient and amount against `offer`.

    Raises PaymentRejected, and nothing else, for any header that cannot buy the offer.
    """
    return _checked(_decode(header), offer)


def parse_payment_object(raw: object, offer: Offer) -> IncomingPayment:
    """`parse_payment` for a payload already decoded from JSON (MCP's `_meta`), or a JSON
    string of it (which the SDK's MCP helpers accept too)."""
    if isinstance(raw, str):
        if len(raw) > MAX_HEADER_CHARS:
            raise PaymentRejected("invalid_payment_header", "payment is too large")
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise PaymentRejected("invalid_payment_header", "payment is not JSON") from exc
    try:
        size = len(json.dumps(raw, default=str))
    except (ValueError, RecursionError) as exc:
        raise PaymentRejected(
            "invalid_payment_header", "payment JSON is nested too deeply"
        ) from exc
    if size > MAX_HEADER_CHARS:
        raise PaymentRejected("invalid_payment_header", "payment is too large")
    return _checked(_payload(raw), offer)


def _checked(payload: PaymentPayload | PaymentPayloadV1, offer: Offer) -> IncomingPayment:
    scheme = payload.scheme if isinstance(payload, PaymentPayloadV1) else payload.accepted.scheme
    if scheme != "exact":
        raise PaymentRejected("unsupported_scheme", f"scheme {scheme!r} is not offered")
    if isinstance(payload, PaymentPayloadV1):
        # v1 names neither asset nor amount outside the authorization; the signature binds
        # the asset through the EIP-712 domain: the option is the one it was signed for.
        candidates = _options_on(str(payload.network), offer, 1)
    else:
        candidates = [_v2_option(payload.accepted, offer)]
    inner = _authorization(payload.payload)
    refusal: PaymentRejected | None = None
    for candidate in candidates:
        try:
            _authorizes(inner, candidate, offer.terms.price_atomic)
        except PaymentRejected as exc:
            # The option the authorization pays says best what is wrong with it.
            if refusal is None or refusal.reason == "recipient_mismatch":
                refusal = exc
            continue
        return _incoming(payload, inner, candidate)
    assert refusal is not None
    raise refusal


def _incoming(
    payload: PaymentPayload | PaymentPayloadV1, inner: ExactEIP3009Payload, chosen: Accepted
) -> IncomingPayment:
    auth = inner.authorization
    requirements = chosen.v1 if isinstance(payload, PaymentPayloadV1) else chosen.v2
    assert requirements is not None
    return IncomingPayment(
        version=payload.x402_version,
        payload=payload,
        requirements=requirements,
        network=chosen.option.network_caip2,
        asset=chosen.option.asset,
        payer=str(Web3.to_checksum_address(auth.from_address)),
        pay_to=chosen.option.pay_to,
        nonce=auth.nonce.lower(),
        value=int(auth.value),
        valid_before=int(auth.valid_before),
    )
