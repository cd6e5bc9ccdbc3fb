"""Decode an inbound payment header and check it against our offer before any facilitator call.

Everything here is cheap and local; signature, balance and time checks are the facilitator's.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from web3 import Web3
from x402.http import decode_payment_signature_header
from x402.mechanisms.evm.types import ExactEIP3009Payload
from x402.schemas import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
)

from app.payments.networks import caip2
from app.payments.offer import Offer

MAX_HEADER_CHARS = 16 * 1024
_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_UINT = re.compile(r"^[0-9]{1,78}$")


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


def _decode(header: str) -> PaymentPayload | PaymentPayloadV1:
    if len(header) > MAX_HEADER_CHARS:
        raise PaymentRejected("invalid_payment_header", "payment header is too large")
    try:
        raw = json.loads(binascii.a2b_base64(header.strip().encode("ascii")).decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise PaymentRejected(
            "invalid_payment_header", "payment header is not base64-encoded JSON"
        ) from exc
    if not isinstance(raw, dict):
        raise PaymentRejected("invalid_payment_header", "payment header JSON must be an object")
    version = raw.get("x402Version")
    if version not in (1, 2):
        raise PaymentRejected(
            "unsupported_x402_version", f"x402Version must be 1 or 2, got {version!r}"
        )
    try:
        return decode_payment_signature_header(header.strip())
    except (ValidationError, ValueError) as exc:
        raise PaymentRejected(
            "invalid_payment_payload", f"payment payload does not match x402 v{version} schema"
        ) from exc


def _authorization(payload: dict[str, Any]) -> ExactEIP3009Payload:
    auth = payload.get("authorization")
    if not isinstance(auth, dict) or not isinstance(payload.get("signature"), str):
        raise PaymentRejected(
            "invalid_payment_payload", "exact EVM payload needs an EIP-3009 authorization"
        )
    for key in ("value", "validAfter", "validBefore"):
        if not isinstance(auth.get(key), str) or not _UINT.match(auth[key]):
            raise PaymentRejected("invalid_payment_payload", f"authorization.{key} is not uint")
    if not isinstance(auth.get("nonce"), str) or not _NONCE.match(auth["nonce"]):
        raise PaymentRejected("invalid_payment_payload", "authorization.nonce is not bytes32")
    for key in ("from", "to"):
        if not isinstance(auth.get(key), str) or not Web3.is_address(auth[key]):
            raise PaymentRejected("invalid_payment_payload", f"authorization.{key} not an address")
    return ExactEIP3009Payload.from_dict(payload)


def parse_payment(header: str, offer: Offer) -> IncomingPayment:
    """Decode `header` and check scheme, network, asset, recipient and amount against `offer`."""
    payload = _decode(header)
    requirements: PaymentRequirements | PaymentRequirementsV1
    if isinstance(payload, PaymentPayloadV1):
        scheme, network, requirements = payload.scheme, payload.network, offer.v1
        asset = offer.v1.asset  # v1 payloads do not name the asset; the signature binds it
    else:
        accepted = payload.accepted
        scheme, network, asset, requirements = (
            accepted.scheme,
            accepted.network,
            accepted.asset,
            offer.v2,
        )
        if accepted.amount != offer.v2.amount:
            raise PaymentRejected(
                "amount_mismatch", f"accepted amount {accepted.amount} != price {offer.v2.amount}"
            )
        if not _same_address(accepted.pay_to, offer.v2.pay_to):
            raise PaymentRejected("recipient_mismatch", "accepted payTo is not ours")
    if scheme != "exact":
        raise PaymentRejected("unsupported_scheme", f"scheme {scheme!r} is not offered")
    try:
        network_id = caip2(str(network))
    except ValueError:
        network_id = str(network)
    if network_id != offer.network_caip2:
        raise PaymentRejected(
            "network_mismatch", f"network {network!r} is not offered; use {offer.terms.network}"
        )
    if not _same_address(asset, offer.terms.asset):
        raise PaymentRejected("asset_mismatch", "asset is not the offered token")
    auth = _authorization(payload.payload).authorization
    if not _same_address(auth.to, offer.terms.pay_to):
        raise PaymentRejected("recipient_mismatch", "authorization pays someone else")
    if int(auth.value) != offer.terms.price_atomic:
        raise PaymentRejected(
            "amount_mismatch",
            f"authorization value {auth.value} != price {offer.terms.price_atomic}",
        )
    return IncomingPayment(
        version=payload.x402_version,
        payload=payload,
        requirements=requirements,
        network=network_id,
        payer=str(Web3.to_checksum_address(auth.from_address)),
        pay_to=offer.terms.pay_to,
        nonce=auth.nonce.lower(),
        value=int(auth.value),
        valid_before=int(auth.valid_before),
    )
