"""Our payment requirements for one resource at one price, in both x402 versions.

Built once per (resource, price) and reused: the unpaid 402 is served from precomputed bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    declare_payment_identifier_extension,
)
from x402.http import encode_payment_required_header
from x402.mechanisms.evm import get_asset_info
from x402.schemas import (
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
)

from app.payments.networks import caip2

MIME_JSON = "application/json"


@dataclass(frozen=True)
class OfferTerms:
    """Everything that determines an offer."""

    resource_url: str
    price_atomic: int
    network: str  # v1 name, e.g. "base"
    asset: str
    pay_to: str
    max_timeout_seconds: int
    description: str
    payment_identifier_required: bool
    input_schema: dict[str, Any] = field(hash=False, compare=False)
    output_schema: dict[str, Any] = field(hash=False, compare=False)
    # Further v2 extensions, e.g. bazaar discovery (a function of the path, like the schemas).
    extensions: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Offer:
    """The requirements a client must satisfy, and the ready-made unpaid 402."""

    terms: OfferTerms
    v1: PaymentRequirementsV1
    v2: PaymentRequirements
    resource: ResourceInfo
    unpaid_body: bytes
    unpaid_header: str

    @property
    def network_caip2(self) -> str:
        """The CAIP-2 id of the payment network."""
        return str(self.v2.network)

    def payment_required(self, error: str, message: str | None = None) -> tuple[bytes, str]:
        """A 402 body (v1 shape) and PAYMENT-REQUIRED header (v2) carrying `error`."""
        return _render(self.terms, self.v1, self.v2, self.resource, error, message)

    def required_v2(self, error: str) -> PaymentRequired:
        """The v2 `PaymentRequired` carrying `error` (what MCP returns as a tool error)."""
        return _required_v2(self.terms, self.v2, self.resource, error)


def _extensions(terms: OfferTerms) -> dict[str, Any]:
    """v2 extensions we declare: payment-identifier, so clients can make retries idempotent,
    and whatever the terms add (discovery)."""
    return {
        PAYMENT_IDENTIFIER: declare_payment_identifier_extension(
            required=terms.payment_identifier_required
        ),
        **terms.extensions,
    }


def _render(
    terms: OfferTerms,
    v1: PaymentRequirementsV1,
    v2: PaymentRequirements,
    resource: ResourceInfo,
    error: str,
    message: str | None,
) -> tuple[bytes, str]:
    body_model = PaymentRequiredV1(x402_version=1, error=error, accepts=[v1])
    body: dict[str, Any] = body_model.model_dump(mode="json", by_alias=True, exclude_none=True)
    if message:
        body["message"] = message
    header = encode_payment_required_header(_required_v2(terms, v2, resource, error))
    return json.dumps(body, separators=(",", ":")).encode(), header


def _required_v2(
    terms: OfferTerms, v2: PaymentRequirements, resource: ResourceInfo, error: str
) -> PaymentRequired:
    return PaymentRequired(
        x402_version=2, error=error, resource=resource, accepts=[v2], extensions=_extensions(terms)
    )


def build_extra(network: str, asset: str) -> dict[str, str]:
    """The asset's EIP-712 domain (name, version), which exact-EVM clients sign against."""
    info = get_asset_info(caip2(network), asset)
    return {"name": info["name"], "version": info["version"]}


def build_offer(terms: OfferTerms) -> Offer:
    """Build both versions' requirements with the asset's EIP-712 domain in `extra`."""
    network_v2 = caip2(terms.network)
    extra = build_extra(terms.network, terms.asset)
    v1 = PaymentRequirementsV1(
        scheme="exact",
        network=terms.network,
        max_amount_required=str(terms.price_atomic),
        resource=terms.resource_url,
        description=terms.description,
        mime_type=MIME_JSON,
        pay_to=terms.pay_to,
        max_timeout_seconds=terms.max_timeout_seconds,
        asset=terms.asset,
        output_schema={"input": terms.input_schema, "output": terms.output_schema},
        extra=extra,
    )
    v2 = PaymentRequirements(
        scheme="exact",
        network=network_v2,
        asset=terms.asset,
        amount=str(terms.price_atomic),
        pay_to=terms.pay_to,
        max_timeout_seconds=terms.max_timeout_seconds,
        extra=dict(extra),
    )
    resource = ResourceInfo(
        url=terms.resource_url, description=terms.description, mime_type=MIME_JSON
    )
    error = "Payment required: send X-PAYMENT (x402 v1) or PAYMENT-SIGNATURE (x402 v2)"
    body, header = _render(terms, v1, v2, resource, error, None)
    return Offer(terms, v1, v2, resource, body, header)


class OfferCache:
    """Offers keyed by their terms; there are few distinct prices, so this stays tiny."""

    def __init__(self) -> None:
        self._offers: dict[OfferTerms, Offer] = {}

    def get(self, terms: OfferTerms) -> Offer:
        """The offer for these terms, built on first use."""
        offer = self._offers.get(terms)
        if offer is None:
            offer = self._offers[terms] = build_offer(terms)
        return offer
