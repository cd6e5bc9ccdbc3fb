"""The paid edit bought with `Authorization: Bearer <API key>` instead of an x402 payment."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from x402.http import PAYMENT_REQUIRED_HEADER

from app.api.paid_outcome import upstream_failed
from app.context import Gateway
from app.core.logs import get_logger
from app.jobs.key_purchase import purchase_with_key
from app.jobs.models import Job, JobState
from app.jobs.repository import utcnow
from app.jobs.views import accepted_view
from app.keys.auth import authenticate, check_key_rate
from app.keys.errors import BUDGET_EXHAUSTED, BudgetExhausted
from app.payments.offer import Offer

log = get_logger(__name__)
NO_STORE = {"Cache-Control": "no-store"}
_FAILED = frozenset(
    s.value
    for s in (JobState.FAILED, JobState.REFUNDING, JobState.REFUNDED, JobState.NEEDS_ATTENTION)
)


def budget_exhausted(offer: Offer, exc: BudgetExhausted) -> Response:
    """402 `budget_exhausted`: what is left, and the offer's own payment requirements (the
    v1 `accepts` body and the v2 PAYMENT-REQUIRED header) so the caller can pay instead."""
    answer = offer.payment_required(BUDGET_EXHAUSTED, exc.message)
    header = dict(answer.raw_headers)[PAYMENT_REQUIRED_HEADER.lower().encode()].decode("latin-1")
    content: dict[str, Any] = json.loads(answer.body)
    content["details"] = exc.details()
    return JSONResponse(
        content, status_code=402, headers={PAYMENT_REQUIRED_HEADER: header, **NO_STORE}
    )


def key_paid_answer(gw: Gateway, job: Job) -> Response:
    """Where a key-paid job stands after the request path, as an HTTP answer."""
    base = gw.settings.base_url
    if job.state in _FAILED:
        error = upstream_failed(job, base)
        error.headers.update(NO_STORE)
        raise error
    return JSONResponse(accepted_view(job, base), headers=NO_STORE)


async def edit_with_key(
    gw: Gateway, request: Request, body: dict[str, object], offer: Offer, idem: str | None
) -> Response:
    """401 unless the bearer is a usable key, 429 over its rate, 402 without budget left;
    else the job, its price debited from the key. Nothing is debited on any error."""
    key = await authenticate(gw.autocommit, request.headers.get("authorization"), utcnow())
    await check_key_rate(gw.limiter, key)
    try:
        job = await purchase_with_key(
            gw,
            key=key,
            route=request.url.path,
            body=body,
            sale_price=offer.terms.price_atomic,
            idempotency_key=idem,
        )
    except BudgetExhausted as exc:
        log.info("key budget exhausted", key_id=key.id, budget=exc.which)
        return budget_exhausted(offer, exc)
    log.info("key-paid job", job_id=job.id, state=job.state, key_id=key.id, amount=job.pay_amount)
    return key_paid_answer(gw, job)
