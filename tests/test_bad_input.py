"""Bad input never costs money: every invalid request gets a specific 4xx and nothing is charged.

The app runs in-process (ASGI, real lifespan, SQLite in a temp dir). Its facilitator and
upstream point at a closed local port: none of these requests may reach either, and a request
that tried would surface as a 503, not the answer asserted here. The jobs table stays empty.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from x402.http import (
    decode_payment_required_header,
    encode_payment_signature_header,
)
from x402.http.utils import safe_base64_encode
from x402.schemas import PaymentRequired, PaymentRequiredV1

from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from app.core.settings import BASE_USDC
from app.payments.pricing import sale_price
from app.upstream.schemas import MAX_BODY_BYTES, MAX_IMAGE_URLS
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import OPERATOR, PAYER, address, key_hex
from tests.inprocess_app import client_for, job_count, start_app
from tests.settings_factory import PUBLIC_BASE_URL

PRICE = 63240
PATHS = [EDIT_PATH, UPSTREAM_PATH]
EXPOSED = {"PAYMENT-REQUIRED", "PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"}
URL = "https://example.com/cat.png"

pytestmark = pytest.mark.parametrize("path", PATHS, ids=["v1-path", "upstream-path"])


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    """The gateway app with its lifespan running (migrations, clients; no workers)."""
    # A trailing slash in the public URL must not leak into URLs.
    tmp = tmp_path_factory.mktemp("bad-input")
    async for application in start_app(tmp, public_base_url=PUBLIC_BASE_URL + "/"):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process, from a host that is not the public one."""
    async with client_for(app) as http:
        yield http
    assert await job_count(app) == 0


async def signed_header(client: httpx.AsyncClient, path: str) -> dict[str, str]:
    """A genuine v2 payment for `path`, signed by the SDK client from our 402."""
    unpaid = await client.post(path, json=EDIT_BODY)
    assert unpaid.status_code == 402
    required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    payload = await payer_client(key_hex(PAYER)).create_payment_payload(required)
    return {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}


def assert_invalid(response: httpx.Response, field: str, error_type: str) -> dict[str, Any]:
    """A 422 in our error shape naming `field`, and no payment terms offered."""
    assert response.status_code == 422, response.text
    assert "PAYMENT-REQUIRED" not in response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == "invalid_request"
    fields = {(d["field"], d["type"]) for d in body["details"]}
    assert (field, error_type) in fields, body
    assert f"{field}: " in body["message"]
    return body


# --- invalid bodies --------------------------------------------------------------------------

INVALID_BODIES: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing-prompt", {"image_urls": [URL]}, "prompt", "missing"),
    ("empty-prompt", {**EDIT_BODY, "prompt": ""}, "prompt", "string_too_short"),
    ("blank-prompt", {**EDIT_BODY, "prompt": " \n\t "}, "prompt", "string_too_short"),
    ("invisible-prompt", {**EDIT_BODY, "prompt": "\u200b\x1f"}, "prompt", "value_error"),
    ("long-prompt", {**EDIT_BODY, "prompt": "p" * 5001}, "prompt", "string_too_long"),
    ("numeric-prompt", {**EDIT_BODY, "prompt": 42}, "prompt", "string_type"),
    ("missing-urls", {"prompt": "x"}, "image_urls", "missing"),
    ("empty-urls", {**EDIT_BODY, "image_urls": []}, "image_urls", "too_short"),
    ("url-not-list", {**EDIT_BODY, "image_urls": URL}, "image_urls", "list_type"),
    ("not-a-url", {**EDIT_BODY, "image_urls": ["cat.png"]}, "image_urls.0", "url_parsing"),
    ("no-host", {**EDIT_BODY, "image_urls": ["https://"]}, "image_urls.0", "url_parsing"),
    (
        "ftp-url",
        {**EDIT_BODY, "image_urls": ["ftp://example.com/a.png"]},
        "image_urls.0",
        "url_scheme",
    ),
    (
        "data-url",
        {**EDIT_BODY, "image_urls": ["data:image/png;base64,AA=="]},
        "image_urls.0",
        "url_scheme",
    ),
    (
        "second-url-bad",
        {**EDIT_BODY, "image_urls": [URL, "file:///etc/passwd"]},
        "image_urls.1",
        "url_scheme",
    ),
    ("url-number", {**EDIT_BODY, "image_urls": [7]}, "image_urls.0", "url_type"),
    (
        "too-many-urls",
        {**EDIT_BODY, "image_urls": [URL] * (MAX_IMAGE_URLS + 1)},
        "image_urls",
        "too_long",
    ),
    (
        "url-too-long",
        {**EDIT_BODY, "image_urls": [URL + "?" + "q" * 2048]},
        "image_urls.0",
        "url_too_long",
    ),
    ("two-images", {**EDIT_BODY, "num_images": 2}, "num_images", "literal_error"),
    ("zero-images", {**EDIT_BODY, "num_images": 0}, "num_images", "literal_error"),
    ("images-true", {**EDIT_BODY, "num_images": True}, "num_images", "value_error"),
    ("images-float", {**EDIT_BODY, "num_images": 1.0}, "num_images", "value_error"),
    ("images-string", {**EDIT_BODY, "num_images": "1"}, "num_images", "value_error"),
    ("aspect-ratio", {**EDIT_BODY, "aspect_ratio": "7:5"}, "aspect_ratio", "literal_error"),
    ("aspect-ratio-case", {**EDIT_BODY, "aspect_ratio": "AUTO"}, "aspect_ratio", "literal_error"),
    ("output-format", {**EDIT_BODY, "output_format": "gif"}, "output_format", "literal_error"),
    ("sync-mode-yes", {**EDIT_BODY, "sync_mode": "yes"}, "sync_mode", "bool_type"),
    ("sync-mode-1", {**EDIT_BODY, "sync_mode": 1}, "sync_mode", "bool_type"),
    (
        "limit-generations",
        {**EDIT_BODY, "limit_generations": "true"},
        "limit_generations",
        "bool_type",
    ),
    ("unknown-field", {**EDIT_BODY, "seed": 7}, "seed", "extra_forbidden"),
    ("typo-field", {**EDIT_BODY, "image_url": URL}, "image_url", "extra_forbidden"),
]


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [pytest.param(b, f, t, id=i) for i, b, f, t in INVALID_BODIES],
)
async def test_invalid_body_is_422_naming_the_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str, error_type: str
) -> None:
    response = await client.post(path, json=body)
    assert_invalid(response, field, error_type)


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [pytest.param(b, f, t, id=i) for i, b, f, t in INVALID_BODIES[::4]],
)
async def test_invalid_body_with_a_genuine_payment_is_not_charged(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str, error_type: str
) -> None:
    """The body is checked before the payment header is even read."""
    payment = await signed_header(client, path)
    response = await client.post(path, json=body, headers=payment)
    assert_invalid(response, field, error_type)


@pytest.mark.parametrize(
    ("content", "content_type", "error_type"),
    [
        pytest.param(b"[]", "application/json", "model_attributes_type", id="empty-array"),
        pytest.param(
            json.dumps([EDIT_BODY]).encode(),
            "application/json",
            "model_attributes_type",
            id="array",
        ),
        pytest.param(b'"prompt"', "application/json", "model_attributes_type", id="string"),
        pytest.param(b"null", "application/json", "model_attributes_type", id="null"),
        pytest.param(b"", "application/json", "missing", id="empty"),
        pytest.param(
            b"prompt=x&image_urls=y",
            "application/x-www-form-urlencoded",
            "model_attributes_type",
            id="form",
        ),
        pytest.param(
            json.dumps(EDIT_BODY).encode(), "text/plain", "model_attributes_type", id="text-plain"
        ),
    ],
)
async def test_body_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient, path: str, content: bytes, content_type: str, error_type: str
) -> None:
    response = await client.post(path, content=content, headers={"Content-Type": content_type})
    assert_invalid(response, "body", error_type)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"prompt": "x",}', b"\xff\xfe{}", b'{"prompt": "x"'],
    ids=["bare", "trailing-comma", "not-utf8", "unterminated"],
)
async def test_non_json_body_is_422(client: httpx.AsyncClient, path: str, content: bytes) -> None:
    response = await client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert [d["type"] for d in body["details"]] == ["json_invalid"]
    assert "JSON decode error" in body["message"]


async def test_non_json_body_names_the_body(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(
        path, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.json()["details"][0]["field"] == "body"


async def test_huge_field_values_are_422_not_402(client: httpx.AsyncClient, path: str) -> None:
    long_prompt = {**EDIT_BODY, "prompt": "p" * 6_000}  # over the field limit, under the body's
    assert_invalid(await client.post(path, json=long_prompt), "prompt", "string_too_long")
    huge_prompt = {**EDIT_BODY, "prompt": "p" * 2_000_000}
    response = await client.post(path, json=huge_prompt)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    small_extra = {**EDIT_BODY, "blob": "b" * 1_000}
    assert_invalid(await client.post(path, json=small_extra), "blob", "extra_forbidden")
    huge_extra = {**EDIT_BODY, "blob": "b" * 10_000_000}
    assert (await client.post(path, json=huge_extra)).status_code == 413


async def test_body_over_the_size_limit_is_413(client: httpx.AsyncClient, path: str) -> None:
    padded = json.dumps(EDIT_BODY) + " " * MAX_BODY_BYTES
    response = await client.post(path, content=padded, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "PAYMENT-REQUIRED" not in response.headers


# --- the 402 for a valid, unpaid body --------------------------------------------------------


async def test_unpaid_valid_body_gets_v1_body_and_v2_header(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json=EDIT_BODY)

    assert response.status_code == 402
    assert response.headers["content-type"] == "application/json"
    resource = PUBLIC_BASE_URL + path  # the configured base URL, not the request host

    v1 = PaymentRequiredV1.model_validate_json(response.content)
    assert v1.x402_version == 1
    assert v1.error == "Payment required: send X-PAYMENT (x402 v1) or PAYMENT-SIGNATURE (x402 v2)"
    [req1] = v1.accepts
    assert (req1.scheme, req1.network, req1.max_amount_required) == ("exact", "base", str(PRICE))
    assert req1.pay_to == address(OPERATOR)
    assert req1.asset == BASE_USDC
    assert req1.resource == resource
    assert req1.max_timeout_seconds == 300
    assert req1.extra == {"name": "USD Coin", "version": "2"}

    v2 = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    assert isinstance(v2, PaymentRequired)
    assert v2.x402_version == 2
    assert v2.resource is not None
    assert v2.resource.url == resource
    [req2] = v2.accepts
    assert (req2.scheme, req2.network, req2.amount) == ("exact", "eip155:8453", str(PRICE))
    assert req2.pay_to == address(OPERATOR)
    assert req2.asset == BASE_USDC
    assert req2.extra == {"name": "USD Coin", "version": "2"}

    assert sale_price(52700, 2000, 0) == PRICE


async def test_the_402_is_payable_by_the_sdk_in_both_versions(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json=EDIT_BODY)
    v2 = await payer_client(key_hex(PAYER)).create_payment_payload(
        decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    )
    v1 = await payer_client(key_hex(PAYER), v1_only=True).create_payment_payload(
        PaymentRequiredV1.model_validate_json(response.content)
    )
    assert v2.payload["authorization"]["value"] == v1.payload["authorization"]["value"] == "63240"
    assert v2.payload["authorization"]["to"] == v1.payload["authorization"]["to"]
    assert v1.payload["authorization"]["to"] == address(OPERATOR)


async def test_cross_origin_402_exposes_the_payment_headers(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json=EDIT_BODY, headers={"Origin": "https://app.example"})

    assert response.status_code == 402
    assert response.headers["access-control-allow-origin"] == "*"
    exposed = {
        h.strip().upper() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed >= EXPOSED


async def test_cors_preflight_allows_the_payment_headers(
    client: httpx.AsyncClient, path: str
) -> None:
    requested = "content-type, idempotency-key, payment-signature, x-payment"
    response = await client.options(
        path,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    assert response.status_code == 200
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert allowed >= {"content-type", "idempotency-key", "payment-signature", "x-payment"}


# --- payment headers refused before any facilitator call -------------------------------------


@pytest.mark.parametrize("header_name", ["X-PAYMENT", "PAYMENT-SIGNATURE"])
async def test_garbage_payment_header_is_a_402_with_the_reason(
    client: httpx.AsyncClient, path: str, header_name: str
) -> None:
    response = await client.post(path, json=EDIT_BODY, headers={header_name: "not-a-payment"})

    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "invalid_payment_header"
    assert body["message"] == "payment header is not base64-encoded JSON"
    assert PaymentRequiredV1.model_validate(body).accepts[0].max_amount_required == str(PRICE)
    header = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    assert header.error == "invalid_payment_header"


async def test_payment_for_the_wrong_amount_is_a_402_with_the_reason(
    client: httpx.AsyncClient, path: str
) -> None:
    payment = await signed_header(client, path)
    data = json.loads(base64.b64decode(payment["PAYMENT-SIGNATURE"]))
    data["accepted"]["amount"] = data["payload"]["authorization"]["value"] = "52700"

    response = await client.post(
        path, json=EDIT_BODY, headers={"PAYMENT-SIGNATURE": safe_base64_encode(json.dumps(data))}
    )

    assert response.status_code == 402
    assert response.json()["error"] == "amount_mismatch"
    assert response.json()["message"] == f"accepted amount 52700 != price {PRICE}"


@pytest.mark.parametrize(
    "key",
    [b"", b"has space", b"k" * 129, b"a/b", "ключ".encode()],
    ids=["empty", "space", "long", "slash", "utf8"],
)
async def test_bad_idempotency_key_is_400_before_verifying(
    client: httpx.AsyncClient, path: str, key: bytes
) -> None:
    payment = await signed_header(client, path)
    headers = {name.encode(): value.encode() for name, value in payment.items()}
    headers[b"Idempotency-Key"] = key

    response = await client.post(path, json=EDIT_BODY, headers=headers)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_idempotency_key",
        "message": "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 _ - . :",
    }


async def test_bad_payment_identifier_is_400_before_verifying(
    client: httpx.AsyncClient, path: str
) -> None:
    payment = await signed_header(client, path)
    data = json.loads(base64.b64decode(payment["PAYMENT-SIGNATURE"]))
    data["extensions"]["payment-identifier"]["info"]["id"] = "short"

    response = await client.post(
        path, json=EDIT_BODY, headers={"PAYMENT-SIGNATURE": safe_base64_encode(json.dumps(data))}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payment_identifier"
    assert "16-128 characters" in response.json()["message"]


async def test_client_supplied_identifier_schema_is_not_evaluated(
    client: httpx.AsyncClient, path: str
) -> None:
    payment = await signed_header(client, path)
    data = json.loads(base64.b64decode(payment["PAYMENT-SIGNATURE"]))
    extension = data["extensions"]["payment-identifier"]
    extension["info"]["id"] = "a" * 20
    extension["schema"] = {"properties": {"id": {"pattern": "^(a+)+b$"}}}

    response = await client.post(
        path, json=EDIT_BODY, headers={"PAYMENT-SIGNATURE": safe_base64_encode(json.dumps(data))}
    )

    # The id is valid under our schema, so the request reaches the (unreachable) facilitator.
    assert response.status_code == 503
    assert response.json()["error"] == "facilitator_unavailable"


@pytest.mark.parametrize(
    ("method", "content", "status"),
    [("GET", None, 405), ("POST", '{"prompt": "caf\xe9"}'.encode("latin-1"), 400)],
    ids=["wrong-method", "latin-1-json"],
)
async def test_framework_errors_use_the_error_shape(
    client: httpx.AsyncClient, path: str, method: str, content: bytes | None, status: int
) -> None:
    response = await client.request(
        method, path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert set(response.json()) >= {"error", "message"}
