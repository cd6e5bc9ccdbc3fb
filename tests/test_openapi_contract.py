"""The OpenAPI document says what the service really does, and its docs work offline."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from app.api.schemas import AcceptedJob, ErrorBody, Index, JobDocument
from app.main import create_app
from app.upstream.schemas import EditRequest
from sandbox.pay import EDIT_BODY
from sandbox.world import PAYER, World, key_hex
from tests.helpers import PRICE, paid_post, poll_until_done
from tests.settings_factory import make_settings


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    db = Path(tmp_path_factory.mktemp("openapi")) / "g.db"
    settings = make_settings(
        database_url=f"sqlite:///{db}", workers_enabled=False, admin_token="a" * 40
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http


@pytest.fixture(scope="module")
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _ref(response: dict[str, Any]) -> str:
    return str(response["content"]["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]


@pytest.mark.parametrize("path", [EDIT_PATH, UPSTREAM_PATH])
def test_paid_routes_document_payment_headers_402_and_receipt(
    spec: dict[str, Any], path: str
) -> None:
    operation = spec["paths"][path]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert {"PAYMENT-SIGNATURE", "X-PAYMENT", "Idempotency-Key"} <= headers
    unpaid = operation["responses"]["402"]
    assert "PAYMENT-REQUIRED" in unpaid["headers"]
    assert _ref(unpaid) == "PaymentRequiredV1"
    paid = operation["responses"]["200"]
    assert _ref(paid) == "AcceptedJob"
    assert {"PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"} <= set(paid["headers"])
    for status in ("409", "422", "502", "503"):
        assert _ref(operation["responses"][status]) == "ErrorBody", status


@pytest.mark.parametrize("path", [EDIT_PATH, UPSTREAM_PATH])
def test_documented_examples_are_valid_answers_and_requests(
    spec: dict[str, Any], path: str
) -> None:
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    EditRequest.model_validate(body["example"])  # a request an agent can copy as it is
    schemas = spec["components"]["schemas"]
    for model in (AcceptedJob, JobDocument):
        assert schemas[model.__name__]["examples"]
        for example in schemas[model.__name__]["examples"]:
            model.model_validate(example)
    error = {
        name: field["examples"][0]
        for name, field in schemas["ErrorBody"]["properties"].items()
        if "examples" in field
    }
    ErrorBody.model_validate(error)


def test_job_document_and_operator_routes(spec: dict[str, Any]) -> None:
    job = spec["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert _ref(job["200"]) == "JobDocument"
    assert _ref(job["404"]) == "ErrorBody"
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    for path in ("/v1/admin/summary", "/metrics"):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [{"adminToken": []}]
        assert _ref(operation["responses"]["401"]) == "ErrorBody"


async def test_real_errors_have_the_documented_shape(client: httpx.AsyncClient) -> None:
    for response in (
        await client.post(EDIT_PATH, json={"prompt": "x"}),
        await client.get("/v1/jobs/job_doesnotexist00"),
        await client.get("/v1/admin/summary", headers={"Authorization": "Bearer wrong"}),
    ):
        assert response.status_code >= 400
        ErrorBody.model_validate(response.json())


async def test_docs_load_only_local_assets(client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        html = (await client.get(page)).text
        external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html)
        assert external == [], external
        assets = re.findall(r"""["'](/docs-assets/[^"']+)""", html)
        assert assets
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset


async def test_root_points_at_docs_and_paid_routes(client: httpx.AsyncClient) -> None:
    index = Index.model_validate((await client.get("/")).json())
    assert index.docs.endswith("/docs")
    assert {r.path for r in index.paidRoutes} == {EDIT_PATH, UPSTREAM_PATH}
    assert {r.price for r in index.paidRoutes} == {str(PRICE)}


async def test_real_answers_match_the_documented_models(world: World) -> None:
    paid = await paid_post(world.gateway_url() + EDIT_PATH, key_hex(PAYER), EDIT_BODY)
    assert paid.status_code == 200, paid.text
    accepted = AcceptedJob.model_validate(paid.json())
    job = JobDocument.model_validate(await poll_until_done(accepted.statusUrl))
    assert job.status == "completed"
    assert job.payment.network == "eip155:8453"  # v2 receipt naming
    assert job.createdAt is not None
    assert job.createdAt.endswith("Z")
