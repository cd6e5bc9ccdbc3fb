"""The unpaid 402 answered in front of the whole FastAPI stack, with the stack's own bytes.

The first unpaid, valid request for a path at a given upstream quote goes through the full
stack (every middleware, the route) and its answer is recorded; later ones get that answer
replayed without entering FastAPI. The recording is only reused where the answer cannot
differ: same path, same gateway, same quote object (the offer is a function of these; see
`app.api.edits.current_offer`), no payment header, no `Origin` (CORS answers depend on it).
Everything else — paid, invalid, browser requests — simply goes through the stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.fastpath import EDIT_PATHS, PAYMENT_HEADERS, unpaid_valid_body
from app.context import Gateway
from app.upstream.client import Quote

_NOT_OURS = PAYMENT_HEADERS | {b"origin"}


@dataclass(frozen=True)
class _Recorded:
    """The full stack's answer to an unpaid request, and what it was valid for."""

    gateway: Gateway
    quote: Quote | None
    start: Message
    body: bytes


class UnpaidFront:
    """Pure ASGI, outermost: replays the recorded 402 for unpaid valid edit requests."""

    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner
        self._recorded: dict[str, _Recorded] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in EDIT_PATHS
            or scope.get("root_path")
        ):
            return await self.app(scope, receive, send)
        gw: Gateway | None = getattr(self.owner.state, "gateway", None)
        valid, receive = await unpaid_valid_body(scope, receive, _NOT_OURS)
        if gw is None or not valid:
            return await self.app(scope, receive, send)
        path, quote = scope["path"], gw.upstream.cached_quote()
        recorded = self._recorded.get(path)
        if recorded is not None and recorded.gateway is gw and recorded.quote is quote:
            await send({**recorded.start, "headers": list(recorded.start["headers"])})
            await send({"type": "http.response.body", "body": recorded.body})
            return None
        messages: list[Message] = []

        async def record(message: Message) -> None:
            messages.append(message)
            await send(message)

        await self.app(scope, receive, record)
        if (
            len(messages) == 2
            and messages[0]["type"] == "http.response.start"
            and messages[0]["status"] == 402
            and not messages[1].get("more_body", False)
        ):
            start = {**messages[0], "headers": list(messages[0].get("headers", []))}
            body = bytes(messages[1].get("body", b""))
            self._recorded[path] = _Recorded(gw, quote, start, body)
        return None


class FastPathApp(FastAPI):
    """FastAPI with `UnpaidFront` ahead of its middleware stack (set `front = None` to skip)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front: UnpaidFront | None = UnpaidFront(super().__call__, self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Through the front when there is one, else straight into FastAPI."""
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)
