"""Facilitator access (remote HTTP or embedded) with timeouts and outcome classification.

Settlement has three outcomes, not two: SETTLED, REFUSED (definitely nothing moved) and
UNKNOWN (a timeout, a 5xx, garbage, or a reason that can follow a broadcast). UNKNOWN is
never turned into a fresh 402: the job is reconciled against the chain instead.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import httpx
from x402.http import FacilitatorConfig, HTTPFacilitatorClient
from x402.http.facilitator_client_base import AuthHeaders
from x402.schemas import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    SettleResponse,
    VerifyResponse,
)

from app.core.metrics import SETTLE_SECONDS, count_payment
from app.core.networks import caip2
from app.core.settings import Settings

Payload = PaymentPayload | PaymentPayloadV1
Requirements = PaymentRequirements | PaymentRequirementsV1

# Reasons a facilitator gives only before anything was broadcast.
_UNKNOWN_REASONS = frozenset(
    {
        "invalid_exact_evm_nonce_already_used",  # may be our own earlier, unanswered settle
        "invalid_exact_evm_transaction_simulation_failed",
        "transaction_failed",
        "settlement_pending",
        "unexpected_settle_error",
    }
)


class Facilitator(Protocol):
    """What we need from a facilitator."""

    async def verify(self, payload: Payload, requirements: Requirements) -> VerifyResponse: ...

    async def settle(self, payload: Payload, requirements: Requirements) -> SettleResponse: ...


class FacilitatorUnavailable(Exception):
    """The facilitator did not give a usable answer."""


class SettleOutcome(StrEnum):
    """Classified result of a settlement attempt."""

    SETTLED = "settled"
    REFUSED = "refused"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SettleResult:
    """A settlement attempt, classified."""

    outcome: SettleOutcome
    response: SettleResponse | None
    reason: str
    message: str

    @property
    def tx(self) -> str | None:
        """The settlement transaction, when there is one."""
        return self.response.transaction if self.response and self.response.transaction else None


class _StaticAuth:
    """Sends one configured header (e.g. `Authorization: Bearer …`) to every endpoint."""

    def __init__(self, header_line: str) -> None:
        name, _, value = header_line.partition(":")
        self._headers = {name.strip(): value.strip()}

    def get_auth_headers(self) -> AuthHeaders:
        return AuthHeaders(
            verify=self._headers,
            settle=self._headers,
            supported=self._headers,
            bazaar=self._headers,
        )


def build_facilitator(settings: Settings, http: httpx.AsyncClient | None = None) -> Facilitator:
    """The configured facilitator: remote HTTP (through `http` when given; the caller closes
    it) or embedded in this process."""
    if settings.facilitator_url is not None:
        auth = settings.facilitator_auth_header
        return HTTPFacilitatorClient(
            FacilitatorConfig(
                url=str(settings.facilitator_url).rstrip("/"),
                timeout=settings.facilitator_timeout_s,
                http_client=http,
                auth_provider=_StaticAuth(auth.get_secret_value()) if auth else None,
            )
        )
    from app.payments.embedded_facilitator import EmbeddedFacilitator, build_embedded_facilitator

    assert settings.facilitator_private_key is not None
    assert settings.rpc_url is not None
    sync = build_embedded_facilitator(
        settings.facilitator_private_key.get_secret_value(),
        str(settings.rpc_url),
        v1_networks=[settings.network],
        v2_networks=[caip2(settings.network)],
        # Give up waiting for a receipt just before our own deadline: the answer is then
        # "unknown" and the chain is asked later, instead of a thread blocked for minutes.
        confirmation_timeout_s=max(settings.facilitator_timeout_s - 1, 1),
    )
    return EmbeddedFacilitator(sync)


async def verify_payment(
    facilitator: Facilitator, payload: Payload, requirements: Requirements, timeout: float
) -> VerifyResponse:
    """Verify, turning transport failures into FacilitatorUnavailable."""
    try:
        async with asyncio.timeout(timeout):  # no extra task, unlike wait_for on 3.11
            verdict = await facilitator.verify(payload, requirements)
    except Exception as exc:
        count_payment("verify", "unknown", "facilitator_unavailable")
        raise FacilitatorUnavailable(f"verify failed: {type(exc).__name__}") from exc
    if verdict.is_valid:
        count_payment("verify", "verified", "")
    else:
        count_payment("verify", "refused", verdict.invalid_reason or "invalid_payment")
    return verdict


async def settle_payment(
    facilitator: Facilitator,
    payload: Payload,
    requirements: Requirements,
    timeout: float,
    *,
    step: str = "settle",
) -> SettleResult:
    """Settle once and classify the outcome; never raises for facilitator faults.

    `step` names it in the metrics: `settle` (a client's payment) or `refund`."""
    started = time.perf_counter()
    result = await _settle(facilitator, payload, requirements, timeout)
    SETTLE_SECONDS.labels(step).observe(time.perf_counter() - started)
    count_payment(step, result.outcome.value, result.reason)
    return result


async def _settle(
    facilitator: Facilitator, payload: Payload, requirements: Requirements, timeout: float
) -> SettleResult:
    try:
        async with asyncio.timeout(timeout):
            response = await facilitator.settle(payload, requirements)
    except TimeoutError:
        return SettleResult(SettleOutcome.UNKNOWN, None, "settle_timeout", "settlement timed out")
    except Exception as exc:
        return SettleResult(
            SettleOutcome.UNKNOWN, None, "settle_error", f"facilitator error: {type(exc).__name__}"
        )
    if response.success and response.transaction:
        return SettleResult(SettleOutcome.SETTLED, response, "", "")
    reason = response.error_reason or "settle_failed"
    message = response.error_message or reason
    if response.success or reason in _UNKNOWN_REASONS:
        return SettleResult(SettleOutcome.UNKNOWN, response, reason, message)
    return SettleResult(SettleOutcome.REFUSED, response, reason, message)
