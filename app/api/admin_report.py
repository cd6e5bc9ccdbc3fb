"""Operator money report and hot-wallet endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from app.api.admin import AdminDep
from app.api.deps import GatewayDep
from app.operator.report import Window
from app.operator.reporting import report_document
from app.operator.wallet import wallet_status

router = APIRouter(tags=["operator"])


@router.get("/v1/admin/report", summary="Revenue, upstream spend, refunds, margin")
async def report(
    gw: GatewayDep,
    _: AdminDep,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Annotated[Literal["day", "key", "payer"] | None, Query()] = None,
) -> dict[str, Any]:
    """Totals and jobs by state over [since, until); with `by`, one row per day, key or payer.
    Amounts are atomic units (integers). `by=payer` lists every payer with money in the
    window (no limit): its cost grows with the number of payers, not with the jobs."""
    async with gw.sessions() as session:
        return await report_document(session, Window(since, until), by)


@router.get("/v1/admin/wallet", summary="The hot wallet's balance against the daily cap")
async def wallet(gw: GatewayDep, _: AdminDep) -> dict[str, Any]:
    """The hot wallet's token balance (read from the chain; null without an RPC), today's
    upstream spend against the daily cap, and the configured balance floor."""
    return await wallet_status(gw)
