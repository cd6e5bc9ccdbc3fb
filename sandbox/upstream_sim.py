"""A simulated Dopamint nano-banana-edit upstream: x402 v1 gated, async jobs, switchable faults.

- ``POST /api/ai/generations/images/nano-banana-edit``: the listing's body; a bad one is a 422
  before anything else (no 402, no charge). No ``X-PAYMENT``: 402 with the x402 v1 body. With
  one: verify + settle via the facilitator (failure: 402, ``error`` = its reason), then 200
  ``{jobId, status, requestId, statusUrl}`` + ``X-PAYMENT-RESPONSE``.
- ``GET /api/ai/generations/jobs/{jobId}`` (the absolute ``statusUrl``, from ``base_url``):
  ``processing`` until ``job_delay_s`` has passed, then ``completed`` (or ``failed``).
- ``GET /files/{jobId}.png``: the image (``sync_mode`` jobs get a data URI instead). Always PNG.
- ``GET|POST /_sim/faults``, ``POST /_sim/reset`` (clears faults and stats, keeps jobs),
  ``GET /_sim/stats``, ``GET /health``.

Faults (see ``sandbox.faults.FaultBoard``) are set at start (``--faults``/``SIM_FAULTS``
JSON) or at runtime: ``POST /_sim/faults {"submit_5xx": {"times": 1}, "price_atomic": 80000}``.
A hostile upstream: ``status_url`` (the answer's statusUrl points there), ``status_huge`` (a
status answer of that many bytes, generated lazily), ``status_404`` ("Job not found"),
``status_redirect`` (a 302 there), ``status_processing`` (never finishes), ``offer_options``
(the 402 lists ``[[scheme, network, amount], …]``; a payment is checked against the option of
its scheme and network), ``offer_timeout_s`` (the options' ``maxTimeoutSeconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import uvicorn
from eth_utils.address import is_address, to_checksum_address
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from x402.http import (
    X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
    FacilitatorConfig,
    HTTPFacilitatorClient,
    decode_payment_signature_header,
    encode_payment_response_header,
)
from x402.schemas import (
    PaymentPayloadV1,
    PaymentRequiredV1,
    PaymentRequirementsV1,
    SettleResponse,
    VerifyResponse,
)

from sandbox.faults import FaultBoard
from sandbox.sim_bench import install_bench_routes
from sandbox.sim_hostile import EDIT_PATH, hostile_status, offer
from sandbox.sim_images import (
    PNG_CONTENT_TYPE,
    EditRequest,
    Job,
)

LISTING_PRICE_ATOMIC = 52700
JOBS_PATH = "/api/ai/generations/jobs"

NO_PAYMENT_ERROR = "X-PAYMENT header is required"


class SimFacilitator(Protocol):
    """An async facilitator: ``EmbeddedFacilitator`` or the SDK's ``HTTPFacilitatorClient``."""

    async def verify(
        self, payload: PaymentPayloadV1, requirements: PaymentRequirementsV1
    ) -> VerifyResponse: ...

    async def settle(
        self, payload: PaymentPayloadV1, requirements: PaymentRequirementsV1
    ) -> SettleResponse: ...


@dataclass
class SimConfig:
    """How the simulated upstream behaves; ``pay_to`` is checksummed on creation."""

    pay_to: str
    facilitator: SimFacilitator
    base_url: str = "http://127.0.0.1:8402"
    price_atomic: int = LISTING_PRICE_ATOMIC
    job_delay_s: float = 3.0
    faults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_address(self.pay_to):
            raise ValueError(f"pay_to is not an EVM address: {self.pay_to!r}")
        self.pay_to = to_checksum_address(self.pay_to)
        self.base_url = self.base_url.rstrip("/")
        if type(self.price_atomic) is not int or self.price_atomic <= 0:
            raise ValueError("price_atomic must be a positive integer (atomic units)")


@dataclass
class SimStats:
    """Counters that tests read to count upstream round trips."""

    submits: int = 0
    payment_required: int = 0
    payments_rejected: int = 0
    paid_submits: int = 0
    jobs_created: int = 0
    status_requests: int = 0
    status_requests_by_job: dict[str, int] = field(default_factory=dict)
    file_requests: int = 0
    # When (epoch seconds) each job was first answered "completed": when a poller learned it.
    first_completed_at: dict[str, float] = field(default_factory=dict)


@dataclass
class SimState:
    """Everything the running sim remembers (``app.state.sim``)."""

    config: SimConfig
    faults: FaultBoard
    stats: SimStats = field(default_factory=SimStats)
    jobs: dict[str, Job] = field(default_factory=dict)
    status_times: dict[str, list[float]] = field(default_factory=dict)  # per job, epoch s


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=content, headers=headers)


def _payment_required(options: list[PaymentRequirementsV1], error: str) -> JSONResponse:
    body = PaymentRequiredV1(error=error, accepts=options)
    return _json(402, body.model_dump(mode="json", by_alias=True, exclude_none=True))


async def _submit(sim: SimState, request: Request) -> Response:
    sim.stats.submits += 1
    try:
        body = EditRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        return _json(422, {"error": "Invalid request body", "detail": detail})
    options = offer(sim.faults, sim.config.pay_to, sim.config.base_url, sim.config.price_atomic)
    requirements = options[0]
    header = request.headers.get(X_PAYMENT_HEADER)
    if not header:
        sim.stats.payment_required += 1
        return _payment_required(options, NO_PAYMENT_ERROR)
    try:
        payload = decode_payment_signature_header(header)
    except ValueError:
        return _payment_required(options, "Invalid or malformed X-PAYMENT header")
    if not isinstance(payload, PaymentPayloadV1):
        return _payment_required(options, "X-PAYMENT must carry an x402 v1 payment")
    requirements = next(
        (o for o in options if (o.scheme, o.network) == (payload.scheme, payload.network)),
        requirements,
    )
    if sim.faults.take("payment_loop"):
        return _payment_required(options, NO_PAYMENT_ERROR)
    if sim.faults.take("submit_5xx_before_settle"):
        return _json(500, {"error": "Internal server error"})
    try:
        verdict = await sim.config.facilitator.verify(payload, requirements)
        if not verdict.is_valid:
            sim.stats.payments_rejected += 1
            return _payment_required(options, verdict.invalid_reason or "invalid_payment")
        settled = await sim.config.facilitator.settle(payload, requirements)
    except Exception as exc:
        return _json(502, {"error": f"Payment facilitator failed: {type(exc).__name__}"})
    if not settled.success:
        sim.stats.payments_rejected += 1
        return _payment_required(options, settled.error_reason or "settlement_failed")
    sim.stats.paid_submits += 1
    if sim.faults.take("submit_5xx"):
        return _json(500, {"error": "Internal server error"})
    stall = sim.faults.take("submit_timeout")
    if stall is not None:
        await asyncio.sleep(stall.value)
    failure = sim.faults.take("job_fails")
    job = Job.create(body, failure.value if failure else None)
    sim.jobs[job.job_id] = job
    sim.stats.jobs_created += 1
    headers = {
        X_PAYMENT_RESPONSE_HEADER: encode_payment_response_header(settled),
        "Access-Control-Expose-Headers": X_PAYMENT_RESPONSE_HEADER,
    }
    if sim.faults.take("submit_malformed"):
        broken = f'{{"jobId": "{job.job_id}", "status": "proc'
        return Response(broken, media_type="application/json", headers=headers)
    elsewhere = sim.faults.take("status_url")
    status_url = elsewhere.value if elsewhere else f"{sim.config.base_url}{JOBS_PATH}/{job.job_id}"
    content = {"jobId": job.job_id, "status": "processing", "requestId": job.request_id}
    return _json(200, {**content, "statusUrl": status_url}, headers)


def create_upstream_app(config: SimConfig) -> FastAPI:
    """The simulated upstream as an ASGI app; ``app.state.sim`` holds its ``SimState``."""
    sim = SimState(config=config, faults=FaultBoard(config.faults))
    app = FastAPI(title="Simulated Dopamint nano-banana-edit", docs_url=None, redoc_url=None)
    app.state.sim = sim

    @app.post(EDIT_PATH)
    async def submit(request: Request) -> Response:
        return await _submit(sim, request)

    @app.get(JOBS_PATH + "/{job_id}")
    async def job_status(job_id: str) -> Response:
        sim.stats.status_requests += 1
        by_job = sim.stats.status_requests_by_job
        by_job[job_id] = by_job.get(job_id, 0) + 1
        if sim.faults.take("status_5xx"):
            return _json(500, {"error": "Internal server error"})
        if sim.faults.take("status_malformed"):
            return Response(f'{{"jobId": "{job_id}", "sta', media_type="application/json")
        hostile = hostile_status(sim.faults)
        if hostile is not None:
            return hostile
        job = sim.jobs.get(job_id)
        if job is None:
            return _json(404, {"error": "Job not found"})
        view = job.view(config.job_delay_s, config.base_url)
        if sim.faults.take("status_processing"):
            view |= {"status": "processing", "images": [], "description": None}
        if view["status"] != "processing":
            sim.stats.first_completed_at.setdefault(job_id, time.time())
        sim.status_times.setdefault(job_id, []).append(time.time())
        return _json(200, view)

    @app.get("/files/{job_id}.png")
    async def job_file(job_id: str) -> Response:
        sim.stats.file_requests += 1
        job = sim.jobs.get(job_id)
        if job is None or job.sync_mode or job.status(config.job_delay_s) != "completed":
            return _json(404, {"error": "File not found"})
        return Response(job.png(), media_type=PNG_CONTENT_TYPE)

    @app.api_route("/_sim/faults", methods=["GET", "POST"])
    async def faults(request: Request) -> Response:
        try:
            if request.method == "POST":
                sim.faults.update(json.loads(await request.body()))
        except ValueError as exc:  # JSONDecodeError is a ValueError too
            return _json(400, {"error": str(exc)})
        return _json(200, {"faults": sim.faults.wire()})

    @app.post("/_sim/reset")
    async def reset() -> dict[str, Any]:
        sim.faults, sim.stats = FaultBoard(), SimStats()
        sim.status_times.clear()
        return {"faults": sim.faults.wire(), "stats": asdict(sim.stats)}

    install_bench_routes(app, sim)

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return asdict(sim.stats)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the simulated upstream on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.upstream_sim")
    parser.add_argument("--port", type=int, default=8402, help="port on 127.0.0.1")
    parser.add_argument("--facilitator-url", required=True, help="x402 facilitator base URL")
    parser.add_argument("--pay-to", required=True, help="address that receives the payments")
    parser.add_argument("--base-url", help="public base URL (default http://127.0.0.1:PORT)")
    parser.add_argument("--price-atomic", type=int, default=LISTING_PRICE_ATOMIC)
    parser.add_argument("--job-delay", type=float, default=3.0, help="seconds until completed")
    parser.add_argument("--faults", default=os.environ.get("SIM_FAULTS", "{}"), help="JSON")
    options = parser.parse_args(argv)
    try:
        config = SimConfig(
            pay_to=options.pay_to,
            facilitator=HTTPFacilitatorClient(FacilitatorConfig(url=options.facilitator_url)),
            base_url=options.base_url or f"http://127.0.0.1:{options.port}",
            price_atomic=options.price_atomic,
            job_delay_s=options.job_delay,
            faults=json.loads(options.faults),
        )
        app = create_upstream_app(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host="127.0.0.1", port=options.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
