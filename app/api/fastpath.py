"""A pure-ASGI fast path in front of FastAPI for the two hottest answers.

1. An unpaid `POST` to an edit route: the body is read (bounded) and validated with the
   same model, then the offer's precomputed 402 is sent. Anything else — a payment header,
   a body that is not JSON, too large or invalid — falls through to FastAPI with the body
   replayed, so every 422 (and every paid request) comes from the one slow path.
2. `GET /v1/jobs/{id}` (no query) of a job whose immutable response is cached: the cached
   bytes, or a 304 when `If-None-Match` matches.

The answers are the very bytes the routes would send: both render through the same
`Response` objects (`app.api.edits.payment_required`, `app.api.job_cache.Rendered`).
"""

from __future__ import annotations

import email.message
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.edits import EDIT_PATH, UPSTREAM_PATH, current_offer, payment_required
from app.api.job_cache import etag_matches
from app.api.job_reads import job_reads
from app.context import Gateway
from app.payments.offer import Offer
from app.upstream.schemas import MAX_BODY_BYTES, EditRequest

EDIT_PATHS = frozenset({EDIT_PATH, UPSTREAM_PATH})
JOBS_PREFIX = "/v1/jobs/"
PAYMENT_HEADERS = frozenset({b"x-payment", b"payment-signature"})
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


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out what was already read, then the rest of the stream."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


class FastPath:
    """ASGI middleware; install inside CORS so browsers still see the exposed headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._unpaid: dict[str, tuple[Offer, list[tuple[bytes, bytes]], bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            if scope["method"] == "POST" and path in EDIT_PATHS:
                return await self._edit(scope, receive, send)
            if scope["method"] == "GET" and path.startswith(JOBS_PREFIX):
                if not scope["query_string"] and await self._job(scope, send):
                    return None
        return await self.app(scope, receive, send)

    async def _edit(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = None
        for name, value in scope["headers"]:
            if name in PAYMENT_HEADERS:
                return await self.app(scope, receive, send)
            if name == b"content-type":
                content_type = value
        gw = _gateway(scope)
        if gw is None or content_type is None or not is_json(content_type):
            return await self.app(scope, receive, send)
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return await self.app(scope, _replay(messages, receive), send)
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                return await self.app(scope, _replay(messages, receive), send)
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages)
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        try:
            EditRequest.model_validate_json(body)
        except ValidationError:
            return await self.app(scope, _replay(replay, receive), send)
        headers, content = self._payment_required(scope["path"], current_offer(gw, scope["path"]))
        await send({"type": "http.response.start", "status": 402, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        return None

    def _payment_required(self, path: str, offer: Offer) -> tuple[list[tuple[bytes, bytes]], bytes]:
        cached = self._unpaid.get(path)
        if cached is None or cached[0] is not offer:
            response = payment_required(offer)
            cached = self._unpaid[path] = (offer, response.raw_headers, bytes(response.body))
        return cached[1], cached[2]

    async def _job(self, scope: Scope, send: Send) -> bool:
        reads = job_reads(scope["app"]) if "app" in scope else None
        if reads is None:
            return False
        rendered = reads.cached(scope["path"][len(JOBS_PREFIX) :])
        if rendered is None:
            return False
        if_none_match = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":  # the first one, as `Request.headers.get` does
                if_none_match = value.decode("latin-1")
                break
        if etag_matches(if_none_match, rendered.etag):
            await send(_start(304, rendered.not_modified_headers))
            await send({"type": "http.response.body", "body": b""})
        else:
            await send(_start(200, rendered.raw_headers))
            await send({"type": "http.response.body", "body": rendered.body})
        return True


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _gateway(scope: Scope) -> Gateway | None:
    app = scope.get("app")
    gw: Gateway | None = getattr(app.state, "gateway", None) if app is not None else None
    return gw
