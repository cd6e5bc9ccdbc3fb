"""Forged payments must not read someone else's job, on the real stack.

A victim pays honestly with an `Idempotency-Key`. Once settled, the victim's payer address,
nonce and signature are public on chain, and the key may be guessed. The attacker then sends
(a) a garbage signature with the victim's address, a fresh nonce and the victim's key;
(b) the victim's own payment with one signature byte flipped;
(c) as (a) with a key nobody used.
Each gets the same 402 (refused signature): no job id anywhere, no settlement header, nothing
charged, and the answers to (a) and (c) cannot be told apart, so keys cannot be probed.
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from x402.http import decode_payment_signature_header, encode_payment_signature_header
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.eip712 import build_typed_data_for_signing
from x402.mechanisms.evm.types import (
    ExactEIP3009Authorization,
    ExactEIP3009Payload,
    TypedDataField,
)

from app.jobs.models import Job
from sandbox.chain import CHAIN_ID, mint, usdc_balance
from sandbox.world import HOT_WALLET, OPERATOR, World, address
from tests.helpers import EDIT_BODY, PRICE, ledger_balances, sign_payment

EDIT_PATH = "/v1/images/edit"
SIGNATURE_REFUSED = "invalid_exact_evm_payload_signature"
SETTLEMENT_HEADERS = ("payment-response", "x-payment-response")


def _account(label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(keccak(text=f"x402r forged payments {label}"))
    return account


def _header_name(version: int) -> str:
    return "PAYMENT-SIGNATURE" if version == 2 else "X-PAYMENT"


def _edit(header: str, *, nonce: str | None = None, signature: str | None = None) -> str:
    """The payment `header` with its authorization nonce and/or signature replaced."""
    payload = decode_payment_signature_header(header)
    if nonce is not None:
        payload.payload["authorization"]["nonce"] = nonce
    if signature is not None:
        payload.payload["signature"] = signature
    return encode_payment_signature_header(payload)


def _flip_one_byte(signature: str) -> str:
    digits = signature.removeprefix("0x")
    flipped = f"{int(digits[20:22], 16) ^ 0x5A:02x}"  # a byte of r
    return "0x" + digits[:20] + flipped + digits[22:]


async def _jobs_of(pg_url: str, payer: str) -> int:
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(Job).where(Job.payer == payer)
            )
    finally:
        await engine.dispose()
    return int(count or 0)


def _assert_refused_blind(response: httpx.Response) -> None:
    """A 402 for a refused signature that names no job and carries no settlement."""
    assert response.status_code == 402, response.text
    assert response.json()["error"] == SIGNATURE_REFUSED, response.text
    assert "job_" not in response.text
    assert all("job_" not in value for value in response.headers.values())
    for name in SETTLEMENT_HEADERS:
        assert name not in response.headers


@pytest.mark.parametrize("version", [2, 1], ids=["x402-v2", "x402-v1"])
async def test_forged_payments_read_no_job(world: World, pg_url: str, version: int) -> None:
    victim = _account(f"victim v{version}")
    mint(world.rpc_url, victim.address, PRICE)
    url = world.gateway_url() + EDIT_PATH
    name = _header_name(version)
    key = f"victim-order-{version}-{secrets.token_hex(4)}"

    honest = await sign_payment(url, victim.key.hex(), v1_only=version == 1)
    async with httpx.AsyncClient(timeout=60) as http:
        paid = await http.post(url, json=EDIT_BODY, headers={**honest, "Idempotency-Key": key})
    assert paid.status_code == 200, paid.text
    assert paid.json()["jobId"].startswith("job_")
    assert usdc_balance(world.rpc_url, victim.address) == 0  # the victim paid exactly once

    parties = (victim.address, address(OPERATOR), address(HOT_WALLET))
    before = {who: usdc_balance(world.rpc_url, who) for who in parties}
    ledger_before = await ledger_balances(pg_url)
    garbage = "0x" + secrets.token_hex(65)
    stolen_key = _edit(honest[name], nonce="0x" + secrets.token_hex(32), signature=garbage)
    replay = _edit(honest[name], signature=_flip_one_byte(decode_sig(honest[name])))
    probe = _edit(honest[name], nonce="0x" + secrets.token_hex(32), signature=garbage)

    async with httpx.AsyncClient(timeout=60) as http:
        with_key = await http.post(
            url, json=EDIT_BODY, headers={name: stolen_key, "Idempotency-Key": key}
        )
        flipped = await http.post(url, json=EDIT_BODY, headers={name: replay})
        flipped_with_key = await http.post(
            url, json=EDIT_BODY, headers={name: replay, "Idempotency-Key": key}
        )
        unknown_key = await http.post(
            url, json=EDIT_BODY, headers={name: probe, "Idempotency-Key": "nobody-used-this"}
        )

    answers = (with_key, flipped, flipped_with_key, unknown_key)
    assert [r.status_code for r in answers] == [402] * 4, [r.text for r in answers]
    for response in answers:
        _assert_refused_blind(response)
    # A known key and an unknown one get the very same answer: keys cannot be probed.
    assert with_key.content == unknown_key.content
    assert with_key.headers["PAYMENT-REQUIRED"] == unknown_key.headers["PAYMENT-REQUIRED"]

    assert {who: usdc_balance(world.rpc_url, who) for who in parties} == before
    assert await ledger_balances(pg_url) == ledger_before
    assert await _jobs_of(pg_url, victim.address) == 1


def decode_sig(header: str) -> str:
    """The signature of a payment header."""
    signature: str = decode_payment_signature_header(header).payload["signature"]
    return signature


async def test_a_second_authorization_with_a_used_nonce_reads_no_job(
    world: World, pg_url: str
) -> None:
    """The payer's own, validly signed, different transfer under a nonce that bought a job.

    It can never settle (the nonce is spent), so it must not be answered as the job's retry.
    """
    payer = _account("payer re-signing a nonce")
    mint(world.rpc_url, payer.address, PRICE)
    url = world.gateway_url() + EDIT_PATH
    honest = await sign_payment(url, payer.key.hex())
    async with httpx.AsyncClient(timeout=60) as http:
        paid = await http.post(url, json=EDIT_BODY, headers=honest)
    assert paid.status_code == 200, paid.text

    payload = decode_payment_signature_header(honest["PAYMENT-SIGNATURE"])
    signed = payload.payload["authorization"]
    longer = ExactEIP3009Authorization(
        from_address=signed["from"],
        to=signed["to"],
        value=signed["value"],
        valid_after=signed["validAfter"],
        valid_before=str(int(signed["validBefore"]) + 60),
        nonce=signed["nonce"],
    )
    extra = payload.accepted.extra
    domain, types, primary, message = build_typed_data_for_signing(
        longer, CHAIN_ID, payload.accepted.asset, extra["name"], extra["version"]
    )
    fields = {
        k: [TypedDataField(name=f["name"], type=f["type"]) for f in v] for k, v in types.items()
    }
    signature = EthAccountSigner(payer).sign_typed_data(domain, fields, primary, message)
    payload.payload = ExactEIP3009Payload(
        authorization=longer, signature="0x" + signature.hex()
    ).to_dict()
    operator = usdc_balance(world.rpc_url, address(OPERATOR))

    async with httpx.AsyncClient(timeout=60) as http:
        again = await http.post(
            url,
            json=EDIT_BODY,
            headers={"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)},
        )

    assert again.status_code == 402, again.text
    assert again.json()["error"] == "invalid_exact_evm_nonce_already_used"
    assert "job_" not in again.text
    assert "payment-response" not in again.headers
    assert usdc_balance(world.rpc_url, address(OPERATOR)) == operator
    assert await _jobs_of(pg_url, payer.address) == 1
