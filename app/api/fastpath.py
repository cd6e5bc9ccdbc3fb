"""A pure-ASGI fast path inside CORS for the two hottest answers (see also `app.api.front`).

1. An unpaid `POST` to an edit route: the body is read (bounded) and validated with the
   same model, then the offer's precomputed 402 is sent. Anything else — a payment header,
   an `Accept` naming `text/html` (a browser may get the paywall page instead), a body that
   is not JSON, too large or invalid — falls through to FastAPI with the body
   replayed, so every 422 (and every paid request) comes from the one slow path.
2. `GET /v1/jobs/{id}` (no query) when `JobReads.cached` has an answer that needs no I/O:
   an immutable job (or a 304 when `If-None-Match` matches), or a fresh job in progress.
   Never when reads are payer-bound (`X402R_JOB_READS=payer`): the route checks the proof.
3. `GET /v1/jobs/{id}?wait=N` (that query alone, N plain decimal, a well-formed id): the
   long poll waits on the job's shared watch (`app.api.job_waits`) without the rest of the
   stack under it, which is most of what a waiting connection would hold in memory. A job
   that does not exist, or a read that fails, goes to the route (without the wait), so
   every 404, 422 and database error is still FastAPI's own answer.

The answers are the very bytes the routes would send: the 402 is the offer's own rendering
(`app.payments.offer.Http402`, which the route sends too), a job the route's `Rendered`.
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.edits import EDIT_PATH, UPSTREAM_PATH, current_offer
from app.api.job_reads import job_reads
from app.api.long_poll import header_of, long_poll, send_rendered, wait_seconds
from app.context import Gateway
from app.jobs.views import JOBS_PREFIX
from app.payments.offer import Http402
from app.upstream.client import Quote
from app.upstream.schemas import MAX_BODY_BYTES, EditRequest

EDIT_PATHS = frozenset({EDIT_PATH, UPSTREAM_PATH})
PAYMENT_HEADERS = frozenset({b"x-payment", b"payment-signature"})
# A request that pays (or pays with an API key) is never answered with the unpaid 402 here.
PAYING_HEADERS = PAYMENT_HEADERS | {b"authorization"}
_JSON_TYPES: dict[bytes, bool] = {}


def is_json(content_type: bytes) -> bool:
    """FastAPI's rule: `application/json` or `application/*+json` (parameters ignored)."""
    known = _JSON_TYPES.get(content_type)
    if known is None:
        message = email.message.Message()
        message["content-type"] = content_type.decode("latin-1")
        subtype = message.get_content_subtype()
        known = message.get_content_maintype() == "application" and (
            subtype == "json" or subtype.endswith("+json")
        )
        if len(_JSON_TYPES) < 64:
            _JSON_TYPES[content_type] = known
    return known


def replaying(read: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out the messages already `read`, then the rest of the stream."""
    if not read:
        return receive
    pending = list(read)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def unpaid_valid_body(
    scope: Scope, receive: Receive, refuse: frozenset[bytes] = PAYMENT_HEADERS
) -> tuple[bool, list[Message]]:
    """Whether this edit request is unpaid with a valid JSON body, and the messages read.

    Any header in `refuse` (by default the payment headers) makes it not ours to answer.
    Reads at most `MAX_BODY_BYTES`; hand the request on with `replaying(read, receive)`.
    """
    content_type = None
    for name, value in scope["headers"]:
        if name in refuse:
            return False, []
        if name == b"content-type":
            content_type = value
        elif name == b"accept" and b"text/html" in value:
            return False, []  # may be a browser: the route decides between paywall and JSON
    if content_type is None or not is_json(content_type):
        return False, []
    message = await receive()
    read = [message]
    if message["type"] != "http.request":
        return False, read
    body = message.get("body", b"")
    if message.get("more_body", False):  # rare: the common body arrives in one message
        size = len(body)
        while message.get("more_body", False) and size <= MAX_BODY_BYTES:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                return False, read
            size += len(message.get("body", b""))
        if size > MAX_BODY_BYTES:
            return False, read
        body = b"".join(m.get("body", b"") for m in read)
    elif len(body) > MAX_BODY_BYTES:
        return False, read
    try:  # `EditRequest.model_validate_json(body)` without its wrapper: 3.6k instructions less
        EditRequest.__pydantic_validator__.validate_json(body)
    except ValidationError:
        return False, read
    return True, read


@dataclass(frozen=True)
class _Unpaid:
    """The 402 of one path, valid while the gateway and the upstream's quote are the same."""

    gateway: Gateway
    quote: Quote | None
    answer: Http402


class UnpaidAnswers:
    """The offer's ready 402 per edit path (the offer is a function of the settings, the path
    and the upstream's cached quote: see `current_offer`), rebuilt when the quote changes."""

    def __init__(self) -> None:
        self._unpaid: dict[str, _Unpaid] = {}

    def get(self, gw: Gateway, path: str) -> Http402:
        """The unpaid 402 of `path` now."""
        quote = gw.upstream.cached_quote()
        cached = self._unpaid.get(path)
        if cached is None or cached.gateway is not gw or cached.quote is not quote:
            cached = self._unpaid[path] = _Unpaid(gw, quote, current_offer(gw, path).unpaid)
        return cached.answer


async def send_402(send: Send, answer: Http402) -> None:
    """Send a rendered 402."""
    await send(answer.start_message())
    await send(answer.body_message())


class FastPath:
    """ASGI middleware; install inside CORS so browsers still see the exposed headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._unpaid = UnpaidAnswers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            if scope["method"] == "POST" and path in EDIT_PATHS:
                return await self._edit(scope, receive, send)
            if scope["method"] == "GET" and path.startswith(JOBS_PREFIX):
                query = scope["query_string"]
                if not query and await self._job(scope, send):
                    return None
                wait_s = wait_seconds(query) if query else None
                reads = job_reads(scope["app"]) if "app" in scope and wait_s is not None else None
                if reads is not None and wait_s is not None:
                    if await long_poll(reads, scope, receive, send, wait_s, self.app):
                        return None
        return await self.app(scope, receive, send)

    async def _edit(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = _gateway(scope)
        valid, read = await unpaid_valid_body(scope, receive, PAYING_HEADERS)
        if gw is None or not valid:
            return await self.app(scope, replaying(read, receive), send)
        return await send_402(send, self._unpaid.get(gw, scope["path"]))

    async def _job(self, scope: Scope, send: Send) -> bool:
        reads = job_reads(scope["app"]) if "app" in scope else None
        if reads is None or reads.gateway.settings.payer_bound_reads:
            return False  # payer-bound reads are proven in the route, never served from here
        rendered = reads.cached(scope["path"][len(JOBS_PREFIX) :])
        if rendered is None:
            return False
        if not rendered.readable_with(header_of(scope, b"authorization")):
            return False  # the route answers 404, as for a job that does not exist
        await send_rendered(scope, send, rendered)
        return True


def _gateway(scope: Scope) -> Gateway | None:
    app = scope.get("app")
    gw: Gateway | None = getattr(app.state, "gateway", None) if app is not None else None
    return gw
