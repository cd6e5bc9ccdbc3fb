"""Refunds: an EIP-3009 transfer signed by the hot wallet and settled by the facilitator.

The facilitator pays the gas, so the hot wallet needs only USDC. The signed payload is stored
on the job before it is settled; a retry settles the same authorization, never a second one.
"""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.schemas import PaymentPayload, PaymentRequired, PaymentRequirements
from x402.schemas.helpers import parse_payment_payload

from app.core.networks import caip2
from app.payments.offer import build_extra


def refund_requirements(
    *,
    payer: str,
    amount: int,
    network: str,
    asset: str,
    extra: dict[str, Any] | None = None,
    timeout_s: int = 86_400,
) -> PaymentRequirements:
    """Requirements under which the hot wallet 'pays' the client back, in the token paid.

    `extra`: the token's EIP-712 domain as the client's payment named it (the SDK's table
    otherwise, which knows no token added with `X402R_EXTRA_OFFERS`).
    """
    return PaymentRequirements(
        scheme="exact",
        network=caip2(network),
        asset=asset,
        amount=str(amount),
        pay_to=payer,
        max_timeout_seconds=timeout_s,
        extra=dict(extra) if extra else build_extra(network, asset),
    )


async def sign_refund(wallet: LocalAccount, requirements: PaymentRequirements) -> dict[str, Any]:
    """One signed refund authorization, as wire JSON ready to store."""
    client = x402Client()
    # A refund may exceed the SDK's default per-payment cap; we bound it by the charge.
    client.set_spend_controls(False)
    register_exact_evm_client(client, EthAccountSigner(wallet))
    payload = await client.create_payment_payload(
        PaymentRequired(x402_version=2, accepts=[requirements])
    )
    data: dict[str, Any] = payload.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def load_refund(
    stored: dict[str, Any],
) -> tuple[PaymentPayload, PaymentRequirements]:
    """The stored refund payload and the requirements it was signed for."""
    payload = parse_payment_payload(stored)
    assert isinstance(payload, PaymentPayload)
    return payload, payload.accepted
