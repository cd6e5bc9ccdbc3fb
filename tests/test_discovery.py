"""How the offer is found: by indexers (bazaar extension, /.well-known/x402) and by browsers.

The app runs in-process (ASGI, real lifespan, SQLite in a temp dir); its facilitator and
upstream point at a closed port, so nothing here can move money (no job row is ever written).
What we serve is checked with the SDK's own parsers: the facilitator-side bazaar extractor, its
discovery-list parser and its browser rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from x402.extensions.bazaar import (
    BodyDiscoveryInfo,
    extract_discovery_info,
    validate_and_extract,
)
from x402.extensions.bazaar.facilitator_client import _parse_list_response
from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER
from x402.http import decode_payment_required_header, encode_payment_signature_header
from x402.http.x402_http_server_base import x402HTTPServerBase
from x402.schemas import PaymentRequiredV1

from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from app.api.paywall import is_browser, paywall_page
from app.api.schemas import AcceptedJob
from app.context import Gateway
from app.core.settings import BASE_USDC
from app.main import create_app
from app.payments.offer import OfferTerms, build_offer
from app.upstream import listing
from app.upstream.schemas import EXAMPLE_EDIT, EditRequest
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import OPERATOR, PAYER, address, key_hex
from tests.test_payment_decoding import PUBLIC_BASE_URL, make_settings

PRICE = 63240
PATHS = [EDIT_PATH, UPSTREAM_PATH]
BASE_SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36",
}
_X402_CONFIG = re.compile(r"window\.x402 = (\{.*?\});\s*</script>", re.S)


async def _start(tmp: Path) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'gateway.db'}",
        workers_enabled=False,
        facilitator_timeout_s=2,
        upstream_timeout_s=2,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
        assert await _job_count(application) == 0


async def _job_count(app: FastAPI) -> int:
    gateway: Gateway = app.state.gateway
    async with gateway.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM jobs")) or 0)


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    """One gateway for the module (no workers)."""
    async for application in _start(tmp_path_factory.mktemp("discovery")):
        yield application


@pytest.fixture
async def fresh_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    """A gateway whose fast paths have recorded nothing yet."""
    async for application in _start(tmp_path):
        yield application


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://internal:8080")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as http:
        yield http


def _x402_config(html: str) -> dict[str, Any]:
    """The configuration the SDK's paywall page embeds for its script."""
    found = _X402_CONFIG.search(html)
    assert found, "no window.x402 config in the page"
    config: dict[str, Any] = json.loads(found.group(1))
    return config


# --- bazaar extension ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_v2_402_carries_bazaar_discovery_the_sdk_facilitator_extracts(
    client: httpx.AsyncClient, path: str
) -> None:
    unpaid = await client.post(path, json=EDIT_BODY)
    assert unpaid.status_code == 402
    required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    assert required.extensions is not None
    assert set(required.extensions) == {PAYMENT_IDENTIFIER, "bazaar"}
    bazaar = required.extensions["bazaar"]

    checked = validate_and_extract(bazaar)  # the SDK facilitator's validator
    assert checked.valid, checked.errors
    info = checked.info
    assert isinstance(info, BodyDiscoveryInfo)
    assert (info.input.type, info.input.method, info.input.body_type) == ("http", "POST", "json")
    assert info.input.body == EXAMPLE_EDIT
    EditRequest.model_validate(info.input.body)  # the example is a request we accept
    # The schemas are the validators' own.
    schema = bazaar["schema"]["properties"]
    assert schema["input"]["properties"]["body"] == EditRequest.model_json_schema()
    assert set(schema["input"]["required"]) >= {"type", "method", "bodyType", "body"}
    answer_schema = schema["output"]["properties"]["example"]
    assert answer_schema["properties"] == AcceptedJob.model_json_schema()["properties"]
    assert info.output is not None
    AcceptedJob.model_validate(info.output.example)
    jsonschema.validate(info.output.example, answer_schema)

    # What a facilitator sees: the paying client copies the extensions into its payload.
    payload = await payer_client(key_hex(PAYER)).create_payment_payload(required)
    found = extract_discovery_info(payload, payload.accepted)
    assert found is not None
    assert found.x402_version == 2
    assert found.method == "POST"
    assert found.resource_url == PUBLIC_BASE_URL + path
    assert found.description == listing.DESCRIPTION
    assert found.mime_type == "application/json"
    # ...and the payment still fits our header limit with the extension echoed in it.
    assert len(encode_payment_signature_header(payload)) < 16 * 1024


@pytest.mark.parametrize("path", PATHS)
async def test_v1_body_keeps_output_schema_the_sdk_facilitator_extracts(
    client: httpx.AsyncClient, path: str
) -> None:
    unpaid = await client.post(path, json=EDIT_BODY)
    body = PaymentRequiredV1.model_validate(unpaid.json())
    (requirements,) = body.accepts
    assert requirements.output_schema is not None
    assert requirements.output_schema["input"] == listing.INPUT_SCHEMA
    found = extract_discovery_info({"x402Version": 1}, requirements)
    assert found is not None
    assert (found.x402_version, found.method) == (1, "POST")
    assert found.resource_url == PUBLIC_BASE_URL + path
    assert found.description == listing.DESCRIPTION


# --- /.well-known/x402 -----------------------------------------------------------------------


async def test_well_known_lists_every_paid_route_in_the_bazaar_list_format(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/.well-known/x402")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    parsed = _parse_list_response(doc)  # the SDK's parser of a facilitator's discovery list
    assert parsed.x402_version == 2
    assert [i.resource for i in parsed.items] == [PUBLIC_BASE_URL + p for p in PATHS]
    assert (parsed.pagination.total, parsed.pagination.offset) == (2, 0)
    for item, raw, path in zip(parsed.items, doc["items"], PATHS, strict=True):
        unpaid = await client.post(path, json=EDIT_BODY)
        required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
        assert item.type == "http"
        assert item.x402_version == 2
        assert item.accepts == [required.accepts[0].model_dump(mode="json", by_alias=True)]
        assert item.extensions == required.extensions
        assert item.description == listing.DESCRIPTION
        assert item.mime_type == "application/json"
        assert raw["method"] == "POST"
        assert raw["path"] == path
        assert raw["price"] == {"amount": str(PRICE), "decimals": 6, "display": "0.06324"}
        assert raw["x402Versions"] == [1, 2]
        assert raw["networks"] == {"1": "base", "2": "eip155:8453"}
        assert raw["assets"] == [BASE_USDC]
        assert raw["payTo"] == address(OPERATOR)
        assert raw["inputSchema"] == EditRequest.model_json_schema()
        assert raw["outputSchema"] == AcceptedJob.model_json_schema()


# --- browsers --------------------------------------------------------------------------------


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
    config = _x402_config(page.text)
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

    sepolia = _x402_config(
        bytes(paywall_page(build_offer(terms("base-sepolia", BASE_SEPOLIA_USDC))).body).decode()
    )
    mainnet = _x402_config(bytes(paywall_page(build_offer(terms("base", BASE_USDC))).body).decode())
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
    assert _x402_config(page.text)["amount"] == pytest.approx(0.06324)

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
    async with _client(fresh_app) as http:
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
