"""The local EIP-712 check: only the payer's own signature over the exact fields recovers."""

from __future__ import annotations

import secrets
import time

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.eip712 import build_typed_data_for_signing
from x402.mechanisms.evm.types import (
    ExactEIP3009Authorization,
    ExactEIP3009Payload,
    TypedDataField,
)

from app.core.settings import BASE_USDC
from app.payments.signature import same_authorization, signed_by_payer

NETWORK = "eip155:8453"
EXTRA = {"name": "USD Coin", "version": "2"}
PAYER: LocalAccount = Account.from_key("0x" + "11" * 32)
OTHER: LocalAccount = Account.from_key("0x" + "22" * 32)


def _authorization(**changes: str) -> ExactEIP3009Authorization:
    now = int(time.time())
    fields = {
        "from_address": PAYER.address,
        "to": "0x" + "33" * 20,
        "value": "63240",
        "valid_after": "0",
        "valid_before": str(now + 300),
        "nonce": "0x" + "44" * 32,
        **changes,
    }
    return ExactEIP3009Authorization(**fields)


def _sign(
    auth: ExactEIP3009Authorization,
    signer: LocalAccount = PAYER,
    *,
    chain_id: int = 8453,
    name: str = "USD Coin",
) -> str:
    """Signed as the SDK's clients sign (its typed-data builder and signer)."""
    domain, types, primary, message = build_typed_data_for_signing(
        auth, chain_id, BASE_USDC, name, "2"
    )
    fields = {
        k: [TypedDataField(name=f["name"], type=f["type"]) for f in v] for k, v in types.items()
    }
    return "0x" + EthAccountSigner(signer).sign_typed_data(domain, fields, primary, message).hex()


def _check(auth: ExactEIP3009Authorization, signature: str) -> bool:
    return signed_by_payer(auth, signature, network=NETWORK, asset=BASE_USDC, extra=EXTRA)


def test_the_payers_signature_recovers() -> None:
    auth = _authorization()
    assert _check(auth, _sign(auth))


def test_lower_case_addresses_recover_the_same() -> None:
    auth = _authorization()
    signature = _sign(auth)
    lower = _authorization(from_address=PAYER.address.lower())
    assert _check(lower, signature)


@pytest.mark.parametrize("position", [2, 40, 66, 128])
def test_one_flipped_byte_does_not_recover(position: int) -> None:
    auth = _authorization()
    signature = _sign(auth)
    byte = int(signature[position : position + 2], 16) ^ 0x01
    assert not _check(auth, f"{signature[:position]}{byte:02x}{signature[position + 2 :]}")


def test_someone_elses_signature_does_not_recover() -> None:
    auth = _authorization()
    assert not _check(auth, _sign(auth, OTHER))


@pytest.mark.parametrize(
    "change",
    [
        {"value": "63241"},
        {"valid_before": "99999999999"},
        {"valid_after": "1"},
        {"to": "0x" + "55" * 20},
        {"nonce": "0x" + "45" * 32},
    ],
)
def test_every_signed_field_is_bound(change: dict[str, str]) -> None:
    signature = _sign(_authorization())
    assert not _check(_authorization(**change), signature)


def test_another_domain_does_not_recover() -> None:
    auth = _authorization()
    assert not _check(auth, _sign(auth, chain_id=84532))
    assert not _check(auth, _sign(auth, name="USDC"))


@pytest.mark.parametrize(
    "signature",
    [
        "0x" + "00" * 65,
        "0x" + secrets.token_hex(65),
        "0x" + secrets.token_hex(64),
        "0x" + secrets.token_hex(200),  # a smart-wallet (EIP-1271 / EIP-6492) signature's shape
        "0x",
        "not hex",
    ],
)
def test_garbage_and_smart_wallet_signatures_do_not_recover(signature: str) -> None:
    assert not _check(_authorization(), signature)


def test_missing_domain_does_not_recover() -> None:
    auth = _authorization()
    assert not signed_by_payer(auth, _sign(auth), network=NETWORK, asset=BASE_USDC, extra={})
    assert not signed_by_payer(auth, _sign(auth), network="base", asset=BASE_USDC, extra=EXTRA)


def test_same_authorization_ignores_spelling_not_fields() -> None:
    auth = ExactEIP3009Payload(authorization=_authorization()).to_dict()["authorization"]
    spelled = {**auth, "from": auth["from"].lower(), "nonce": auth["nonce"].upper()}
    assert same_authorization({"authorization": auth}, {"authorization": spelled})
    longer = {**auth, "validBefore": str(int(auth["validBefore"]) + 1)}
    assert not same_authorization({"authorization": auth}, {"authorization": longer})
    assert not same_authorization({"authorization": auth}, {})


def test_recovery_is_cheap() -> None:
    """Measured cost of one local check (hash + recovery); bounded loosely for slow machines."""
    auth = _authorization()
    signature = _sign(auth)
    runs = 200
    started = time.perf_counter()
    for _ in range(runs):
        assert _check(auth, signature)
    per_check = (time.perf_counter() - started) / runs
    print(f"local EIP-712 signature check: {per_check * 1e6:.0f} µs")  # noqa: T201
    assert per_check < 0.005
