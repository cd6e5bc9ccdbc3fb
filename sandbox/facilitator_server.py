"""A standalone x402 facilitator HTTP service (verify, settle, supported) for the sandbox.

It speaks the wire format the SDK's ``HTTPFacilitatorClient`` expects:

- ``POST /verify`` and ``POST /settle`` take ``{x402Version, paymentPayload,
  paymentRequirements}`` and answer 200 with a ``VerifyResponse`` / ``SettleResponse``
  (camelCase). A payment that fails is still a 200 (``isValid``/``success`` false with a
  reason); the client treats any other status as the facilitator itself failing.
- ``GET /supported`` answers ``{kinds, extensions, signers}``.
- ``GET /_stats`` counts the calls received per endpoint (``{"calls": {verify, settle,
  supported}}``); ``/_faults`` switches injected faults (sandbox only).
- A body that is not JSON or not a well-formed request is a 400 ``{"error", "message"}``.

Run ``python -m sandbox.facilitator_server --port 8403 --rpc-url http://127.0.0.1:8545``;
the gas key comes from ``FACILITATOR_PRIVATE_KEY`` (default: anvil dev account 9, which
is public and only fit for a local chain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from x402 import x402FacilitatorSync
from x402.schemas import SettleResponse, SupportedResponse, VerifyResponse
from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

from app.payments.embedded_facilitator import (
    AnyPayload,
    AnyRequirements,
    EmbeddedFacilitator,
    build_embedded_facilitator,
)
from sandbox.faults import FACILITATOR_FAULTS, FaultBoard

logger = logging.getLogger(__name__)


class AsyncFacilitator(Protocol):
    """What the service needs from a facilitator: ``EmbeddedFacilitator`` fits."""

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        """Check a payment without moving money."""
        ...

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        """Move the money on chain."""
        ...

    async def supported(self) -> SupportedResponse:
        """The payment kinds this facilitator handles."""
        ...


class BadRequestError(ValueError):
    """The request body is not a well-formed facilitator request."""


def _error(status: int, error: str, message: str) -> JSONResponse:
    """The one error shape of this service."""
    return JSONResponse(status_code=status, content={"error": error, "message": message})


def _wire(model: BaseModel) -> dict[str, Any]:
    """A response model as the SDK serializes it: camelCase, no nulls."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def parse_facilitator_request(request: Request) -> tuple[AnyPayload, AnyRequirements]:
    """Parse ``{x402Version, paymentPayload, paymentRequirements}`` with the SDK's helpers."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("body must be a JSON object")
    version = body.get("x402Version")
    if type(version) is not int or version not in (1, 2):
        raise BadRequestError("x402Version must be 1 or 2")
    raw_payload, raw_requirements = body.get("paymentPayload"), body.get("paymentRequirements")
    if not isinstance(raw_payload, dict) or not isinstance(raw_requirements, dict):
        raise BadRequestError("paymentPayload and paymentRequirements must be JSON objects")
    try:
        payload = parse_payment_payload(raw_payload)
        requirements = parse_payment_requirements(version, raw_requirements)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise BadRequestError(f"malformed payment data: {exc}") from exc
    if payload.x402_version != version:
        raise BadRequestError(
            f"x402Version {version} does not match paymentPayload.x402Version "
            f"{payload.x402_version}"
        )
    return payload, requirements


FAKE_TX = "0x" + "ee" * 32  # what a lying facilitator claims to have settled


def _claimed(payload: AnyPayload, requirements: AnyRequirements, tx: str) -> SettleResponse:
    """A success answer naming `tx`, whatever happened."""
    authorization = payload.payload.get("authorization", {})
    return SettleResponse(
        success=True,
        transaction=tx,
        network=str(requirements.network),
        payer=str(authorization.get("from", "")),
    )


def create_facilitator_app(facilitator: AsyncFacilitator | x402FacilitatorSync) -> FastAPI:
    """The facilitator HTTP service over ``facilitator`` (a sync SDK facilitator is wrapped)."""
    service: AsyncFacilitator = (
        EmbeddedFacilitator(facilitator)
        if isinstance(facilitator, x402FacilitatorSync)
        else facilitator
    )
    app = FastAPI(title="x402 facilitator (sandbox)", docs_url=None, redoc_url=None)
    faults = FaultBoard(known=FACILITATOR_FAULTS)
    app.state.faults = faults
    # Calls received per endpoint, so tests can tell what reached the facilitator.
    calls = {"verify": 0, "settle": 0, "supported": 0}

    async def run(
        request: Request,
        operation: str,
        call: Callable[[AnyPayload, AnyRequirements], Awaitable[BaseModel]],
    ) -> Response:
        calls[operation] += 1
        try:
            payload, requirements = await parse_facilitator_request(request)
        except BadRequestError as exc:
            return _error(400, "invalid_request", str(exc))
        if faults.take(f"{operation}_5xx"):
            return _error(500, "injected_fault", f"{operation} failed (injected, nothing done)")
        if operation == "verify" and (stall := faults.take("verify_timeout")):
            await asyncio.sleep(float(stall.value))
        if operation == "settle" and (lie := faults.take("settle_fake_success")):
            # A lying facilitator: success, nothing moved; the transaction it names is made
            # up, or (a value) a real one that paid for something else.
            named = FAKE_TX if lie.value is True else str(lie.value)
            return JSONResponse(_wire(_claimed(payload, requirements, named)))
        try:
            result = await call(payload, requirements)
        except Exception as exc:
            # Exception text can carry the RPC URL (and any key in it): log the type only.
            logger.error("%s failed unexpectedly: %s", operation, type(exc).__name__)
            return _error(500, f"unexpected_{operation}_error", f"{operation} failed")
        if operation == "settle":
            # These fire AFTER the transfer happened: the caller cannot know it did.
            if stall := faults.take("settle_timeout"):
                await asyncio.sleep(float(stall.value))
            if faults.take("settle_lost"):
                return _error(500, "injected_fault", "settle answer lost (injected)")
            if faults.take("settle_garbage"):
                return Response(b"<html>bad gateway", media_type="text/html")
            if faults.take("settle_wrong_tx"):  # moved the money, names another transaction
                return JSONResponse(_wire(_claimed(payload, requirements, FAKE_TX)))
        return JSONResponse(_wire(result))

    @app.api_route("/_faults", methods=["GET", "POST"])
    async def set_faults(request: Request) -> JSONResponse:
        try:
            if request.method == "POST":
                faults.update(json.loads(await request.body()))
        except ValueError as exc:
            return _error(400, "invalid_request", str(exc))
        return JSONResponse({"faults": faults.wire()})

    @app.post("/_faults/reset")
    async def reset_faults() -> JSONResponse:
        faults.update(dict.fromkeys(FACILITATOR_FAULTS))
        return JSONResponse({"faults": faults.wire()})

    @app.post("/verify")
    async def verify(request: Request) -> Response:
        return await run(request, "verify", service.verify)

    @app.post("/settle")
    async def settle(request: Request) -> Response:
        return await run(request, "settle", service.settle)

    @app.get("/_stats")
    async def stats() -> JSONResponse:
        return JSONResponse({"calls": calls})

    @app.get("/supported")
    async def supported() -> JSONResponse:
        calls["supported"] += 1
        return JSONResponse(_wire(await service.supported()))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _csv(value: str) -> list[str]:
    """Split a comma-separated CLI value, dropping blanks."""
    return [part.strip() for part in value.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Serve the facilitator on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.facilitator_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=8403, help="port on 127.0.0.1")
    parser.add_argument("--rpc-url", required=True, help="JSON-RPC URL of the chain")
    parser.add_argument("--v1-networks", type=_csv, default=["base"], help="e.g. base")
    parser.add_argument("--v2-networks", type=_csv, default=["eip155:8453"], help="CAIP-2 ids")
    options = parser.parse_args(argv)

    private_key = os.environ.get("FACILITATOR_PRIVATE_KEY")
    if not private_key:
        from sandbox.chain import dev_account

        # A public anvil key: fine on a local chain, worthless anywhere else.
        private_key = dev_account(9).key.hex()
    try:
        facilitator = build_embedded_facilitator(
            private_key,
            options.rpc_url,
            v1_networks=options.v1_networks,
            v2_networks=options.v2_networks,
        )
    except ValueError:
        print("error: FACILITATOR_PRIVATE_KEY is not a valid private key", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(
        create_facilitator_app(facilitator), host="127.0.0.1", port=options.port, log_level="info"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
