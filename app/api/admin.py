"""Operator endpoints: money summary, parked jobs, Prometheus metrics (bearer-token protected)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import GatewayDep
from app.api.job_reads import cache_gauges
from app.core.errors import NotFound, Unauthorized
from app.core.metrics import render
from app.jobs import refund_limit, totals
from app.jobs.repository import JobRepository
from app.operator.gauges import refresh_gauges
from app.payments.pricing import format_usdc

router = APIRouter(tags=["operator"])


async def require_admin(
    gw: GatewayDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Bearer X402R_ADMIN_TOKEN; without a configured token the endpoints do not exist."""
    token = gw.settings.admin_token
    if token is None:
        raise NotFound("not found")
    expected = f"Bearer {token.get_secret_value()}".encode()
    # Bytes, not str: compare_digest refuses non-ASCII text (a 500 instead of a 401). The
    # server decoded the header as latin-1, so this gives back the bytes that were sent.
    presented = authorization.encode("latin-1", "replace") if authorization is not None else b""
    if not hmac.compare_digest(presented, expected):
        raise Unauthorized("admin token required", headers={"WWW-Authenticate": "Bearer"})


AdminDep = Annotated[None, Depends(require_admin)]


@router.get("/v1/admin/summary", summary="Revenue, upstream spend, refunds, margin, job states")
async def summary(gw: GatewayDep, _: AdminDep) -> dict[str, Any]:
    """The ledger's totals (atomic units and display) and where the jobs stand."""
    async with gw.sessions() as session:
        return await summary_of(session)


async def summary_of(session: AsyncSession) -> dict[str, Any]:
    """The summary's body, from the rollups (`app.jobs.totals`): no scan of the ledger."""
    ledger = (await totals.totals(session)).as_dict()
    states = await totals.jobs_by_state(session)
    parked = await JobRepository(session).needing_attention()
    withheld = await refund_limit.withheld_count(session)
    return {
        "ledger": {k: str(v) for k, v in ledger.items()},
        "ledgerDisplay": {k: format_usdc(v) for k, v in ledger.items()},
        "jobsByState": states,
        "refundsWithheld": withheld,  # failed past the payer's daily refund limit
        "needsAttention": [
            {
                "jobId": j.id,
                "payer": j.payer,
                "amount": str(j.pay_amount),
                "settleTx": j.settle_tx,
                "upstreamTx": j.upstream_tx,
                "upstreamNonce": j.upstream_nonce,
                "error": {"code": j.error_code, "message": j.error_message},
            }
            for j in parked
        ],
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(gw: GatewayDep, _: AdminDep, request: Request) -> Response:
    """Money moved, requests, payments and latencies; jobs by state, hot wallet, spend and key
    budgets read now (see app.operator.gauges); this process's finished-job cache."""
    await refresh_gauges(gw)
    cache_gauges(request.app)
    return Response(render(), media_type="text/plain; version=0.0.4")
