"""The sandbox's facilitator service and simulated upstream, driven by the official x402 SDK.

Everything settles real EIP-3009 transfers on a local anvil chain: the facilitator service
must answer what the SDK's HTTPFacilitatorClient expects, and the simulated upstream must
look like its public listing to an SDK client (402 body, paid job, status, PNG) and do what
each switchable fault says, including whether the payer was charged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils.address import to_checksum_address
from x402 import x402Client
from x402.http import (
    FacilitatorConfig,
    HTTPFacilitatorClient,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.http.clients.httpx import PaymentError, x402AsyncTransport, x402HttpxClient
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.constants import ERR_AUTHORIZATION_VALUE_MISMATCH, ERR_NONCE_ALREADY_USED
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.schemas import (
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SupportedResponse,
)

from app.payments.embedded_facilitator import EmbeddedFacilitator
from sandbox.chain import USDC_ADDRESS, LocalChain, dev_account, free_port, mint, usdc_balance
from sandbox.facilitator_server import create_facilitator_app
from sandbox.processes import ServiceProcess
from sandbox.sim_images import PNG_SIGNATURE
from sandbox.upstream_sim import EDIT_PATH, SimConfig, create_upstream_app

PRICE = 52_700
SIM_URL = "http://upstream.test"
FACILITATOR_URL = "http://facilitator.test"
PAYER = dev_account(1)
PAY_TO = dev_account(2).address
GAS = dev_account(9)
BODY: dict[str, Any] = {"prompt": "a red fox in the snow", "image_urls": ["https://x.test/a.png"]}

# From the upstream's public listing: body field -> (type, required).
LISTING_FIELDS = {
    "prompt": ("string", True),
    "sync_mode": ("boolean", False),
    "image_urls": ("string[]", True),
    "num_images": ("integer", False),
    "aspect_ratio": (
        '"auto" | "21:9" | "16:9" | "3:2" | "4:3" | "5:4" | "1:1" | "4:5" | "3:4" | "2:3" '
        '| "9:16" | null',
        False,
    ),
    "output_format": ('"jpeg" | "png" | "webp"', False),
    "limit_generations": ("boolean", False),
}


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    """A fresh local chain for this module, with the payer funded."""
    with LocalChain() as local:
        mint(local.rpc_url, PAYER.address, 100 * 10**6)
        yield local


@pytest.fixture(scope="module")
def facilitator(chain: LocalChain) -> EmbeddedFacilitator:
    return EmbeddedFacilitator.create(GAS.key.hex(), chain.rpc_url)


@pytest.fixture
def sim_app(facilitator: EmbeddedFacilitator) -> Any:
    # A lower-case payTo, as in the listing: the sim must checksum it.
    config = SimConfig(
        pay_to=PAY_TO.lower(), facilitator=facilitator, base_url=SIM_URL, job_delay_s=0.2
    )
    return create_upstream_app(config)


@pytest.fixture
async def plain(sim_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client that never pays."""
    transport = httpx.ASGITransport(app=sim_app)
    async with httpx.AsyncClient(transport=transport, base_url=SIM_URL) as client:
        yield client


def sdk_client() -> x402Client:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(PAYER))
    return client


@pytest.fixture
async def paying(sim_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The official SDK's paying transport over the sim app."""
    transport = x402AsyncTransport(sdk_client(), httpx.ASGITransport(app=sim_app))
    async with httpx.AsyncClient(transport=transport, base_url=SIM_URL) as client:
        yield client


class Balances:
    """Payer and payee balances, before and after."""

    def __init__(self, rpc_url: str) -> None:
        self.rpc_url = rpc_url
        self.start = self.now()

    def now(self) -> tuple[int, int]:
        return usdc_balance(self.rpc_url, PAYER.address), usdc_balance(self.rpc_url, PAY_TO)

    def moved(self) -> int:
        """Atomic units that went from payer to payee (checked to agree on both sides)."""
        payer, payee = self.now()
        assert self.start[0] - payer == payee - self.start[1]
        return payee - self.start[1]


# ---------------------------------------------------------------------------- helpers


def png_size(data: bytes) -> tuple[int, int]:
    """Check the PNG structure (signature, IHDR, inflatable IDAT) and return its size."""
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour) == (8, 2)
    idat_len = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    pixels = zlib.decompress(data[41 : 41 + idat_len])
    assert len(pixels) == height * (1 + 3 * width)
    assert data.endswith(b"IEND\xaeB`\x82")
    return width, height


async def wait_for_job(client: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    """Poll the status URL until the job leaves ``processing``."""
    deadline = time.monotonic() + 10
    while True:
        response = await client.get(status_url)
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        if doc["status"] != "processing":
            return doc
        assert time.monotonic() < deadline, "job never finished"
        await asyncio.sleep(0.05)


async def set_faults(client: httpx.AsyncClient, faults: dict[str, Any]) -> None:
    response = await client.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get("/_sim/stats")).json()
    return result


async def signed_header(plain: httpx.AsyncClient, body: dict[str, Any] = BODY) -> str:
    """Ask for the price without paying, then sign it with the SDK: an X-PAYMENT value."""
    quote = await plain.post(EDIT_PATH, json=body)
    assert quote.status_code == 402
    payload = await sdk_client().create_payment_payload(PaymentRequiredV1(**quote.json()))
    return encode_payment_signature_header(payload)


# ---------------------------------------------------------------------------- facilitator


async def test_facilitator_service_verifies_and_settles_for_the_sdk_client(
    chain: LocalChain, facilitator: EmbeddedFacilitator
) -> None:
    transport = httpx.ASGITransport(app=create_facilitator_app(facilitator))
    async with httpx.AsyncClient(transport=transport, base_url=FACILITATOR_URL) as http:
        remote = HTTPFacilitatorClient(FacilitatorConfig(url=FACILITATOR_URL, http_client=http))
        requirements = PaymentRequirementsV1(
            scheme="exact",
            network="base",
            max_amount_required="1234",
            resource=f"{SIM_URL}/thing",
            pay_to=PAY_TO.lower(),  # the facilitator checksums what it passes to web3
            max_timeout_seconds=300,
            asset=USDC_ADDRESS,
            extra={"name": "USD Coin", "version": "2"},
        )
        payload = await sdk_client().create_payment_payload(
            PaymentRequiredV1(accepts=[requirements])
        )
        balances = Balances(chain.rpc_url)

        verdict = await remote.verify(payload, requirements)
        assert verdict.is_valid, verdict
        assert verdict.payer == PAYER.address
        assert balances.moved() == 0

        settled = await remote.settle(payload, requirements)
        assert settled.success, settled
        assert settled.transaction.startswith("0x")
        assert settled.network == "base"
        assert balances.moved() == 1234

        replay = await remote.settle(payload, requirements)
        assert not replay.success
        assert replay.error_reason == ERR_NONCE_ALREADY_USED
        assert (await remote.verify(payload, requirements)).invalid_reason == (
            ERR_NONCE_ALREADY_USED
        )
        assert balances.moved() == 1234

        elsewhere = payload.model_copy(update={"network": "base-sepolia"})
        refused = await remote.verify(
            elsewhere, requirements.model_copy(update={"network": "base-sepolia"})
        )
        assert (refused.is_valid, refused.invalid_reason) == (False, "invalid_network")

        supported = SupportedResponse.model_validate((await http.get("/supported")).json())
        kinds = {(k.x402_version, k.scheme, k.network) for k in supported.kinds}
        assert kinds == {(1, "exact", "base"), (2, "exact", "eip155:8453")}
        assert supported.signers == {"eip155:*": [GAS.address]}


async def test_facilitator_service_settles_v2_payments_too(
    chain: LocalChain, facilitator: EmbeddedFacilitator
) -> None:
    transport = httpx.ASGITransport(app=create_facilitator_app(facilitator))
    async with httpx.AsyncClient(transport=transport, base_url=FACILITATOR_URL) as http:
        remote = HTTPFacilitatorClient(FacilitatorConfig(url=FACILITATOR_URL, http_client=http))
        requirements = PaymentRequirements(
            scheme="exact",
            network="eip155:8453",
            asset=USDC_ADDRESS,
            amount="4321",
            pay_to=PAY_TO,
            max_timeout_seconds=300,
            extra={"name": "USD Coin", "version": "2"},
        )
        required = PaymentRequired(resource=ResourceInfo(url=SIM_URL), accepts=[requirements])
        payload = await sdk_client().create_payment_payload(required)
        assert payload.x402_version == 2
        balances = Balances(chain.rpc_url)
        assert (await remote.verify(payload, requirements)).is_valid
        settled = await remote.settle(payload, requirements)
        assert (settled.success, settled.network) == (True, "eip155:8453")
        assert balances.moved() == 4321


async def test_facilitator_service_calls_a_malformed_authorization_invalid(
    facilitator: EmbeddedFacilitator,
) -> None:
    authorization = {"from": PAYER.address, "to": PAY_TO, "value": "lots", "nonce": "0x00"}
    body = {
        "x402Version": 1,
        "paymentPayload": {
            "x402Version": 1,
            "scheme": "exact",
            "network": "base",
            "payload": {"authorization": authorization, "signature": "0x00"},
        },
        "paymentRequirements": {
            "scheme": "exact",
            "network": "base",
            "maxAmountRequired": "1",
            "resource": SIM_URL,
            "payTo": PAY_TO,
            "maxTimeoutSeconds": 60,
            "asset": USDC_ADDRESS,
            "extra": {"name": "USD Coin", "version": "2"},
        },
    }
    transport = httpx.ASGITransport(app=create_facilitator_app(facilitator))
    async with httpx.AsyncClient(transport=transport, base_url=FACILITATOR_URL) as http:
        verdict = await http.post("/verify", json=body)
        assert verdict.status_code == 200
        assert verdict.json()["isValid"] is False
        assert verdict.json()["invalidReason"] == "invalid_payload"
        settled = await http.post("/settle", json=body)
        assert settled.status_code == 200
        assert settled.json() == {
            "success": False,
            "errorReason": "invalid_payload",
            "errorMessage": "authorization value, validAfter, validBefore must be decimal "
            "integer strings",
            "payer": PAYER.address,
            "transaction": "",
            "network": "base",
        }


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"x402Version": 3, "paymentPayload": {}, "paymentRequirements": {}}', "1 or 2"),
        (b'{"x402Version": 1, "paymentRequirements": {}}', "must be JSON objects"),
        (
            b'{"x402Version": 1, "paymentPayload": {"x402Version": 1}, "paymentRequirements": {}}',
            "malformed payment data",
        ),
    ],
)
async def test_facilitator_service_refuses_bad_bodies_with_400(
    facilitator: EmbeddedFacilitator, content: bytes, fragment: str
) -> None:
    transport = httpx.ASGITransport(app=create_facilitator_app(facilitator))
    async with httpx.AsyncClient(transport=transport, base_url=FACILITATOR_URL) as http:
        for path in ("/verify", "/settle"):
            response = await http.post(path, content=content)
            assert response.status_code == 400
            assert response.json()["error"] == "invalid_request"
            assert fragment in response.json()["message"]


# ---------------------------------------------------------------------------- the upstream


async def test_402_body_parses_with_the_sdk_and_matches_the_listing(
    plain: httpx.AsyncClient,
) -> None:
    response = await plain.post(EDIT_PATH, json=BODY)
    assert response.status_code == 402
    required = PaymentRequiredV1.model_validate(response.json())
    assert required.x402_version == 1
    assert required.error == "X-PAYMENT header is required"
    (offer,) = required.accepts
    assert (offer.scheme, offer.network, offer.max_amount_required) == ("exact", "base", "52700")
    assert offer.asset == "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    assert offer.pay_to == to_checksum_address(PAY_TO) == PAY_TO
    assert offer.max_timeout_seconds == 300
    assert offer.resource == SIM_URL + EDIT_PATH
    assert offer.description == "Generate image using nano-banana/edit"
    assert offer.mime_type == "application/json"
    assert offer.extra == {"name": "USD Coin", "version": "2"}
    assert offer.output_schema is not None
    schema_in, schema_out = offer.output_schema["input"], offer.output_schema["output"]
    assert (schema_in["type"], schema_in["method"], schema_in["bodyType"]) == (
        "http",
        "POST",
        "json",
    )
    fields = schema_in["bodyFields"]
    assert {k: (v["type"], v["required"]) for k, v in fields.items()} == LISTING_FIELDS
    assert fields["num_images"]["enum"] == ["1"]
    assert fields["output_format"]["enum"] == ["jpeg", "png", "webp"]
    assert set(schema_out) == {"jobId", "status", "requestId", "statusUrl"}
    assert schema_out["status"]["enum"] == ["processing", "completed", "failed"]


async def test_sdk_client_pays_polls_and_downloads_a_png(
    chain: LocalChain, paying: httpx.AsyncClient
) -> None:
    balances = Balances(chain.rpc_url)
    response = await paying.post(EDIT_PATH, json=BODY)
    assert response.status_code == 200, response.text
    job = response.json()
    assert set(job) == {"jobId", "status", "requestId", "statusUrl"}
    assert job["status"] == "processing"
    assert job["statusUrl"] == f"{SIM_URL}/api/ai/generations/jobs/{job['jobId']}"
    receipt = decode_payment_response_header(response.headers["X-PAYMENT-RESPONSE"])
    assert receipt.success
    assert receipt.payer == PAYER.address
    assert "X-PAYMENT-RESPONSE" in response.headers["Access-Control-Expose-Headers"]
    assert balances.moved() == PRICE

    done = await wait_for_job(paying, job["statusUrl"])
    assert done["status"] == "completed"
    assert done["error"] is None
    assert BODY["prompt"] in done["description"]
    (image,) = done["images"]
    assert image["content_type"] == "image/png"
    assert (image["width"], image["height"]) == (64, 64)
    assert image["file_name"] == f"{job['jobId']}.png"
    download = await paying.get(image["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert png_size(download.content) == (64, 64)
    assert (await paying.get(image["url"])).content == download.content

    counters = await stats(paying)
    assert counters["submits"] == 2  # the unpaid probe and the paid retry
    assert counters["paid_submits"] == 1
    assert counters["status_requests_by_job"][job["jobId"]] >= 2
    assert balances.moved() == PRICE


async def test_sync_mode_returns_a_data_uri_and_aspect_ratio_shapes_the_image(
    paying: httpx.AsyncClient,
) -> None:
    body = {**BODY, "sync_mode": True, "aspect_ratio": "16:9", "output_format": "png"}
    job = (await paying.post(EDIT_PATH, json=body)).json()
    (image,) = (await wait_for_job(paying, job["statusUrl"]))["images"]
    prefix = "data:image/png;base64,"
    assert image["url"].startswith(prefix)
    assert png_size(base64.b64decode(image["url"][len(prefix) :])) == (64, 36)
    assert (image["width"], image["height"]) == (64, 36)
    assert (await paying.get(f"/files/{job['jobId']}.png")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"image_urls": ["https://x.test/a.png"]},
        {"prompt": "", "image_urls": ["https://x.test/a.png"]},
        {"prompt": 7, "image_urls": ["https://x.test/a.png"]},
        {"prompt": "p"},
        {"prompt": "p", "image_urls": []},
        {"prompt": "p", "image_urls": "https://x.test/a.png"},
        {"prompt": "p", "image_urls": ["ftp://x.test/a.png"]},
        {"prompt": "p", "image_urls": ["not a url"]},
        {**BODY, "num_images": 2},
        {**BODY, "num_images": "1"},
        {**BODY, "num_images": True},
        {**BODY, "aspect_ratio": "7:3"},
        {**BODY, "output_format": "gif"},
        {**BODY, "sync_mode": "yes"},
        {**BODY, "unknown": 1},
        "not an object",
    ],
)
async def test_invalid_body_is_422_before_any_charge(
    chain: LocalChain, paying: httpx.AsyncClient, body: Any
) -> None:
    balances = Balances(chain.rpc_url)
    response = await paying.post(EDIT_PATH, json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "Invalid request body"
    assert response.json()["detail"]
    assert (await stats(paying))["paid_submits"] == 0
    assert balances.moved() == 0


async def test_body_that_is_not_json_is_422(plain: httpx.AsyncClient) -> None:
    response = await plain.post(EDIT_PATH, content=b"{oops", headers={"X-PAYMENT": "e30="})
    assert response.status_code == 422


async def test_replayed_payment_is_refused_and_not_charged_twice(
    chain: LocalChain, plain: httpx.AsyncClient
) -> None:
    header = await signed_header(plain)
    balances = Balances(chain.rpc_url)
    first = await plain.post(EDIT_PATH, json=BODY, headers={"X-PAYMENT": header})
    assert first.status_code == 200
    again = await plain.post(EDIT_PATH, json=BODY, headers={"X-PAYMENT": header})
    assert again.status_code == 402
    assert again.json()["error"] == ERR_NONCE_ALREADY_USED
    assert balances.moved() == PRICE


async def test_garbage_payment_header_is_a_402(plain: httpx.AsyncClient) -> None:
    response = await plain.post(EDIT_PATH, json=BODY, headers={"X-PAYMENT": "%%%"})
    assert response.status_code == 402
    assert "X-PAYMENT" in response.json()["error"]
    assert PaymentRequiredV1.model_validate(response.json()).accepts


# ---------------------------------------------------------------------------- faults


async def test_submit_5xx_takes_the_money_once(
    chain: LocalChain, paying: httpx.AsyncClient
) -> None:
    await set_faults(paying, {"submit_5xx": {"times": 1}})
    balances = Balances(chain.rpc_url)
    failed = await paying.post(EDIT_PATH, json=BODY)
    assert failed.status_code == 500
    assert balances.moved() == PRICE
    assert (await stats(paying))["jobs_created"] == 0
    assert (await paying.get("/_sim/faults")).json() == {"faults": {}}  # one-shot used up
    assert (await paying.post(EDIT_PATH, json=BODY)).status_code == 200
    assert balances.moved() == 2 * PRICE


async def test_submit_5xx_before_settle_charges_nothing(
    chain: LocalChain, paying: httpx.AsyncClient
) -> None:
    await set_faults(paying, {"submit_5xx_before_settle": True})
    balances = Balances(chain.rpc_url)
    assert (await paying.post(EDIT_PATH, json=BODY)).status_code == 500
    assert (await paying.post(EDIT_PATH, json=BODY)).status_code == 500  # sticky
    assert balances.moved() == 0
    assert (await stats(paying))["paid_submits"] == 0


async def test_submit_timeout_stalls_after_settling(
    chain: LocalChain, paying: httpx.AsyncClient
) -> None:
    await set_faults(paying, {"submit_timeout": {"times": 1, "value": 0.5}})
    balances = Balances(chain.rpc_url)
    started = time.monotonic()
    response = await paying.post(EDIT_PATH, json=BODY)
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200
    assert balances.moved() == PRICE


async def test_submit_malformed_answers_broken_json_after_settling(
    chain: LocalChain, paying: httpx.AsyncClient
) -> None:
    await set_faults(paying, {"submit_malformed": {"times": 1}})
    balances = Balances(chain.rpc_url)
    response = await paying.post(EDIT_PATH, json=BODY)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert decode_payment_response_header(response.headers["X-PAYMENT-RESPONSE"]).success
    assert balances.moved() == PRICE
    assert (await stats(paying))["jobs_created"] == 1


async def test_job_fails_ends_in_failed_with_the_message(paying: httpx.AsyncClient) -> None:
    await set_faults(paying, {"job_fails": {"times": 1, "value": "NSFW content detected"}})
    job = (await paying.post(EDIT_PATH, json=BODY)).json()
    done = await wait_for_job(paying, job["statusUrl"])
    assert (done["status"], done["error"], done["images"]) == (
        "failed",
        "NSFW content detected",
        [],
    )
    assert (await paying.get(f"/files/{job['jobId']}.png")).status_code == 404


async def test_status_faults_are_5xx_then_malformed_then_normal(
    paying: httpx.AsyncClient,
) -> None:
    job = (await paying.post(EDIT_PATH, json=BODY)).json()
    await set_faults(paying, {"status_5xx": {"times": 1}, "status_malformed": {"times": 1}})
    assert (await paying.get(job["statusUrl"])).status_code == 500
    broken = await paying.get(job["statusUrl"])
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        broken.json()
    assert (await paying.get(job["statusUrl"])).json()["jobId"] == job["jobId"]
    counters = await stats(paying)
    assert counters["status_requests"] == counters["status_requests_by_job"][job["jobId"]] == 3


async def test_price_change_is_asked_and_paid(
    chain: LocalChain, plain: httpx.AsyncClient, paying: httpx.AsyncClient
) -> None:
    await set_faults(plain, {"price_atomic": 80_000})
    quote = await plain.post(EDIT_PATH, json=BODY)
    assert quote.json()["accepts"][0]["maxAmountRequired"] == "80000"
    balances = Balances(chain.rpc_url)
    assert (await paying.post(EDIT_PATH, json=BODY)).status_code == 200
    assert balances.moved() == 80_000


async def test_price_change_between_quote_and_payment_is_a_402(
    chain: LocalChain, plain: httpx.AsyncClient
) -> None:
    await set_faults(plain, {"price_atomic": {"times": 1, "value": 80_000}})
    header = await signed_header(plain)  # signed for 80000; the paid retry asks 52700
    balances = Balances(chain.rpc_url)
    response = await plain.post(EDIT_PATH, json=BODY, headers={"X-PAYMENT": header})
    assert response.status_code == 402
    assert response.json()["error"] == ERR_AUTHORIZATION_VALUE_MISMATCH
    assert response.json()["accepts"][0]["maxAmountRequired"] == "52700"
    assert balances.moved() == 0


async def test_payment_loop_keeps_asking_without_settling(
    chain: LocalChain, paying: httpx.AsyncClient
) -> None:
    await set_faults(paying, {"payment_loop": True})
    balances = Balances(chain.rpc_url)
    response = await paying.post(EDIT_PATH, json=BODY)
    assert response.status_code == 402  # the SDK retries once, then hands back the 402
    assert balances.moved() == 0
    counters = await stats(paying)
    assert (counters["submits"], counters["paid_submits"]) == (2, 0)


async def test_fault_controls_validate_and_reset(plain: httpx.AsyncClient) -> None:
    bad_specs: list[Any] = [
        {"no_such_fault": True},
        {"price_atomic": 1.5},
        {"price_atomic": True},
        {"submit_5xx": {"times": 0}},
        {"submit_timeout": {"value": -1}},
        {"submit_5xx": {"sometimes": 1}},
        [],
    ]
    for bad in bad_specs:
        response = await plain.post("/_sim/faults", json=bad)
        assert response.status_code == 400, bad
    assert (await plain.get("/_sim/faults")).json() == {"faults": {}}
    await set_faults(plain, {"status_5xx": True, "job_fails": {"times": 2}})
    faults = (await plain.get("/_sim/faults")).json()["faults"]
    assert faults == {
        "job_fails": {"times": 2, "value": "Image generation failed"},
        "status_5xx": {"times": None, "value": True},
    }
    await set_faults(plain, {"status_5xx": None})
    assert set((await plain.get("/_sim/faults")).json()["faults"]) == {"job_fails"}
    await plain.post(EDIT_PATH, json=BODY)
    reset = (await plain.post("/_sim/reset")).json()
    assert reset["faults"] == {}
    assert reset["stats"]["submits"] == 0


def test_config_refuses_bad_prices_and_checksums_pay_to(facilitator: EmbeddedFacilitator) -> None:
    config = SimConfig(pay_to=PAY_TO.lower(), facilitator=facilitator, base_url="http://h/")
    assert (config.pay_to, config.base_url) == (PAY_TO, "http://h")
    for price in (0, -1, 1.5):
        with pytest.raises(ValueError, match="price_atomic"):
            SimConfig(pay_to=PAY_TO, facilitator=facilitator, price_atomic=price)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an EVM address"):
        SimConfig(pay_to="0xnope", facilitator=facilitator)
    with pytest.raises(ValueError, match="unknown fault"):
        create_upstream_app(SimConfig(pay_to=PAY_TO, facilitator=facilitator, faults={"x": 1}))


# ---------------------------------------------------------------------------- real processes


def test_real_processes_chain_facilitator_upstream_and_sdk_client(chain: LocalChain) -> None:
    """Both services as uvicorn processes on 127.0.0.1, paid over real sockets."""
    logs = Path(tempfile.mkdtemp(prefix="sandbox-services-"))
    fac_port, sim_port = free_port(), free_port()
    fac_url, sim_url = f"http://127.0.0.1:{fac_port}", f"http://127.0.0.1:{sim_port}"
    service = ServiceProcess(
        "facilitator",
        ["-m", "sandbox.facilitator_server", "--port", str(fac_port), "--rpc-url", chain.rpc_url],
        ready_url=f"{fac_url}/health",
        env={"FACILITATOR_PRIVATE_KEY": dev_account(8).key.hex()},
        log_dir=logs,
    )
    upstream = ServiceProcess(
        "upstream",
        [
            "-m",
            "sandbox.upstream_sim",
            "--port",
            str(sim_port),
            "--facilitator-url",
            fac_url,
            "--pay-to",
            PAY_TO,
            "--job-delay",
            "0.3",
            "--faults",
            '{"submit_timeout": {"times": 1, "value": 1.5}}',
        ],
        ready_url=f"{sim_url}/health",
        log_dir=logs,
    )
    try:
        service.start()
        upstream.start()
        supported = HTTPFacilitatorClient(FacilitatorConfig(url=fac_url)).get_supported()
        assert {k.network for k in supported.kinds} == {"base", "eip155:8453"}
        assert supported.signers["eip155:*"] == [dev_account(8).address]
        asyncio.run(_pay_over_sockets(chain.rpc_url, sim_url))
    finally:
        upstream.stop()
        service.stop()


async def _pay_over_sockets(rpc_url: str, sim_url: str) -> None:
    balances = Balances(rpc_url)
    async with x402HttpxClient(sdk_client(), base_url=sim_url, timeout=0.5) as impatient:
        # The start-up fault stalls the first paid submit past the client's timeout:
        # the money is gone and the job appears later, as with a slow real upstream.
        # (The SDK transport wraps the paid retry's timeout in its PaymentError.)
        with pytest.raises(PaymentError) as caught:
            await impatient.post(EDIT_PATH, json=BODY)
        assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    # On a loaded machine the client may give up before the upstream settles: it still does.
    deadline = time.monotonic() + 10
    while balances.moved() == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert balances.moved() == PRICE

    async with x402HttpxClient(sdk_client(), base_url=sim_url, timeout=10) as client:
        deadline = time.monotonic() + 10
        while (await stats(client))["jobs_created"] == 0:
            assert time.monotonic() < deadline, "the stalled submit never created its job"
            await asyncio.sleep(0.1)

        response = await client.post(EDIT_PATH, json={**BODY, "aspect_ratio": "9:16"})
        assert response.status_code == 200, response.text
        assert decode_payment_response_header(response.headers["X-PAYMENT-RESPONSE"]).success
        job = response.json()
        assert job["statusUrl"].startswith(sim_url)
        (image,) = (await wait_for_job(client, job["statusUrl"]))["images"]
        download = await client.get(image["url"])
        assert download.headers["content-type"] == "image/png"
        assert png_size(download.content) == (36, 64)
        counters = await stats(client)
        assert (counters["paid_submits"], counters["jobs_created"]) == (2, 2)
    assert balances.moved() == 2 * PRICE
