"""One log line per paid request, under a request id that every line it causes carries.

The id comes from the client's `X-Request-ID` when it is a sane token (so a caller can
correlate), else it is generated; it is echoed in the answer. Unpaid requests (402s, the bulk
of the traffic) are not logged.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request, Response

from app.core.errors import AppError
from app.core.logs import get_logger

log = get_logger("app.requests")
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Paid requests: an x402 payment or an API key (whose value is never logged).
_PAYMENT_HEADERS = ("x-payment", "payment-signature", "authorization")


def request_id(request: Request) -> str:
    """The caller's id when it is a sane token, else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    return given if given and _SANE_ID.match(given) else "req_" + secrets.token_hex(8)


async def logged(request: Request, handle: Callable[[], Awaitable[Response]]) -> Response:
    """Run a paid route's handler with its request id bound, and log how it ended."""
    if not any(h in request.headers for h in _PAYMENT_HEADERS):
        return await handle()
    rid = request_id(request)
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(request_id=rid, path=request.url.path):
        try:
            response = await handle()
        except AppError as exc:
            exc.headers = {**exc.headers, REQUEST_ID_HEADER: rid}
            log.info("paid request", status=exc.status_code, error=exc.code, ms=_ms(started))
            raise
        response.headers[REQUEST_ID_HEADER] = rid
        log.info("paid request", status=response.status_code, ms=_ms(started))
        return response


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
