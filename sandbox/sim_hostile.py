"""What a hostile simulated upstream answers: odd payment options, and status reads that
point elsewhere, redirect, flood or have lost the job (switched by ``sandbox.faults``)."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse, StreamingResponse
from x402.schemas import PaymentRequirementsV1

from sandbox.faults import FaultBoard
from sandbox.sim_images import DESCRIPTION, OUTPUT_SCHEMA

USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
EDIT_PATH = "/api/ai/generations/images/nano-banana-edit"


def build_requirements(pay_to: str, base_url: str, price_atomic: int) -> PaymentRequirementsV1:
    """The x402 v1 payment terms of the listing (``pay_to`` must be checksummed)."""
    return PaymentRequirementsV1(
        scheme="exact",
        network="base",
        max_amount_required=str(price_atomic),
        resource=f"{base_url}{EDIT_PATH}",
        description=DESCRIPTION,
        mime_type="application/json",
        pay_to=pay_to,
        max_timeout_seconds=300,
        asset=USDC_BASE,
        output_schema=OUTPUT_SCHEMA,
        extra={"name": "USD Coin", "version": "2"},
    )


def offer(
    faults: FaultBoard, pay_to: str, base_url: str, price_atomic: int
) -> list[PaymentRequirementsV1]:
    """The payment options of this 402 (one, unless a fault lists several)."""
    price = faults.take("price_atomic")
    listed = faults.take("offer_options")
    timeout = faults.take("offer_timeout_s")
    terms = listed.value if listed else [["exact", "base", price.value if price else price_atomic]]
    options = []
    for scheme, network, amount in terms:
        option = build_requirements(pay_to, base_url, int(amount))
        update: dict[str, Any] = {"scheme": scheme, "network": network}
        if timeout:
            update["max_timeout_seconds"] = timeout.value
        options.append(option.model_copy(update=update))
    return options


def huge_status(size: int) -> StreamingResponse:
    """A status document of `size` bytes, generated as it is sent (never held in memory)."""
    head, tail = b'{"status": "processing", "pad": "', b'"}'
    chunk = b"x" * 65536

    async def body() -> Any:
        yield head
        left = max(size - len(head) - len(tail), 0)
        while left > 0:
            yield chunk[: min(left, len(chunk))]
            left -= len(chunk)
        yield tail

    return StreamingResponse(body(), media_type="application/json")


def hostile_status(faults: FaultBoard) -> Response | None:
    """A status answer from an upstream that lies, redirects, floods or lost the job."""
    if faults.take("status_404"):
        return JSONResponse(status_code=404, content={"error": "Job not found"})
    redirect = faults.take("status_redirect")
    if redirect:
        return Response(status_code=302, headers={"Location": redirect.value})
    huge = faults.take("status_huge")
    if huge:
        return huge_status(huge.value)
    return None
