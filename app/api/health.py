"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import GatewayDep
from app.api.readiness import more_checks

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Always ok while the event loop runs."""
    return {"status": "ok"}


@router.get("/readyz", summary="Database, facilitator, upstream, RPC and hot wallet ready")
async def readyz(gw: GatewayDep) -> JSONResponse:
    """503 until the database answers, the facilitator lists our payment kind, the upstream
    quotes a 402 we pay, the RPC answers and the hot wallet holds its floor; `failing` names
    each failing check."""
    checks: dict[str, str] = {}
    try:
        async with gw.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        # Cached: probes hit this every few seconds, per replica; the kinds rarely change.
        ttl = gw.settings.readyz_facilitator_ttl_s
        supported = await asyncio.wait_for(gw.supported_kinds_cached(ttl), 5)
        ok = any(k == (1, "exact", gw.settings.network) for k in supported)
        checks["facilitator"] = "ok" if ok else "error: payment kind not supported"
    except Exception as exc:
        checks["facilitator"] = f"error: {type(exc).__name__}"
    checks |= await more_checks(gw)
    failing = sorted(name for name, v in checks.items() if v != "ok")
    return JSONResponse(
        {"status": "unavailable" if failing else "ok", "checks": checks, "failing": failing},
        status_code=503 if failing else 200,
    )
