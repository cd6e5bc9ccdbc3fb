"""Buying one job from the upstream with the operator's hot wallet, over x402.

A purchase is two steps so the caller can persist in between: `sign()` creates one
authorization (never more for one logical purchase), `submit()` sends it — again on retry.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from pydantic import ValidationError
from x402 import x402Client
from x402.http import (
    PAYMENT_SIGNATURE_HEADER,
    X_PAYMENT_HEADER,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.schemas import PaymentPayload, PaymentRequirements
from x402.schemas.helpers import parse_payment_required

from app.core.origins import origin_of
from app.upstream.choice import OfferPins, PaymentRequiredAny, Requirements, choose
from app.upstream.errors import (
    UpstreamPaymentRefused,
    UpstreamPriceAbovePaid,
    UpstreamPriceTooHigh,
    UpstreamRejected,
    UpstreamUnavailable,
)
from app.upstream.schemas import UpstreamJobAccepted
from app.upstream.status_fetch import StatusPolicy, StatusReader

SIGNING_SLACK_S = 5  # between the SDK's clock read and ours


@dataclass(frozen=True)
class Quote:
    """The one option of the upstream's 402 we pay with (`payment_required` offers only it)."""

    payment_required: PaymentRequiredAny
    amount: int
    pay_to: str
    network: str
    asset: str
    fetched_at: float
    offered: Requirements | None = None  # the option as the upstream listed it


@dataclass(frozen=True)
class SignedPurchase:
    """One signed upstream authorization, ready to be stored and (re)sent."""

    header_name: str
    header_value: str
    amount: int
    pay_to: str
    nonce: str
    valid_before: int


@dataclass(frozen=True)
class Submission:
    """The upstream accepted a paid job."""

    job: UpstreamJobAccepted
    tx: str | None


def _quote(payment_required: PaymentRequiredAny, pins: OfferPins, validity_s: int | None) -> Quote:
    chosen = choose(payment_required, pins, validity_s)
    option = chosen.option
    return Quote(
        chosen.payment_required,
        chosen.amount,
        option.pay_to,
        str(option.network),
        option.asset,
        time.time(),
        option,
    )


class UpstreamClient:
    """HTTP + x402 client for the upstream edit endpoint and its status URLs."""

    def __init__(
        self,
        url: str,
        wallet: LocalAccount,
        http: httpx.AsyncClient,
        *,
        timeout_s: float,
        quote_ttl_s: float,
        pins: OfferPins | None = None,
        status_reader: StatusReader | None = None,
        auth_validity_s: int | None = None,
    ) -> None:
        """`auth_validity_s`: the longest our signed authorization may stay executable."""
        self.url = url
        self._pins = pins or OfferPins()
        self._validity_s = auth_validity_s
        self.statuses = status_reader or StatusReader(
            StatusPolicy(frozenset([origin_of(url)]), timeout_s=timeout_s)
        )
        self._http = http
        self._timeout = timeout_s
        self._quote_ttl = quote_ttl_s
        self._quote: Quote | None = None
        self._payer = x402Client()
        register_exact_evm_client(self._payer, EthAccountSigner(wallet))

    def cached_quote(self) -> Quote | None:
        """The last quote, if still fresh."""
        cached = self._quote
        if cached is not None and time.time() - cached.fetched_at < self._quote_ttl:
            return cached
        return None

    def forget_quote(self) -> None:
        """Drop the cached requirements (the upstream refused or changed them)."""
        self._quote = None

    async def quote(self, body: dict[str, Any]) -> Quote:
        """Current upstream requirements: cached, or from an unpaid request (expects 402)."""
        cached = self.cached_quote()
        if cached is not None:
            return cached
        response = await self._post(body, {})
        if response.status_code != 402:
            raise self._unexpected(response, "unpaid request")
        self._quote = _quote(self._parse_402(response), self._pins, self._validity_s)
        return self._quote

    async def sign(
        self, quote: Quote, *, max_amount: int, paid: int | None = None
    ) -> SignedPurchase:
        """Sign one authorization for `quote`, refusing above `max_amount` or above `paid`
        (what the client paid for this job), checked again on what was actually signed."""
        if quote.amount > max_amount:
            raise UpstreamPriceTooHigh(quote.amount, max_amount)
        if paid is not None and quote.amount > paid:
            raise UpstreamPriceAbovePaid(quote.amount, paid)
        payload = await self._payer.create_payment_payload(quote.payment_required)
        if isinstance(payload, PaymentPayload) and isinstance(quote.offered, PaymentRequirements):
            # A v2 payload echoes the option, which the upstream matches exactly against its
            # own: echo it as offered (only the signed validBefore is ours to shorten).
            payload = payload.model_copy(update={"accepted": quote.offered})
        auth = payload.payload["authorization"]
        version = payload.x402_version
        if int(auth["value"]) != quote.amount or str(auth["to"]).lower() != quote.pay_to.lower():
            raise UpstreamRejected(
                "upstream_purchase_error", "the signed upstream payment is not the chosen option"
            )
        if self._validity_s is not None and int(auth["validBefore"]) > time.time() + (
            self._validity_s + SIGNING_SLACK_S
        ):
            raise UpstreamRejected(
                "upstream_purchase_error", "the signed upstream payment outlives our limit"
            )
        return SignedPurchase(
            header_name=X_PAYMENT_HEADER if version == 1 else PAYMENT_SIGNATURE_HEADER,
            header_value=encode_payment_signature_header(payload),
            amount=int(auth["value"]),
            pay_to=str(auth["to"]),
            nonce=str(auth["nonce"]).lower(),
            valid_before=int(auth["validBefore"]),
        )

    async def submit(self, body: dict[str, Any], header_name: str, header_value: str) -> Submission:
        """Send the edit with a stored payment; raises a classified UpstreamError."""
        response = await self._post(body, {header_name: header_value})
        if response.status_code == 402:
            self.forget_quote()
            reason = _error_of(response)
            raise UpstreamPaymentRefused(reason)
        if response.status_code != 200:
            raise self._unexpected(response, "paid request")
        try:
            job = UpstreamJobAccepted.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamUnavailable(
                "upstream_malformed", "upstream accepted but answered malformed JSON"
            ) from exc
        return Submission(job, _settlement_tx(response))

    async def status(self, status_url: str) -> dict[str, Any]:
        """One guarded status read of an upstream job (see app.upstream.status_fetch)."""
        return await self.statuses.read(status_url)

    async def _post(self, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        try:
            return await self._http.post(
                self.url, json=body, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise UpstreamUnavailable(
                "upstream_timeout", "upstream did not answer in time"
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable("upstream_unreachable", type(exc).__name__) from exc

    @staticmethod
    def _parse_402(response: httpx.Response) -> PaymentRequiredAny:
        from x402.http import PAYMENT_REQUIRED_HEADER, decode_payment_required_header

        try:
            header = response.headers.get(PAYMENT_REQUIRED_HEADER)
            if header:
                return decode_payment_required_header(header)
            return parse_payment_required(response.content)
        except (ValidationError, ValueError) as exc:
            raise UpstreamRejected("upstream_bad_402", "upstream 402 is not x402") from exc

    @staticmethod
    def _unexpected(response: httpx.Response, what: str) -> Exception:
        code = response.status_code
        if 400 <= code < 500 and code not in (408, 429):
            return UpstreamRejected(
                "upstream_rejected", f"upstream refused the {what} ({code}): {_error_of(response)}"
            )
        return UpstreamUnavailable("upstream_http_error", f"upstream {what} answered {code}")


def _error_of(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or data)[:200]
    return json.dumps(data)[:200]


def _settlement_tx(response: httpx.Response) -> str | None:
    header = response.headers.get("X-PAYMENT-RESPONSE") or response.headers.get("PAYMENT-RESPONSE")
    if not header:
        return None
    try:
        return decode_payment_response_header(header).transaction or None
    except (ValidationError, ValueError):
        return None
