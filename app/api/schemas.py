"""Response models, for the OpenAPI document: what agents and SDK generators can rely on.

The routes answer with precomputed bytes (see `app.api.job_cache`), so these models document
the shapes; tests validate real answers against them so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["processing", "completed", "failed"]


class ErrorBody(BaseModel):
    """Every error: a stable machine-readable code, a message, and details when they help."""

    error: str = Field(examples=["invalid_request"], description="Stable machine-readable code")
    message: str = Field(examples=["image_urls: Field required"])
    details: Any | None = Field(None, description="Field errors, the job id, refund facts…")


class AcceptedJob(BaseModel):
    """The answer to a paid edit: the upstream's shape, pointing at our status URL."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "jobId": "job_2DFOE7ho6F8-WBX1Xx7DOpzG",
                    "status": "processing",
                    "requestId": "req_8c1f",
                    "statusUrl": "https://reseller.example.com/v1/jobs/job_2DFOE7ho6F8-WBX1Xx7DOpzG",
                }
            ]
        }
    )

    jobId: str
    status: Status
    requestId: str
    statusUrl: str


class Payment(BaseModel):
    """The client's payment for the job: x402, or a debit of an API key's budget."""

    method: Literal["x402", "api_key"] = "x402"
    apiKeyId: str | None = Field(None, description="api_key: the key's id (never its secret)")
    payer: str | None = Field(description="x402: the paying address; api_key: null")
    amount: str = Field(description="Atomic units of the asset (USDC: 6 decimals)")
    amountDisplay: str = Field(examples=["0.06324 USDC"])
    asset: str
    network: str | None = Field(
        description="x402: as in the client's receipt, `base` (v1) or CAIP-2 (v2); api_key: null"
    )
    transaction: str | None = Field(description="Settlement transaction; null until settled")


class Refund(BaseModel):
    """A refund of the client's payment, when the paid job could not be served."""

    amount: str
    transaction: str | None
    status: Literal["pending", "refunded", "under_review"]
    to: Literal["api_key_budget"] | None = Field(
        None, description="api_key: credited to the key's budget (no transaction)"
    )


class JobError(BaseModel):
    """Why the job failed."""

    code: str
    message: str | None


class JobDocument(AcceptedJob):
    """`GET /v1/jobs/{id}`.

    `status` is the upstream's own vocabulary (so clients of the upstream need no change);
    `state` is this gateway's finer step (verified, paid, upstream_signed, submitted,
    completed, failed, payment_failed, refunding, refunded, needs_attention), for operators
    and for clients that want to know where their money is.
    """

    # Its own example: the inherited one is an AcceptedJob, which this document is not.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "jobId": "job_2DFOE7ho6F8-WBX1Xx7DOpzG",
                    "status": "completed",
                    "requestId": "req_8c1f",
                    "statusUrl": "https://reseller.example.com/v1/jobs/job_2DFOE7ho6F8-WBX1Xx7DOpzG",
                    "state": "completed",
                    "images": [
                        {
                            "url": "https://cdn.example.com/edits/cat-watercolor.png",
                            "content_type": "image/png",
                            "width": 1024,
                            "height": 1024,
                        }
                    ],
                    "description": "The cat as a watercolor painting.",
                    "payment": {
                        "method": "x402",
                        "payer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                        "amount": "63240",
                        "amountDisplay": "0.06324 USDC",
                        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
                        "network": "eip155:8453",
                        "transaction": "0x" + "5e" * 32,
                    },
                    "createdAt": "2026-01-15T09:30:00.125Z",
                    "finishedAt": "2026-01-15T09:30:21.480Z",
                }
            ]
        }
    )

    state: str
    images: list[Any] | None = None
    description: str | None = None
    error: JobError | None = None
    payment: Payment
    refund: Refund | None = None
    createdAt: str | None = Field(description="RFC 3339, UTC")
    finishedAt: str | None = Field(description="RFC 3339, UTC")


class PaidRoute(BaseModel):
    """One paid route of this gateway."""

    method: str
    path: str
    price: str = Field(description="Atomic units")
    network: str
    asset: str


class Index(BaseModel):
    """`GET /`: where to go next."""

    service: str
    version: str
    docs: str
    openapi: str
    paidRoutes: list[PaidRoute]
    jobStatus: str
