"""Which upstream option we pay (`app.upstream.choice`), and that it is exactly what is signed.

The upstream's 402 comes from the simulated upstream's own requirement builder over an
`httpx.MockTransport` (the only thing mocked: the upstream); the signing is the official SDK's
with the hot wallet's key.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from eth_account import Account
from x402.schemas import PaymentRequired, PaymentRequiredV1, PaymentRequirements

from app.upstream.choice import OfferPins, choose
from app.upstream.client import UpstreamClient
from app.upstream.errors import UpstreamPriceAbovePaid, UpstreamPriceTooHigh, UpstreamRejected
from sandbox.sim_hostile import USDC_BASE, build_requirements
from sandbox.world import HOT_WALLET, UPSTREAM_PAYEE, address, key_hex

URL = "http://upstream.test/api/ai/generations/images/nano-banana-edit"
PAYEE = address(UPSTREAM_PAYEE)
OTHER = address(HOT_WALLET)


def options(*terms: tuple[str, str, int], pay_to: str = PAYEE, asset: str = USDC_BASE) -> Any:
    return [
        build_requirements(pay_to, "http://upstream.test", amount).model_copy(
            update={"scheme": scheme, "network": network, "asset": asset}
        )
        for scheme, network, amount in terms
    ]


def required(*terms: tuple[str, str, int], **kw: str) -> PaymentRequiredV1:
    return PaymentRequiredV1(error="X-PAYMENT header is required", accepts=options(*terms, **kw))


def client_for(body: PaymentRequiredV1) -> UpstreamClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, json=json.loads(body.model_dump_json(by_alias=True)))

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    wallet = Account.from_key(key_hex(HOT_WALLET))
    return UpstreamClient(URL, wallet, http, timeout_s=5, quote_ttl_s=0)


def test_the_exact_option_is_chosen_whatever_comes_first() -> None:
    chosen = choose(required(("upto", "base", 1), ("exact", "base", 900_000)), OfferPins())
    assert chosen.amount == 900_000
    assert [(o.scheme, o.max_amount_required) for o in chosen.payment_required.accepts] == [
        ("exact", "900000")
    ]


def test_the_cheapest_acceptable_option_is_chosen() -> None:
    chosen = choose(
        required(
            ("exact", "base", 60_000), ("exact", "base-sepolia", 1), ("exact", "base", 52_700)
        ),
        OfferPins(),
    )
    assert chosen.amount == 52_700


@pytest.mark.parametrize(
    ("body", "pins"),
    [
        (required(("exact", "solana", 52_700)), OfferPins()),
        (required(("upto", "base", 52_700)), OfferPins()),
        (required(("exact", "base-sepolia", 52_700)), OfferPins()),
        (required(("exact", "base", 52_700), asset=OTHER), OfferPins()),
        (required(("exact", "base", 52_700)), OfferPins(pay_to=OTHER)),
        (required(("exact", "base", 52_700), pay_to="not-an-address"), OfferPins()),
        (PaymentRequiredV1(error="x", accepts=[]), OfferPins()),
    ],
    ids=["network", "scheme", "testnet", "asset", "pinned-payee", "bad-payee", "no-options"],
)
def test_an_option_off_the_pins_is_refused(body: PaymentRequiredV1, pins: OfferPins) -> None:
    with pytest.raises(UpstreamRejected) as failed:
        choose(body, pins)
    assert failed.value.code == "upstream_no_acceptable_offer"


def test_a_pinned_payee_matches_in_any_case_and_v2_networks_match_by_chain() -> None:
    assert choose(required(("exact", "base", 52_700)), OfferPins(pay_to=PAYEE.lower())).amount
    v2 = PaymentRequired(
        accepts=[
            PaymentRequirements(
                scheme="exact",
                network="eip155:8453",
                asset=USDC_BASE,
                amount="52700",
                pay_to=PAYEE,
                max_timeout_seconds=300,
                extra={"name": "USD Coin", "version": "2"},
            )
        ]
    )
    assert choose(v2, OfferPins(network="base")).amount == 52_700


async def test_an_expensive_exact_option_behind_a_cheap_one_is_never_signed() -> None:
    upstream = client_for(required(("upto", "base", 1), ("exact", "base", 900_000)))
    quote = await upstream.quote({"prompt": "x"})
    assert quote.amount == 900_000  # what the SDK would sign, not accepts[0]'s 1
    with pytest.raises(UpstreamPriceTooHigh):
        await upstream.sign(quote, max_amount=100_000, paid=63_240)


async def test_what_is_signed_is_the_chosen_option() -> None:
    upstream = client_for(required(("upto", "base", 1), ("exact", "base", 52_700)))
    quote = await upstream.quote({"prompt": "x"})
    signed = await upstream.sign(quote, max_amount=100_000, paid=63_240)
    assert (signed.amount, signed.pay_to) == (52_700, PAYEE)


async def test_a_price_above_what_the_client_paid_is_never_signed() -> None:
    upstream = client_for(required(("exact", "base", 70_000)))
    quote = await upstream.quote({"prompt": "x"})
    with pytest.raises(UpstreamPriceAbovePaid) as failed:
        await upstream.sign(quote, max_amount=100_000, paid=63_240)
    assert failed.value.code == "upstream_price_above_paid"


async def test_an_unsupported_network_is_refused_when_quoting() -> None:
    upstream = client_for(required(("exact", "solana", 52_700)))
    with pytest.raises(UpstreamRejected) as failed:
        await upstream.quote({"prompt": "x"})
    assert failed.value.code == "upstream_no_acceptable_offer"


@pytest.mark.parametrize(("offered", "signed_for"), [(300, 30), (10**80, 30), (0, 30), (20, 20)])
def test_the_validity_we_sign_is_cut_to_our_limit(offered: int, signed_for: int) -> None:
    """Until it expires our authorization can be cashed: a refund that depends on it waits."""
    body = required(("exact", "base", 52_700))
    body = body.model_copy(
        update={"accepts": [body.accepts[0].model_copy(update={"max_timeout_seconds": offered})]}
    )
    chosen = choose(body, OfferPins(), 30)
    assert chosen.payment_required.accepts[0].max_timeout_seconds == signed_for
    assert chosen.option.max_timeout_seconds == offered  # as listed (a v2 payload echoes it)


async def test_a_signed_upstream_payment_expires_within_our_limit() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = required(("exact", "base", 52_700))
        return httpx.Response(402, json=json.loads(body.model_dump_json(by_alias=True)))

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    wallet = Account.from_key(key_hex(HOT_WALLET))
    upstream = UpstreamClient(URL, wallet, http, timeout_s=5, quote_ttl_s=0, auth_validity_s=45)
    signed = await upstream.sign(await upstream.quote({"prompt": "x"}), max_amount=100_000)
    assert signed.valid_before <= time.time() + 45
