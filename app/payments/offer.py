"""Our payment requirements for one resource at one price, in both x402 versions, and the one
producer of our 402 answers.

An offer accepts one or more ways to pay (the primary network/asset/pay-to, then
`X402R_EXTRA_OFFERS`). Built once per (resource, price) and reused: the unpaid 402 is served
from precomputed bytes (`Http402`), by the route and by the ASGI fast paths alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    declare_payment_identifier_extension,
)
from x402.http import PAYMENT_REQUIRED_HEADER, encode_payment_required_header
from x402.schemas import (
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
)

from app.core.pay_options import PayOption

MIME_JSON = "application/json"
UNPAID_ERROR = "Payment required: send X-PAYMENT (x402 v1) or PAYMENT-SIGNATURE (x402 v2)"


@dataclass(frozen=True)
class OfferTerms:
    """Everything that determines an offer."""

    resource_url: str
    price_atomic: int
    network: str  # v1 name, e.g. "base": the primary option
    asset: str
    pay_to: str
    max_timeout_seconds: int
    description: str
    payment_identifier_required: bool
    input_schema: dict[str, Any] = field(hash=False, compare=False)
    output_schema: dict[str, Any] = field(hash=False, compare=False)
    # Further v2 extensions, e.g. bazaar discovery (a function of the path, like the schemas).
    extensions: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    extra_options: tuple[PayOption, ...] = ()  # accepted after the primary one

    @property
    def options(self) -> tuple[PayOption, ...]:
        """Every accepted way to pay, the primary one first."""
        return (PayOption(self.network, self.asset, self.pay_to), *self.extra_options)


@dataclass(frozen=True)
class Accepted:
    """One accepted way to pay, as each x402 version states it (v1: None without a v1 name)."""

    option: PayOption
    v1: PaymentRequirementsV1 | None
    v2: PaymentRequirements


@dataclass(frozen=True)
class Http402:
    """One 402 answer rendered once: the v1 JSON body and the headers, as ASGI sends them."""

    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...]

    def start_message(self, extra: tuple[tuple[bytes, bytes], ...] = ()) -> dict[str, Any]:
        """A fresh `http.response.start` message (the server owns what it is sent), with
        `extra` headers after ours (what middleware outside would have added)."""
        headers = [*self.raw_headers, *extra]
        return {"type": "http.response.start", "status": 402, "headers": headers}

    def body_message(self) -> dict[str, Any]:
        """The `http.response.body` message."""
        return {"type": "http.response.body", "body": self.body}


@dataclass(frozen=True)
class Offer:
    """The requirements a client must satisfy, and the ready-made unpaid 402."""

    terms: OfferTerms
    accepts: tuple[Accepted, ...]
    resource: ResourceInfo
    unpaid: Http402
    unpaid_header: str  # the v2 PAYMENT-REQUIRED header of `unpaid`

    @property
    def v1(self) -> PaymentRequirementsV1:
        """The primary option's v1 requirements."""
        primary = self.accepts[0].v1
        assert primary is not None  # the primary network is a v1 name (settings)
        return primary

    @property
    def v2(self) -> PaymentRequirements:
        """The primary option's v2 requirements."""
        return self.accepts[0].v2

    @property
    def network_caip2(self) -> str:
        """The CAIP-2 id of the primary payment network."""
        return str(self.v2.network)

    def payment_required(self, error: str, message: str | None = None) -> Http402:
        """A 402 carrying `error` (a refused payment's reason) and its message."""
        return _http_402(self, error, message)[0]

    def required_v2(self, error: str) -> PaymentRequired:
        """The v2 `PaymentRequired` carrying `error` (what MCP returns as a tool error)."""
        return PaymentRequired(
            x402_version=2,
            error=error,
            resource=self.resource,
            accepts=[a.v2 for a in self.accepts],
            extensions=_extensions(self.terms),
        )


def _extensions(terms: OfferTerms) -> dict[str, Any]:
    """v2 extensions we declare: payment-identifier, so clients can make retries idempotent,
    and whatever the terms add (discovery)."""
    return {
        PAYMENT_IDENTIFIER: declare_payment_identifier_extension(
            required=terms.payment_identifier_required
        ),
        **terms.extensions,
    }


def _http_402(offer: Offer, error: str, message: str | None) -> tuple[Http402, str]:
    """The 402: v1 JSON body and v2 `PAYMENT-REQUIRED` header, never to be cached."""
    v1 = [a.v1 for a in offer.accepts if a.v1 is not None]
    body_model = PaymentRequiredV1(x402_version=1, error=error, accepts=v1)
    body: dict[str, Any] = body_model.model_dump(mode="json", by_alias=True, exclude_none=True)
    if message:
        body["message"] = message
    header = encode_payment_required_header(offer.required_v2(error))
    content = json.dumps(body, separators=(",", ":")).encode()
    raw_headers = (
        (PAYMENT_REQUIRED_HEADER.lower().encode(), header.encode("latin-1")),
        # A 402 carries one moment's price: caches keep none.
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(content)).encode()),
        (b"content-type", MIME_JSON.encode()),
    )
    return Http402(content, raw_headers), header


def build_extra(network: str, asset: str) -> dict[str, str]:
    """The asset's EIP-712 domain (name, version), which exact-EVM clients sign against."""
    return PayOption(network, asset, "").eip712()


def _accepted(terms: OfferTerms, option: PayOption) -> Accepted:
    extra = option.eip712()
    v1 = None
    if not option.network.startswith("eip155:"):  # v1 names networks; no name, no v1
        v1 = PaymentRequirementsV1(
            scheme="exact",
            network=option.network,
            max_amount_required=str(terms.price_atomic),
            resource=terms.resource_url,
            description=terms.description,
            mime_type=MIME_JSON,
            pay_to=option.pay_to,
            max_timeout_seconds=terms.max_timeout_seconds,
            asset=option.asset,
            output_schema={"input": terms.input_schema, "output": terms.output_schema},
            extra=extra,
        )
    v2 = PaymentRequirements(
        scheme="exact",
        network=option.network_caip2,
        asset=option.asset,
        amount=str(terms.price_atomic),
        pay_to=option.pay_to,
        max_timeout_seconds=terms.max_timeout_seconds,
        extra=dict(extra),
    )
    return Accepted(option, v1, v2)


def build_offer(terms: OfferTerms) -> Offer:
    """Build both versions' requirements of every option with its EIP-712 domain in `extra`."""
    accepts = tuple(_accepted(terms, option) for option in terms.options)
    resource = ResourceInfo(
        url=terms.resource_url, description=terms.description, mime_type=MIME_JSON
    )
    draft = Offer(terms, accepts, resource, Http402(b"", ()), "")
    unpaid, header = _http_402(draft, UNPAID_ERROR, None)
    return Offer(terms, accepts, resource, unpaid, header)


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
