"""The SDK's EVM paywall page for our offer, for browsers that land on a paid path."""

from __future__ import annotations

from fastapi.responses import Response
from x402.http import PAYMENT_REQUIRED_HEADER, decode_payment_required_header
from x402.http.paywall import create_paywall, evm_paywall
from x402.http.types import PaywallConfig
from x402.schemas import PaymentRequired

from app.core.networks import chain_id
from app.payments.offer import Offer, OfferTerms

APP_NAME = "x402-reseller"
TESTNET_CHAIN_IDS = frozenset({84532})  # Base Sepolia; Base (8453) is mainnet
_PAYWALL = create_paywall().with_network(evm_paywall).build()
_PAGES: dict[OfferTerms, bytes] = {}
_MAX_PAGES = 4  # a page is ~2.3 MB: two paths at two prices (the quote moves rarely)


def is_browser(accept: str, user_agent: str) -> bool:
    """The SDK middleware's rule (`x402HTTPServerBase._is_web_browser`): HTML and Mozilla."""
    return "text/html" in accept and "Mozilla" in user_agent


def wants_html(accept: str) -> bool:
    """Whether a client asks for HTML at all; such requests skip the recorded JSON 402."""
    return "text/html" in accept


def unpaid_required(offer: Offer) -> PaymentRequired:
    """The v2 payment-required the offer's unpaid `PAYMENT-REQUIRED` header carries."""
    required = decode_payment_required_header(offer.unpaid_header)
    if not isinstance(required, PaymentRequired):
        raise TypeError("PAYMENT-REQUIRED must carry x402 v2")
    return required


def _render(offer: Offer) -> bytes:
    # The page embeds exactly what PAYMENT-REQUIRED carries (extensions included).
    required = unpaid_required(offer)
    config = PaywallConfig(
        app_name=APP_NAME,
        current_url=offer.resource.url,
        testnet=chain_id(offer.network_caip2) in TESTNET_CHAIN_IDS,
    )
    return _PAYWALL.generate_html(required, config).encode()


def paywall_page(offer: Offer) -> Response:
    """The 402 as a page: the SDK paywall (amount, network, asset) and the same header."""
    page = _PAGES.get(offer.terms)
    if page is None:
        if len(_PAGES) >= _MAX_PAGES:
            _PAGES.clear()
        page = _PAGES[offer.terms] = _render(offer)
    return Response(
        page,
        status_code=402,
        media_type="text/html",
        headers={
            PAYMENT_REQUIRED_HEADER: offer.unpaid_header,
            "Cache-Control": "no-store",
            "Vary": "Accept, User-Agent",
        },
    )
