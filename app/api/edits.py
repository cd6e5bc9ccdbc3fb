"""`POST /v1/images/edit` (and the upstream's own path): validate, 402, or buy a job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from x402.http import (
    PAYMENT_RESPONSE_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
    encode_payment_response_header,
)
from x402.schemas import SettleResponse

from app.api.bazaar import EDIT_DISCOVERY
from app.api.client_ip import client_address
from app.api.deps import GatewayDep
from app.api.key_edits import edit_with_key
from app.api.paid_outcome import Failed, Refused, outcome
from app.api.paywall import is_browser, paywall_page
from app.api.request_log import logged
from app.api.schemas import AcceptedJob
from app.context import Gateway
from app.core.logs import get_logger
from app.core.metrics import PAYMENTS_REJECTED
from app.jobs.models import Job
from app.jobs.purchase import purchase
from app.payments.current import current_offer as offer_at_current_price
from app.payments.identifiers import idempotency_key_of
from app.payments.incoming import IncomingPayment, PaymentRejected, parse_payment
from app.payments.offer import Http402, Offer
from app.upstream.schemas import EditRequest

router = APIRouter(tags=["edits"])
log = get_logger(__name__)

EDIT_PATH = "/v1/images/edit"
UPSTREAM_PATH = "/api/ai/generations/images/nano-banana-edit"
_PAYMENT_HEADERS = ("x-payment", "payment-signature")
# A 402 carries one moment's price; a paid answer, one client's receipt: caches keep neither.
NO_STORE = {"Cache-Control": "no-store"}


def current_offer(gw: Gateway, path: str) -> Offer:
    """Our offer for the paid edit at `path`, at the current price."""
    return offer_at_current_price(gw, path, EDIT_DISCOVERY)


class Http402Response(Response):
    """The offer's 402 exactly as `app.payments.offer` rendered it (the one producer)."""

    def __init__(self, answer: Http402) -> None:
        super().__init__(answer.body, status_code=402)
        self.raw_headers = list(answer.raw_headers)


def payment_required(
    offer: Offer, reason: str | None = None, message: str | None = None
) -> Response:
    """The 402: v1 JSON body and v2 `PAYMENT-REQUIRED` header."""
    if reason is None:
        return Http402Response(offer.unpaid)
    PAYMENTS_REJECTED.labels(reason).inc()
    return Http402Response(offer.payment_required(reason, message))


def _receipt_headers(job: Job, receipt: SettleResponse | None) -> dict[str, str]:
    if receipt is None:
        return {}
    name = X_PAYMENT_RESPONSE_HEADER if job.x402_version == 1 else PAYMENT_RESPONSE_HEADER
    return {name: encode_payment_response_header(receipt)}


def _answer(gw: Gateway, offer: Offer, job: Job, payment: IncomingPayment) -> Response:
    """The HTTP rendering of where the job stands after the request path."""
    answer = outcome(gw, job, payment)
    if isinstance(answer, Refused):
        return payment_required(offer, answer.reason, answer.message)
    settled = _receipt_headers(job, answer.receipt)
    if isinstance(answer, Failed):
        answer.error.headers.update({**settled, **NO_STORE})
        raise answer.error
    return JSONResponse(answer.view, headers={**settled, **NO_STORE})


async def _edit(
    gw: Gateway, request: Request, body: EditRequest, idempotency_key: str | None
) -> Response:
    offer = current_offer(gw, request.url.path)
    header = next((request.headers[h] for h in _PAYMENT_HEADERS if h in request.headers), None)
    if header is None and "authorization" in request.headers:
        # An x402 payment wins over a key: a caller told its budget is spent pays instead.
        return await edit_with_key(gw, request, body.upstream_json(), offer, idempotency_key)
    if header is None:
        headers = request.headers
        if is_browser(headers.get("accept", ""), headers.get("user-agent", "")):
            return paywall_page(offer)
        return payment_required(offer)
    try:
        payment = parse_payment(header, offer)
        key = idempotency_key_of(
            payment, idempotency_key, required=gw.settings.payment_identifier_required
        )
        job = await purchase(
            gw,
            route=request.url.path,
            body=body.upstream_json(),
            payment=payment,
            idempotency_key=key,
            client=client_address(request, gw.settings.trusted_proxy_hops),
        )
    except PaymentRejected as exc:
        log.info("payment refused", reason=exc.reason)
        return payment_required(offer, exc.reason, exc.message)
    log.info("paid job", job_id=job.id, state=job.state, payer=payment.payer, amount=payment.value)
    return _answer(gw, offer, job, payment)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": AcceptedJob, "description": "Paid and accepted; poll `statusUrl`"},
    401: {"description": "`Authorization: Bearer` is not a valid API key (`invalid_api_key`)"},
    402: {
        "description": "Payment required (x402 v1 body, v2 PAYMENT-REQUIRED header); with an "
        "API key whose budget is spent, `budget_exhausted` with the same requirements"
    },
    409: {"description": "Idempotency key or payment reused for a different request"},
    422: {"description": "Invalid body; nothing charged"},
    429: {
        "description": "Too many new payments from this payer or client, or requests with "
        "this API key; see Retry-After"
    },
    502: {"description": "Upstream failed after payment; see refund"},
    503: {
        "description": "Retry with the same payment after Retry-After (database_unavailable, "
        "payment_in_progress, payment_outcome_unknown, settlement_unresolved: never pay "
        "again), or selling is paused"
    },
}


@router.post(EDIT_PATH, responses=_RESPONSES, summary="Edit images (paid, x402 or API key)")
async def create_edit(
    body: EditRequest,
    request: Request,
    gw: GatewayDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Pay with x402 and start a nano-banana edit; poll the returned statusUrl."""
    return await logged(request, lambda: _edit(gw, request, body, idempotency_key))


@router.post(UPSTREAM_PATH, responses=_RESPONSES, summary="Same as /v1/images/edit (drop-in path)")
async def create_edit_upstream_path(
    body: EditRequest,
    request: Request,
    gw: GatewayDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """The upstream's own path, so switching the base URL is all a client needs."""
    return await logged(request, lambda: _edit(gw, request, body, idempotency_key))
