"""Payments the facilitator refuses, on the real stack: nothing charged, no job, nothing forwarded.

Each payment is well-formed (it passes the gateway's local checks) and is refused by the
gateway's real facilitator on anvil. For each the test asserts the 402 carries the
facilitator's specific reason in both x402 versions' shapes, the payer's USDC balance did not
move, the authorization is still unused on chain (or, for the replay, was used only by its
earlier settlement), the database holds no job for the payment (refusal at verify happens
before a job row is written), and the simulated upstream saw no request at all.

Payers are fresh accounts of this module (one funded here, one never funded), so balances are
not disturbed by other tests sharing the session world. Authorizations with chosen validity
times are signed with the SDK's EIP-712 helpers, as its own clients sign them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from x402.http import (
    decode_payment_required_header,
    decode_payment_signature_header,
    encode_payment_signature_header,
)
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.eip712 import build_typed_data_for_signing
from x402.mechanisms.evm.types import (
    ExactEIP3009Authorization,
    ExactEIP3009Payload,
    TypedDataField,
)
from x402.schemas import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
)

from app.jobs.models import Job, JobState
from sandbox.chain import CHAIN_ID, authorization_state, mint, usdc_balance
from sandbox.world import OPERATOR, World, address
from tests.helpers import EDIT_BODY, PRICE

EDIT_PATH = "/v1/images/edit"
BUSY_STATES = (JobState.VERIFIED.value, JobState.PAID.value, JobState.UPSTREAM_SIGNED.value)
UPSTREAM_COUNTERS = ("submits", "payment_required", "payments_rejected", "paid_submits")

Requirements = PaymentRequirements | PaymentRequirementsV1


def _account(label: str) -> LocalAccount:
    """A deterministic account of this module, unknown to every other test."""
    account: LocalAccount = Account.from_key(keccak(text=f"x402r bad payments {label}"))
    return account


FUNDED = _account("funded payer")
UNFUNDED = _account("payer without funds")
STRANGER = _account("someone else")


@dataclass(frozen=True)
class Offered:
    """What the gateway's 402 offers, in both versions."""

    v2: PaymentRequired
    v1: PaymentRequiredV1


@pytest.fixture(scope="module")
def funded(world: World) -> LocalAccount:
    """This module's payer, with 10 USDC."""
    mint(world.rpc_url, FUNDED.address, 10 * 10**6)
    return FUNDED


@pytest.fixture(scope="module")
async def offered(world: World) -> Offered:
    """The gateway's payment terms for the edit."""
    async with httpx.AsyncClient(timeout=30) as http:
        unpaid = await http.post(world.gateway_url() + EDIT_PATH, json=EDIT_BODY)
    assert unpaid.status_code == 402
    v2 = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    assert isinstance(v2, PaymentRequired)
    return Offered(v2=v2, v1=PaymentRequiredV1.model_validate_json(unpaid.content))


def sign(
    account: LocalAccount,
    offered: Offered,
    version: int,
    *,
    valid_after: int | None = None,
    valid_before: int | None = None,
    signer: LocalAccount | None = None,
) -> tuple[str, ExactEIP3009Authorization]:
    """An EIP-3009 payment for the offer, signed with the SDK's EIP-712 helpers.

    Times default to what the SDK clients sign (v2: 0 to now+300, v1: now-600 to now+300).
    `signer` signs in place of `account` (a forged signature for `account`'s money).
    """
    now = int(time.time())
    default_after = 0 if version == 2 else now - 600
    requirements: Requirements = offered.v2.accepts[0] if version == 2 else offered.v1.accepts[0]
    amount = (
        requirements.amount
        if isinstance(requirements, PaymentRequirements)
        else requirements.max_amount_required
    )
    authorization = ExactEIP3009Authorization(
        from_address=account.address,
        to=requirements.pay_to,
        value=amount,
        valid_after=str(default_after if valid_after is None else valid_after),
        valid_before=str(now + 300 if valid_before is None else valid_before),
        nonce="0x" + secrets.token_hex(32),
    )
    extra = requirements.extra or {}
    domain, types, primary_type, message = build_typed_data_for_signing(
        authorization, CHAIN_ID, requirements.asset, extra["name"], extra["version"]
    )
    fields = {
        name: [TypedDataField(name=f["name"], type=f["type"]) for f in members]
        for name, members in types.items()
    }
    signature = EthAccountSigner(signer or account).sign_typed_data(
        domain, fields, primary_type, message
    )
    inner = ExactEIP3009Payload(authorization=authorization, signature="0x" + signature.hex())
    payload: PaymentPayload | PaymentPayloadV1
    if isinstance(requirements, PaymentRequirements):
        payload = PaymentPayload(
            x402_version=2,
            payload=inner.to_dict(),
            accepted=requirements,
            resource=offered.v2.resource,
        )
    else:
        payload = PaymentPayloadV1(
            x402_version=1, scheme="exact", network="base", payload=inner.to_dict()
        )
    return encode_payment_signature_header(payload), authorization


def header_name(version: int) -> str:
    """Where each version's payment goes."""
    return "PAYMENT-SIGNATURE" if version == 2 else "X-PAYMENT"


async def _jobs_for(pg_url: str, payer: str, nonce: str) -> int:
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.payer == payer, Job.pay_nonce == nonce.lower())
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def _wait_until_quiet(pg_url: str, timeout: float = 60) -> None:
    """Let jobs of earlier tests finish talking to the upstream before its counters reset."""
    engine = create_async_engine(pg_url)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while asyncio.get_running_loop().time() < deadline:
            async with engine.connect() as conn:
                busy = await conn.scalar(
                    select(func.count()).select_from(Job).where(Job.state.in_(BUSY_STATES))
                )
            if not busy:
                return
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def refused(
    world: World,
    pg_url: str,
    version: int,
    header: str,
    authorization: ExactEIP3009Authorization,
    *,
    used_before: bool = False,
) -> tuple[str, str]:
    """POST the paid edit; assert a 402 that moved nothing. Returns (reason, message)."""
    payer = authorization.from_address
    await _wait_until_quiet(pg_url)
    world.reset_upstream()
    balance = usdc_balance(world.rpc_url, payer)
    operator = usdc_balance(world.rpc_url, address(OPERATOR))

    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            world.gateway_url() + EDIT_PATH, json=EDIT_BODY, headers={header_name(version): header}
        )

    assert response.status_code == 402, response.text
    body = PaymentRequiredV1.model_validate_json(response.content)
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    assert body.error == required.error
    assert body.accepts[0].max_amount_required == str(PRICE)
    message = response.json()["message"]
    assert isinstance(message, str)

    assert usdc_balance(world.rpc_url, payer) == balance
    assert usdc_balance(world.rpc_url, address(OPERATOR)) == operator
    assert authorization_state(world.rpc_url, payer, authorization.nonce) is used_before
    assert await _jobs_for(pg_url, payer, authorization.nonce) == 0
    stats = world.upstream_stats()
    assert {k: stats[k] for k in UPSTREAM_COUNTERS} == dict.fromkeys(UPSTREAM_COUNTERS, 0)
    assert body.error is not None
    return body.error, message


VERSIONS = pytest.mark.parametrize("version", [2, 1], ids=["x402-v2", "x402-v1"])


@VERSIONS
async def test_expired_authorization(
    world: World, pg_url: str, funded: LocalAccount, offered: Offered, version: int
) -> None:
    now = int(time.time())
    header, auth = sign(funded, offered, version, valid_after=now - 600, valid_before=now - 60)

    reason, _ = await refused(world, pg_url, version, header, auth)

    assert reason == "invalid_exact_evm_payload_authorization_valid_before"


@VERSIONS
async def test_authorization_expiring_within_seconds(
    world: World, pg_url: str, funded: LocalAccount, offered: Offered, version: int
) -> None:
    """Too close to expiry to be settled safely (the facilitator wants 6 s of margin)."""
    now = int(time.time())
    header, auth = sign(funded, offered, version, valid_after=now - 600, valid_before=now + 2)

    reason, _ = await refused(world, pg_url, version, header, auth)

    assert reason == "invalid_exact_evm_payload_authorization_valid_before"


@VERSIONS
async def test_authorization_not_yet_valid(
    world: World, pg_url: str, funded: LocalAccount, offered: Offered, version: int
) -> None:
    now = int(time.time())
    header, auth = sign(funded, offered, version, valid_after=now + 3600, valid_before=now + 7200)

    reason, _ = await refused(world, pg_url, version, header, auth)

    assert reason == "invalid_exact_evm_payload_authorization_valid_after"


@VERSIONS
async def test_payer_without_funds(
    world: World, pg_url: str, offered: Offered, version: int
) -> None:
    assert usdc_balance(world.rpc_url, UNFUNDED.address) == 0
    header, auth = sign(UNFUNDED, offered, version)

    reason, _ = await refused(world, pg_url, version, header, auth)

    assert reason == "invalid_exact_evm_insufficient_balance"


async def test_payer_with_less_than_the_price(world: World, pg_url: str, offered: Offered) -> None:
    short = _account("payer one unit short")
    if usdc_balance(world.rpc_url, short.address) == 0:
        mint(world.rpc_url, short.address, PRICE - 1)
    assert usdc_balance(world.rpc_url, short.address) == PRICE - 1
    header, auth = sign(short, offered, 2)

    reason, _ = await refused(world, pg_url, 2, header, auth)

    assert reason == "invalid_exact_evm_insufficient_balance"


def forged(
    payer: LocalAccount, offered: Offered, version: int, forgery: str
) -> tuple[str, ExactEIP3009Authorization]:
    """A payment from `payer` whose signature does not authorize it."""
    if forgery == "signed-by-someone-else":
        return sign(payer, offered, version, signer=STRANGER)
    header, auth = sign(payer, offered, version)
    payload = decode_payment_signature_header(header)
    signature: str = payload.payload["signature"]
    digit = "1" if signature[10] == "0" else "0"  # one hex digit of r
    payload.payload["signature"] = signature[:10] + digit + signature[11:]
    return encode_payment_signature_header(payload), auth


@VERSIONS
@pytest.mark.parametrize("forgery", ["corrupted", "signed-by-someone-else"])
async def test_bad_signature(
    world: World,
    pg_url: str,
    funded: LocalAccount,
    offered: Offered,
    version: int,
    forgery: str,
) -> None:
    header, auth = forged(funded, offered, version, forgery)

    reason, _ = await refused(world, pg_url, version, header, auth)

    assert reason == "invalid_exact_evm_payload_signature"


@VERSIONS
async def test_tampered_validity_breaks_the_signature(
    world: World, pg_url: str, funded: LocalAccount, offered: Offered, version: int
) -> None:
    """Stretching validBefore after signing is caught: the signature no longer matches."""
    header, auth = sign(funded, offered, version)
    payload = decode_payment_signature_header(header)
    payload.payload["authorization"]["validBefore"] = str(int(auth.valid_before) + 3600)

    reason, _ = await refused(
        world, pg_url, version, encode_payment_signature_header(payload), auth
    )

    assert reason == "invalid_exact_evm_payload_signature"


async def test_authorization_already_settled_elsewhere(
    world: World, pg_url: str, funded: LocalAccount, offered: Offered
) -> None:
    """An authorization someone already settled (here: straight through a facilitator)."""
    header, auth = sign(funded, offered, 2)
    payload = decode_payment_signature_header(header)
    async with httpx.AsyncClient(timeout=60) as http:
        settled = await http.post(
            world.facilitator_url + "/settle",
            json={
                "x402Version": 2,
                "paymentPayload": payload.model_dump(mode="json", by_alias=True, exclude_none=True),
                "paymentRequirements": offered.v2.accepts[0].model_dump(
                    mode="json", by_alias=True, exclude_none=True
                ),
            },
        )
    assert settled.status_code == 200
    assert settled.json()["success"] is True, settled.text
    assert authorization_state(world.rpc_url, funded.address, auth.nonce) is True

    reason, _ = await refused(world, pg_url, 2, header, auth, used_before=True)

    assert reason == "invalid_exact_evm_nonce_already_used"
