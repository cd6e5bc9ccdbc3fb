"""Our offer at the current price: the upstream's quote (or the configured floor) marked up."""

from __future__ import annotations

from typing import Any

from app.context import Gateway
from app.payments.offer import Offer, OfferTerms
from app.payments.pricing import sale_price
from app.upstream import listing


def current_price(gw: Gateway) -> int:
    """What we charge now: the dearer of the configured and the quoted upstream price, marked up."""
    s = gw.settings
    quote = gw.upstream.cached_quote()
    basis = max(s.upstream_price_atomic, quote.amount if quote else 0)
    return sale_price(basis, s.markup_bps, s.markup_fixed_atomic)


def current_offer(
    gw: Gateway, path: str, extensions: dict[str, Any], *, resource_url: str | None = None
) -> Offer:
    """Our offer for `path` at the current price (follows the upstream's cached quote).

    `resource_url`: the resource named in the offer when it is not our URL for `path` (an MCP
    tool is `mcp://tool/<name>`).
    """
    s = gw.settings
    return gw.offers.get(
        OfferTerms(
            resource_url=resource_url or s.base_url + path,
            price_atomic=current_price(gw),
            network=s.network,
            asset=s.asset,
            pay_to=s.pay_to,
            max_timeout_seconds=s.max_timeout_seconds,
            payment_identifier_required=s.payment_identifier_required,
            description=listing.DESCRIPTION,
            input_schema=listing.INPUT_SCHEMA,
            output_schema=listing.OUTPUT_SCHEMA,
            extensions=extensions,
            extra_options=s.pay_options[1:],
        )
    )
