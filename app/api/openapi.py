"""The OpenAPI document, completed where route signatures cannot say it, and offline docs.

Payment headers are read from the raw request on the hot path (declaring them as parameters
would parse them on every call), so they are declared here; the 402 gets its
`PAYMENT-REQUIRED` header and x402 v1 body schema; every error its `{error, message,
details}` shape; operator routes the admin bearer token. `/docs` and `/redoc` load their
assets from the installed `fastapi-offline` package, never from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from x402.schemas import PaymentRequiredV1

from app.api.schemas import ErrorBody
from app.upstream.schemas import EXAMPLE_EDIT

ASSETS_URL = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"
_ADMIN_PATHS = ("/v1/admin/", "/metrics")
_PAID_PARAMETERS = [
    {
        "name": "PAYMENT-SIGNATURE",
        "in": "header",
        "required": False,
        "description": "x402 v2 payment: base64 JSON PaymentPayload for the 402's requirements",
        "schema": {"type": "string"},
    },
    {
        "name": "X-PAYMENT",
        "in": "header",
        "required": False,
        "description": "x402 v1 payment: base64 JSON PaymentPayload (`accepts` of the 402 body)",
        "schema": {"type": "string"},
    },
]
_RECEIPT_HEADERS = {
    "PAYMENT-RESPONSE": {
        "description": "x402 v2 settlement receipt (base64 JSON)",
        "schema": {"type": "string"},
    },
    "X-PAYMENT-RESPONSE": {
        "description": "x402 v1 settlement receipt (base64 JSON)",
        "schema": {"type": "string"},
    },
}
_PAYMENT_REQUIRED = {
    "description": "Payment required (or the payment was refused: `error` is the x402 reason). "
    "x402 v1 body with `accepts`; x402 v2 in the `PAYMENT-REQUIRED` header.",
    "headers": {
        "PAYMENT-REQUIRED": {
            "description": "x402 v2 PaymentRequired, base64 JSON",
            "schema": {"type": "string"},
        }
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentRequiredV1"}}},
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def _complete(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    v1 = PaymentRequiredV1.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(v1.pop("$defs", {}))
    schemas["PaymentRequiredV1"] = v1
    components.setdefault("securitySchemes", {})["adminToken"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "X402R_ADMIN_TOKEN",
    }
    components["securitySchemes"]["apiKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`x402r_…`, team gateway): an alternative to an x402 payment",
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if status.startswith(("4", "5")) and status != "402" and "content" not in response:
                    response["content"] = _ERROR_CONTENT
                elif status == "422":
                    response["content"] = _ERROR_CONTENT
            if "402" in responses:
                responses["402"] = _PAYMENT_REQUIRED
                operation.setdefault("parameters", []).extend(_PAID_PARAMETERS)
                operation["security"] = [{}, {"apiKey": []}]  # x402 payment, or a key
                body = operation.get("requestBody", {}).get("content", {})
                if "application/json" in body:  # a body that passes validation, to copy
                    body["application/json"]["example"] = EXAMPLE_EDIT
                if "200" in responses:
                    responses["200"]["headers"] = _RECEIPT_HEADERS
            if path.startswith(_ADMIN_PATHS):
                operation["security"] = [{"adminToken": []}]
                responses.setdefault("401", {"description": "Missing or wrong admin token"})
                responses["401"]["content"] = _ERROR_CONTENT
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the completed OpenAPI document and offline `/docs` and `/redoc`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} — API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
