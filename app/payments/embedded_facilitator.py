"""The SDK's x402 facilitator run in-process: verify and settle EIP-3009 payments over RPC.

``build_embedded_facilitator`` registers the exact-EVM schemes for the networks we serve and
no others, so ``/supported`` tells the truth and a payment for any other network is refused
with ``invalid_network`` rather than routed to a chain it was never signed for (the SDK
registers schemes under an ``eip155:*`` pattern, which would match every EVM chain).

``EmbeddedFacilitator`` is the async face of it: web3 blocks, so every call runs in a worker
thread. It also checksums the addresses it passes on (the SDK's web3 calls reject lower-case
ones) and turns "no scheme for this network" or a malformed authorization into an ordinary
invalid answer instead of an exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from eth_utils.address import is_address, to_checksum_address
from x402 import x402FacilitatorSync
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmSchemeConfig
from x402.mechanisms.evm.exact.v1.facilitator import ExactEvmSchemeV1, ExactEvmSchemeV1Config
from x402.schemas import (
    AbortResult,
    PaymentAbortedError,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    SchemeNotFoundError,
    SettleContext,
    SettleResponse,
    SupportedResponse,
    VerifyContext,
    VerifyResponse,
)

__all__ = [
    "INVALID_NETWORK",
    "INVALID_PAYLOAD",
    "UNSUPPORTED_SCHEME",
    "AnyPayload",
    "AnyRequirements",
    "EmbeddedFacilitator",
    "build_embedded_facilitator",
]

AnyPayload = PaymentPayload | PaymentPayloadV1
AnyRequirements = PaymentRequirements | PaymentRequirementsV1

# x402 spec reason codes, so callers can pass them through unchanged.
INVALID_NETWORK = "invalid_network"
INVALID_PAYLOAD = "invalid_payload"
UNSUPPORTED_SCHEME = "unsupported_scheme"


def build_embedded_facilitator(
    private_key: str,
    rpc_url: str,
    *,
    v1_networks: Sequence[str] = ("base",),
    v2_networks: Sequence[str] = ("eip155:8453",),
    confirmation_timeout_s: float | None = None,
) -> x402FacilitatorSync:
    """Return the SDK's sync facilitator settling with ``private_key`` (pays gas) via ``rpc_url``.

    v1 networks use legacy names (``base``); v2 networks use CAIP-2 (``eip155:8453``).
    ``confirmation_timeout_s`` bounds the wait for a settlement receipt (SDK default 120 s);
    keep it below the caller's own deadline so a slow chain yields an answer, not a hang.
    """
    signer = (
        FacilitatorWeb3Signer(private_key=private_key, rpc_url=rpc_url)
        if confirmation_timeout_s is None
        else FacilitatorWeb3Signer(
            private_key=private_key,
            rpc_url=rpc_url,
            confirmation_timeout_seconds=confirmation_timeout_s,
        )
    )
    facilitator = x402FacilitatorSync()
    # Simulating again inside settle refuses a replayed or drained authorization with its
    # specific reason (e.g. nonce already used) instead of broadcasting a tx that reverts.
    if v2_networks:
        config = ExactEvmSchemeConfig(simulate_in_settle=True)
        facilitator.register(list(v2_networks), ExactEvmFacilitatorScheme(signer, config))
    if v1_networks:
        v1_config = ExactEvmSchemeV1Config(simulate_in_settle=True)
        facilitator.register_v1(list(v1_networks), ExactEvmSchemeV1(signer, v1_config))

    served = {(1, network) for network in v1_networks} | {(2, n) for n in v2_networks}

    def only_served(context: VerifyContext | SettleContext) -> AbortResult | None:
        payload = context.payment_payload
        if (payload.x402_version, payload.get_network()) in served:
            return None
        return AbortResult(reason=INVALID_NETWORK)

    facilitator.on_before_verify(only_served)
    facilitator.on_before_settle(only_served)
    return facilitator


class EmbeddedFacilitator:
    """Async adapter over an ``x402FacilitatorSync``: same calls as ``HTTPFacilitatorClient``."""

    def __init__(self, facilitator: x402FacilitatorSync) -> None:
        """Wrap an already-configured sync facilitator (see ``build_embedded_facilitator``)."""
        self._facilitator = facilitator

    @classmethod
    def create(
        cls,
        private_key: str,
        rpc_url: str,
        *,
        v1_networks: Sequence[str] = ("base",),
        v2_networks: Sequence[str] = ("eip155:8453",),
    ) -> EmbeddedFacilitator:
        """Build the SDK facilitator and wrap it in one step."""
        return cls(
            build_embedded_facilitator(
                private_key, rpc_url, v1_networks=v1_networks, v2_networks=v2_networks
            )
        )

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        """Check the payment against the requirements and simulate the transfer; no tx."""
        payload = _checksummed_payload(payload)
        requirements = _checksummed_requirements(requirements)
        refusal = _malformed(payload)
        if refusal is None:
            try:
                return await asyncio.to_thread(self._facilitator.verify, payload, requirements)
            except (SchemeNotFoundError, PaymentAbortedError) as exc:
                refusal = _refusal(exc, payload)
        reason, message = refusal
        return VerifyResponse(
            is_valid=False, invalid_reason=reason, invalid_message=message, payer=_payer(payload)
        )

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        """Verify again, send ``transferWithAuthorization`` and wait for its receipt."""
        payload = _checksummed_payload(payload)
        requirements = _checksummed_requirements(requirements)
        refusal = _malformed(payload)
        if refusal is None:
            try:
                return await asyncio.to_thread(self._facilitator.settle, payload, requirements)
            except (SchemeNotFoundError, PaymentAbortedError) as exc:
                refusal = _refusal(exc, payload)
        reason, message = refusal
        return SettleResponse(
            success=False,
            error_reason=reason,
            error_message=message,
            payer=_payer(payload),
            transaction="",
            network=payload.get_network(),
        )

    async def supported(self) -> SupportedResponse:
        """The (version, scheme, network) kinds this facilitator settles, and its signers."""
        # No I/O today, but scheme get_extra hooks may do some; keep the loop free regardless.
        return await asyncio.to_thread(self._facilitator.get_supported)


def _malformed(payload: AnyPayload) -> tuple[str, str] | None:
    """Refuse EIP-3009 amounts/times that are not decimal integers (the SDK would raise)."""
    authorization = payload.payload.get("authorization")
    if not isinstance(authorization, dict):
        return None  # other payload kinds (e.g. Permit2) are the SDK's to judge
    bad = [
        name
        for name in ("value", "validAfter", "validBefore")
        if not (isinstance(v := authorization.get(name), str) and v.isascii() and v.isdigit())
    ]
    if not bad:
        return None
    return INVALID_PAYLOAD, f"authorization {', '.join(bad)} must be decimal integer strings"


def _refusal(
    exc: SchemeNotFoundError | PaymentAbortedError, payload: AnyPayload
) -> tuple[str, str]:
    """Map the SDK's routing errors to an x402 reason code and a human message."""
    if isinstance(exc, SchemeNotFoundError):
        return UNSUPPORTED_SCHEME, str(exc)
    network = payload.get_network()
    return (
        exc.reason,
        f"this facilitator does not settle x402 v{payload.x402_version} on {network!r}",
    )


def _payer(payload: AnyPayload) -> str | None:
    """The authorizing address of an EIP-3009 payload, when it has one."""
    authorization = payload.payload.get("authorization")
    if isinstance(authorization, dict) and isinstance(authorization.get("from"), str):
        return str(authorization["from"])
    return None


def _checksum(value: Any) -> Any:
    """EIP-55 form of a hex address; anything else unchanged (the SDK reports it invalid)."""
    if isinstance(value, str) and is_address(value):
        return to_checksum_address(value)
    return value


def _checksummed_requirements(requirements: AnyRequirements) -> AnyRequirements:
    """Copy of the requirements with payTo and asset in checksum form."""
    return requirements.model_copy(
        update={"pay_to": _checksum(requirements.pay_to), "asset": _checksum(requirements.asset)}
    )


def _checksummed_payload(payload: AnyPayload) -> AnyPayload:
    """Copy of an EIP-3009 payload with from/to in checksum form (other payloads unchanged).

    Safe for signed data: EIP-712 hashes addresses as 20 bytes, so case never changes what
    was signed.
    """
    authorization = payload.payload.get("authorization")
    if not isinstance(authorization, dict):
        return payload
    fixed = {k: _checksum(v) if k in ("from", "to") else v for k, v in authorization.items()}
    return payload.model_copy(update={"payload": {**payload.payload, "authorization": fixed}})
