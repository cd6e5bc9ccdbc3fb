"""`GET /`: a short pointer for whoever lands on the base URL (docs, paid routes, status)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app import __version__
from app.api.deps import GatewayDep
from app.api.edits import EDIT_PATH, UPSTREAM_PATH, current_offer
from app.api.schemas import Index
from app.jobs.views import status_url

router = APIRouter(tags=["health"])


@router.get("/", summary="What this service is and where to go next")
async def index(gw: GatewayDep, request: Request) -> Index:
    """Links to the docs and the OpenAPI document, and the paid routes at today's price."""
    base = gw.settings.base_url
    routes = []
    for path in (EDIT_PATH, UPSTREAM_PATH):
        offer = current_offer(gw, path)
        routes.append(
            {
                "method": "POST",
                "path": path,
                "price": str(offer.terms.price_atomic),
                "network": gw.settings.network,
                "asset": gw.settings.asset,
            }
        )
    return Index.model_validate(
        {
            "service": "x402-reseller",
            "version": __version__,
            "docs": f"{base}/docs",
            "openapi": f"{base}{request.app.openapi_url}",
            "paidRoutes": routes,
            "jobStatus": status_url(base, "{jobId}"),
        }
    )
