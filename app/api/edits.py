"""`POST /v1/images/edit` (and the upstream's own path): validate, 402, or buy a job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
    encode_payment_response_header,
)
from x402.schemas import SettleResponse

from app.api.bazaar import EDIT_DISCOVERY
from app.api.client_ip import client_address
from app.api.deps import GatewayDep
from app.api.key_edits import edit_with_key
from app.api.paywall import is_browser, paywall_page
from app.api.request_log import logged
from app.api.schemas import AcceptedJob
from app.context import Gateway
from app.core.errors import PaymentOutcomeUnknown, RetryLater, UpstreamFailed
from app.core.logs import get_logger
from app.core.metrics import PAYMENTS_REJECTED
from app.jobs.models import Job, JobState
from app.jobs.purchase import purchase
from app.jobs.views import (
    accepted_view,
    failure_sentence,
    job_view,
    money_outcome,
    refund_details,
)
from app.payments.current import current_offer as offer_at_current_price
from app.payments.identifiers import idempotency_key_of
from app.payments.incoming import IncomingPayment, PaymentRejected, parse_payment
from app.payments.offer import Offer
from app.upstream.schemas import EditRequest

router = APIRouter(tags=["edits"])
log = get_logger(__name__)

EDIT_PATH = "/v1/images/edit"
UPSTREAM_PATH = "/api/ai/generations/images/nano-banana-edit"
_PAYMENT_HEADERS = ("x-payment", "payment-signature")
SETTLEMENT_UNRESOLVED = "settlement_unresolved"
UNRESOLVED_RETRY_AFTER_S = 300
# A 402 carries one moment's price; a paid answer, one client's receipt: caches keep neither.
NO_STORE = {"Cache-Control": "no-store"}


def current_offer(gw: Gateway, path: str) -> Offer:
    """Our offer for the paid edit at `path`, at the current price."""
    return offer_at_current_price(gw, path, EDIT_DISCOVERY)


def payment_required(
    offer: Offer, reason: str | None = None, message: str | None = None
) -> Response:
    """The 402: v1 JSON body and v2 `PAYMENT-REQUIRED` header."""
    if reason is None:
        body, header = offer.unpaid_body, offer.unpaid_header
    else:
        PAYMENTS_REJECTED.labels(reason).inc()
        body, header = offer.payment_required(reason, message)
    return Response(
        body,
        status_code=402,
        media_type="application/json",
        headers={PAYMENT_REQUIRED_HEADER: header, **NO_STORE},
    )


def _settlement_headers(gw: Gateway, job: Job) -> dict[str, str]:
    if not job.settle_tx:
        return {}
    v1 = job.x402_version == 1
    response = SettleResponse(
        success=True,
        transaction=job.settle_tx,
        network=gw.settings.network if v1 else job.pay_network,
        payer=job.payer,
        amount=str(job.pay_amount),
    )
    name = X_PAYMENT_RESPONSE_HEADER if v1 else PAYMENT_RESPONSE_HEADER
    return {name: encode_payment_response_header(response)}


def _answer(gw: Gateway, offer: Offer, job: Job, payment: IncomingPayment) -> Response:
    """Map where the job stands after the request path to an HTTP answer."""
    base = gw.settings.base_url
    # The settlement header describes the job's payment: only the payment that bought the job
    # gets it (an idempotent retry with a new payment must not read it as its own).
    own = job.pay_nonce == payment.nonce and job.payer == payment.payer
    settled = _settlement_headers(gw, job) if own else {}
    if job.error_code == SETTLEMENT_UNRESOLVED and job.settle_tx is None:
        # The payment may well have moved: asking for another one could charge twice.
        raise RetryLater(
            "your payment's settlement could not be confirmed; it is under review by the "
            "operator, who will complete or refund it. Do not pay again: come back later "
            "with the same payment, or follow the job's status",
            code=SETTLEMENT_UNRESOLVED,
            retry_after_s=UNRESOLVED_RETRY_AFTER_S,
            details={"jobId": job.id, "statusUrl": job_view(job, base)["statusUrl"]},
        )
    if job.state == JobState.PAYMENT_FAILED.value or (
        job.state == JobState.NEEDS_ATTENTION.value and job.settle_tx is None
    ):
        return payment_required(offer, job.error_code or "settle_failed", job.error_message)
    if job.state == JobState.VERIFIED.value:
        raise PaymentOutcomeUnknown(
            "settlement outcome is unknown; retry with the SAME payment", details={"jobId": job.id}
        )
    if job.state in (
        JobState.FAILED.value,
        JobState.REFUNDING.value,
        JobState.REFUNDED.value,
        JobState.NEEDS_ATTENTION.value,
    ):
        view = job_view(job, base)
        raise UpstreamFailed(
            f"{failure_sentence(job)}; {money_outcome(job)}",
            code=job.error_code or "upstream_error",
            details={
                "jobId": job.id,
                "statusUrl": view["statusUrl"],
                "reason": job.error_message,
                "refund": refund_details(job),
            },
            headers={**settled, **NO_STORE},
        )
    return JSONResponse(accepted_view(job, base), headers={**settled, **NO_STORE})


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
