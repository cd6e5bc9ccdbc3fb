"""Browsers on a paid path: the SDK's paywall page for them, the JSON 402 for everyone else.

Same in-process gateway as the discovery tests (`tests/inprocess_app.py`: facilitator and
upstream on a closed port, so nothing here can move money). The browser rule is pinned to the
SDK middleware's own; the fast paths are exercised in both orders, so a recorded answer can
never reach the other kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from x402.http import decode_payment_required_header, encode_payment_signature_header
from x402.http.x402_http_server_base import x402HTTPServerBase
from x402.schemas import PaymentRequiredV1

from app.api.edits import EDIT_PATH
from app.api.paywall import is_browser, paywall_page
from app.core.settings import BASE_USDC
from app.payments.offer import OfferTerms, build_offer
from app.upstream import listing
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import OPERATOR, PAYER, address, key_hex
from tests.helpers import PRICE
from tests.inprocess_app import (
    BROWSER,
    PATHS,
    client_for,
    start_app,
    x402_config,
)
from tests.settings_factory import PUBLIC_BASE_URL

BASE_SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    """One gateway for the module (no workers)."""
    async for application in start_app(tmp_path_factory.mktemp("paywall")):
        yield application


@pytest.fixture
async def fresh_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    """A gateway whose fast paths have recorded nothing yet."""
    async for application in start_app(tmp_path):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.mark.parametrize(
    ("accept", "agent"),
    [
        (BROWSER["Accept"], BROWSER["User-Agent"]),
        ("text/html", "curl/8.5"),
        ("application/json", BROWSER["User-Agent"]),
        ("", ""),
        ("*/*", "Mozilla/5.0"),
    ],
)
def test_browser_rule_is_the_sdk_middlewares(accept: str, agent: str) -> None:
    adapter = SimpleNamespace(get_accept_header=lambda: accept, get_user_agent=lambda: agent)
    sdk = x402HTTPServerBase._is_web_browser(None, adapter)  # type: ignore[arg-type]
    assert is_browser(accept, agent) is sdk


@pytest.mark.parametrize("path", PATHS)
async def test_browser_post_gets_the_sdk_paywall_and_others_get_json(
    client: httpx.AsyncClient, path: str
) -> None:
    page = await client.post(path, json=EDIT_BODY, headers=BROWSER)
    assert page.status_code == 402
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    config = x402_config(page.text)
    assert config["testnet"] is False  # Base mainnet (8453)
    assert config["amount"] == pytest.approx(0.06324)
    assert config["currentUrl"] == PUBLIC_BASE_URL + path
    header = decode_payment_required_header(page.headers["PAYMENT-REQUIRED"])
    assert config["paymentRequired"] == header.model_dump(by_alias=True, exclude_none=True)
    (accepted,) = header.accepts
    assert (accepted.network, accepted.asset, accepted.amount) == (
        "eip155:8453",
        BASE_USDC,
        "63240",
    )

    for headers in ({}, {"Accept": "text/html"}, {"User-Agent": BROWSER["User-Agent"]}):
        api = await client.post(path, json=EDIT_BODY, headers=headers)
        assert api.status_code == 402
        assert api.headers["content-type"] == "application/json"
        assert (
            PaymentRequiredV1.model_validate(api.json()).accepts[0].max_amount_required == "63240"
        )


def test_paywall_is_testnet_on_base_sepolia_only() -> None:
    def terms(network: str, asset: str) -> OfferTerms:
        return OfferTerms(
            resource_url=PUBLIC_BASE_URL + EDIT_PATH,
            price_atomic=PRICE,
            network=network,
            asset=asset,
            pay_to=address(OPERATOR),
            max_timeout_seconds=300,
            description=listing.DESCRIPTION,
            payment_identifier_required=False,
            input_schema=listing.INPUT_SCHEMA,
            output_schema=listing.OUTPUT_SCHEMA,
        )

    sepolia = x402_config(
        bytes(paywall_page(build_offer(terms("base-sepolia", BASE_SEPOLIA_USDC))).body).decode()
    )
    mainnet = x402_config(bytes(paywall_page(build_offer(terms("base", BASE_USDC))).body).decode())
    assert sepolia["testnet"] is True
    assert sepolia["paymentRequired"]["accepts"][0]["network"] == "eip155:84532"
    assert mainnet["testnet"] is False


@pytest.mark.parametrize("path", PATHS)
async def test_get_on_a_paid_path_is_the_paywall_for_html_and_405_otherwise(
    client: httpx.AsyncClient, path: str
) -> None:
    page = await client.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 402
    assert page.headers["content-type"].startswith("text/html")
    assert x402_config(page.text)["amount"] == pytest.approx(0.06324)

    for headers in ({}, {"Accept": "application/json"}):
        refused = await client.get(path, headers=headers)
        assert refused.status_code == 405
        assert refused.headers["allow"] == "POST"
        assert refused.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", PATHS)
async def test_paid_get_is_refused_before_any_facilitator_call(
    client: httpx.AsyncClient, path: str
) -> None:
    """The paywall's script retries the page's URL with GET and the payment: no body, no sale.

    The facilitator is a closed port: a verify or settle attempt would be a 503, not a 405.
    """
    unpaid = await client.post(path, json=EDIT_BODY)
    required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    payload = await payer_client(key_hex(PAYER)).create_payment_payload(required)
    paid = await client.get(
        path, headers={"PAYMENT-SIGNATURE": encode_payment_signature_header(payload), **BROWSER}
    )
    assert paid.status_code == 405
    assert paid.json()["error"] == "method_not_allowed"
    assert "PAYMENT-RESPONSE" not in paid.headers


# --- the fast paths never mix the two answers ------------------------------------------------


@pytest.mark.parametrize("browser_first", [True, False], ids=["browser-first", "json-first"])
async def test_fast_paths_never_serve_html_to_json_clients_or_json_to_browsers(
    fresh_app: FastAPI, browser_first: bool
) -> None:
    async with client_for(fresh_app) as http:
        order = [True, False, True, False, True] if browser_first else [False, True, False, True]
        for browser in order * 2:
            answer = await http.post(EDIT_PATH, json=EDIT_BODY, headers=BROWSER if browser else {})
            assert answer.status_code == 402
            kind = answer.headers["content-type"]
            if browser:
                assert kind.startswith("text/html"), "a browser got the JSON 402"
            else:
                assert kind == "application/json", "a JSON client got the paywall page"
                assert answer.json()["x402Version"] == 1


@pytest.mark.parametrize("path", PATHS)
async def test_head_on_a_paid_path_is_a_bare_2xx_for_the_paywalls_own_check(
    client: httpx.AsyncClient, path: str
) -> None:
    """The paywall script HEADs its own URL (a COOP check) and logs an error unless 2xx."""
    head = await client.head(path, headers=BROWSER)
    assert head.status_code == 204
    assert head.content == b""
    assert "PAYMENT-REQUIRED" not in head.headers
