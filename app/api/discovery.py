"""How the offer is found without paying: `GET /.well-known/x402` and `GET` on a paid path.

`/.well-known/x402` uses the list format of the SDK's bazaar discovery API (a facilitator's
`GET /discovery/resources`: `{x402Version, items, pagination}`), so the SDK's own client parses
it; each item adds what an agent needs before its first call (method, path, price, networks
per x402 version, schemas). A `GET` on a paid path is what a browser does when it navigates
there: HTML clients get the paywall page, everyone else a 405 (the edit is a `POST` with a JSON
body; a `GET` never buys anything, even with a payment attached); a `HEAD` is a bare 204.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from x402.mechanisms.evm import get_asset_info

from app.api.deps import GatewayDep
from app.api.edits import EDIT_PATH, UPSTREAM_PATH, current_offer
from app.api.paywall import paywall_page, unpaid_required, wants_html
from app.api.schemas import AcceptedJob
from app.core.errors import MethodNotAllowed
from app.core.networks import network_for_version
from app.payments.offer import Offer
from app.upstream.schemas import EditRequest

router = APIRouter(tags=["discovery"])

PAID_PATHS = (EDIT_PATH, UPSTREAM_PATH)
X402_VERSIONS = (1, 2)
_PAYMENT_HEADERS = ("x-payment", "payment-signature")


def _item(offer: Offer, path: str) -> dict[str, Any]:
    terms = offer.terms
    decimals = int(get_asset_info(offer.network_caip2, terms.asset)["decimals"])
    required = unpaid_required(offer)
    return {
        # The SDK's DiscoveryResource fields.
        "resource": terms.resource_url,
        "type": "http",
        "x402Version": 2,
        "accepts": [a.v2.model_dump(mode="json", by_alias=True) for a in offer.accepts],
        "description": terms.description,
        "mimeType": offer.resource.mime_type,
        "extensions": required.extensions,
        # What it leaves to the first 402.
        "method": "POST",
        "path": path,
        "price": {
            "amount": str(terms.price_atomic),
            "decimals": decimals,
            "display": format(Decimal(terms.price_atomic).scaleb(-decimals).normalize(), "f"),
        },
        "x402Versions": list(X402_VERSIONS),
        # The primary way to pay; `accepts` lists every one.
        "networks": {str(v): network_for_version(terms.network, v) for v in X402_VERSIONS},
        "assets": list(dict.fromkeys(a.option.asset for a in offer.accepts)),
        "payTo": terms.pay_to,
        "maxTimeoutSeconds": terms.max_timeout_seconds,
        "inputSchema": EditRequest.model_json_schema(),
        "outputSchema": AcceptedJob.model_json_schema(),
    }


@router.get("/.well-known/x402", summary="Every paid route, its price and schemas")
async def well_known(gw: GatewayDep) -> JSONResponse:
    """The paid routes at today's price, in the bazaar discovery-list format."""
    items = [_item(current_offer(gw, path), path) for path in PAID_PATHS]
    return JSONResponse(
        {
            "x402Version": 2,
            "items": items,
            "pagination": {"limit": len(items), "offset": 0, "total": len(items)},
        },
        headers={"Cache-Control": "no-store"},  # the price follows the upstream's quote
    )


async def _paid_path_page(gw: GatewayDep, request: Request) -> Response:
    headers = request.headers
    if wants_html(headers.get("accept", "")) and not any(h in headers for h in _PAYMENT_HEADERS):
        return paywall_page(current_offer(gw, request.url.path))
    raise MethodNotAllowed(
        "this route is POST with a JSON body (see /.well-known/x402); nothing was charged",
        headers={"Allow": "POST"},
    )


async def _paid_path_head() -> Response:
    # The paywall's script checks its own URL's Cross-Origin-Opener-Policy with a HEAD and
    # logs an error unless the answer is 2xx; a HEAD buys nothing, so it is told nothing.
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


for _path in PAID_PATHS:
    router.add_api_route(_path, _paid_path_page, methods=["GET"], include_in_schema=False)
    router.add_api_route(_path, _paid_path_head, methods=["HEAD"], include_in_schema=False)
