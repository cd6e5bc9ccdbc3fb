"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import GatewayDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Always ok while the event loop runs."""
    return {"status": "ok"}


@router.get("/readyz", summary="Database and facilitator reachable")
async def readyz(gw: GatewayDep) -> JSONResponse:
    """503 until the database answers and the facilitator lists our payment kind."""
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
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
