"""The unpaid 402 answered in front of the whole FastAPI stack, with the stack's own bytes.

The first unpaid, valid request for a path at a given upstream quote goes through the full
stack (every middleware, the route) and its answer is recorded; later ones get that answer
replayed without entering FastAPI. The recording is only reused where the answer cannot
differ: same path, same gateway, same quote object (the offer is a function of these; see
`app.api.edits.current_offer`), no payment header, no `Origin` (CORS answers depend on it),
no `text/html` in `Accept` (browsers may get the paywall page), and only a JSON 402 is recorded.
Everything else — paid, invalid, browser requests — simply goes through the stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from app.api.fastpath import EDIT_PATHS, PAYMENT_HEADERS, replaying, unpaid_valid_body
from app.api.job_reads import job_reads
from app.api.long_poll import long_poll, wait_seconds
from app.context import Gateway
from app.jobs.views import JOBS_PREFIX
from app.upstream.client import Quote

_NOT_OURS = PAYMENT_HEADERS | {b"origin"}
# What CORS adds to an answer to a request without `Origin` (tests compare the bytes).
_NO_ORIGIN = ((b"vary", b"Origin"),)


@dataclass(frozen=True)
class _Recorded:
    """The full stack's answer to an unpaid request, and what it was valid for."""

    gateway: Gateway
    quote: Quote | None
    start: Message
    body: Message


class UnpaidFront:
    """The recordings, one per edit path; `FastPathApp` answers from them."""

    def __init__(self) -> None:
        self.recorded: dict[str, _Recorded] = {}

    async def answer(self, app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        """Replay the recorded 402, or go through `app`'s stack (recording a 402 it sends)."""
        gw: Gateway | None = getattr(app.state, "gateway", None)
        valid, read = await unpaid_valid_body(scope, receive, _NOT_OURS)
        if gw is None or not valid:
            return await FastAPI.__call__(app, scope, replaying(read, receive), send)
        path, quote = scope["path"], gw.upstream.cached_quote()
        recorded = self.recorded.get(path)
        if recorded is not None and recorded.gateway is gw and recorded.quote is quote:
            # Fresh message dicts: the server owns what it is sent.
            await send({**recorded.start, "headers": list(recorded.start["headers"])})
            await send(dict(recorded.body))
            return None
        messages: list[Message] = []

        async def record(message: Message) -> None:
            messages.append(message)
            await send(message)

        await FastAPI.__call__(app, scope, replaying(read, receive), record)
        if (
            len(messages) == 2
            and messages[0]["type"] == "http.response.start"
            and messages[0]["status"] == 402
            and (b"content-type", b"application/json") in messages[0].get("headers", [])
            and not messages[1].get("more_body", False)
        ):
            start = {**messages[0], "headers": list(messages[0].get("headers", []))}
            body = {"type": "http.response.body", "body": bytes(messages[1].get("body", b""))}
            self.recorded[path] = _Recorded(gw, quote, start, body)
        return None


class FastPathApp(FastAPI):
    """FastAPI with `UnpaidFront` and long polls (`app.api.long_poll`) ahead of its
    middleware stack (set `front = None` to skip both)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front: UnpaidFront | None = UnpaidFront()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Unpaid edit requests through the front when there is one, the rest into FastAPI."""
        front = self.front
        if (
            front is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in EDIT_PATHS
            and not scope.get("root_path")
        ):
            return await front.answer(self, scope, receive, send)
        if (
            front is not None
            and scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(JOBS_PREFIX)
            and scope["query_string"]
            and not scope.get("root_path")
            and await self._long_poll(scope, receive, send)
        ):
            return None
        return await super().__call__(scope, receive, send)

    async def _long_poll(self, scope: Scope, receive: Receive, send: Send) -> bool:
        wait_s = wait_seconds(scope["query_string"])
        if wait_s is None or any(name == b"origin" for name, _ in scope["headers"]):
            return False  # CORS answers depend on Origin: FastPath serves it inside CORS
        reads = job_reads(self)
        if reads is None:
            return False
        return await long_poll(reads, scope, receive, send, wait_s, self._stack, _NO_ORIGIN)

    async def _stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self, scope, receive, send)
