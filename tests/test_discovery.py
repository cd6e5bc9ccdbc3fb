"""How the offer is found by agents and indexers: the bazaar extension and /.well-known/x402.

The app runs in-process (ASGI, real lifespan, SQLite in a temp dir); its facilitator and
upstream point at a closed port, so nothing here can move money (no job row is ever written).
What we serve is checked with the SDK's own parsers: the facilitator-side bazaar extractor and
its discovery-list parser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from x402.extensions.bazaar import (
    BodyDiscoveryInfo,
    extract_discovery_info,
    validate_and_extract,
)
from x402.extensions.bazaar.facilitator_client import _parse_list_response
from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER
from x402.http import decode_payment_required_header, encode_payment_signature_header
from x402.schemas import PaymentRequiredV1

from app.api.schemas import AcceptedJob
from app.core.settings import BASE_USDC
from app.upstream import listing
from app.upstream.schemas import EXAMPLE_EDIT, EditRequest
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import OPERATOR, PAYER, address, key_hex
from tests.helpers import PRICE
from tests.inprocess_app import PATHS, client_for, start_app
from tests.settings_factory import PUBLIC_BASE_URL


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    """One gateway for the module (no workers)."""
    async for application in start_app(tmp_path_factory.mktemp("discovery")):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


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
