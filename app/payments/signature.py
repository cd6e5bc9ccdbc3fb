"""Local EIP-712 check that an EIP-3009 payment was signed by its payer (no network).

The payer, nonce and signature of a settled payment are public on chain, so nothing that
depends on who is paying (an existing job, an idempotency key, a rate-limit bucket) may be
read before the signature is known to come from `authorization.from`. Only EOA signatures
recover locally: smart-wallet signatures (EIP-1271, EIP-6492) are refused here, which keeps a
forged signature from ever reaching a job or the facilitator.
"""

from __future__ import annotations

from typing import Any

from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Authorization
from x402.mechanisms.evm.utils import get_evm_chain_id
from x402.mechanisms.evm.verify import verify_eoa_signature

SIGNATURE_REFUSED = "invalid_exact_evm_payload_signature"  # the facilitator's own code
_FIELDS = ("from", "to", "value", "validAfter", "validBefore", "nonce")
_TEXT = frozenset({"from", "to", "nonce"})


def signed_by_payer(
    authorization: ExactEIP3009Authorization,
    signature: str,
    *,
    network: str,
    asset: str,
    extra: dict[str, Any],
) -> bool:
    """Whether `signature` over the TransferWithAuthorization typed data recovers to `from`.

    `network` is CAIP-2 (`eip155:8453`); `extra` carries the token's EIP-712 name and version,
    as offered to (and signed by) the client.
    """
    try:
        digest = hash_eip3009_authorization(
            authorization,
            get_evm_chain_id(network),
            asset,
            str(extra["name"]),
            str(extra["version"]),
        )
        raw = bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65:  # EIP-1271 / EIP-6492 wrappers are longer
            return False
        return verify_eoa_signature(digest, raw, authorization.from_address)
    except (ValueError, KeyError, TypeError):
        return False


def normalized(authorization: dict[str, Any]) -> tuple[str, ...]:
    """An authorization's signed fields, comparable whatever the case or number spelling."""
    return tuple(
        str(authorization[name]).lower() if name in _TEXT else str(int(authorization[name]))
        for name in _FIELDS
    )


def same_authorization(presented: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether two wire payloads (`{authorization, signature}`) authorize the same transfer."""
    try:
        return normalized(presented["authorization"]) == normalized(stored["authorization"])
    except (KeyError, TypeError, ValueError):
        return False
