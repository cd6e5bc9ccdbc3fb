"""The unpaid 402 answered in front of the whole FastAPI stack.

An unpaid, valid request for an edit path gets the offer's ready 402
(`app.payments.offer.Http402`, the bytes the route itself sends) without entering FastAPI.
Only where the answer cannot differ: no payment header, no `Origin` (CORS answers depend on
it; `app.api.fastpath` answers those inside CORS), no `text/html` in `Accept` (browsers may get
the paywall page). Everything else (paid, invalid, browser requests) goes through the stack.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.api.fastpath import (
    EDIT_PATHS,
    PAYING_HEADERS,
    UnpaidAnswers,
    replaying,
    unpaid_valid_body,
)
from app.api.job_reads import JobReads, job_reads
from app.api.long_poll import long_poll, wait_seconds
from app.api.request_metrics import count_route, counting
from app.context import Gateway
from app.jobs.views import JOBS_PREFIX

_NOT_OURS = PAYING_HEADERS | {b"origin"}
# What the outermost CORS middleware (app.main) adds to an answer to a request without Origin;
# the front answers before it. tests/test_job_reads.py compares the bytes with the stack's.
_CORS_VARY = (b"vary", b"Origin")
_NO_ORIGIN = (_CORS_VARY,)


class UnpaidFront:
    """The 402s `FastPathApp` answers with, one per edit path."""

    def __init__(self) -> None:
        self.unpaid = UnpaidAnswers()

    async def answer(self, app: FastPathApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the offer's 402 (counted here: its route is the path), or go through `app`'s
        stack (counted by route and status as every other answer)."""
        gw = app.gateway
        valid, read = await unpaid_valid_body(scope, receive, _NOT_OURS)
        if gw is None or not valid:
            counted = counting(scope, send, EDIT_PATHS)
            return await FastAPI.__call__(app, scope, replaying(read, receive), counted)
        path = scope["path"]
        unpaid = self.unpaid.get(gw, path)
        count_route(path, "POST", 402)
        await send(unpaid.start_message(_NO_ORIGIN))
        await send(unpaid.body_message())
        return None


class FastPathApp(FastAPI):
    """FastAPI with `UnpaidFront` and long polls (`app.api.long_poll`) ahead of its
    middleware stack (set `front = None` to skip both)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front: UnpaidFront | None = UnpaidFront()
        # Set at start-up with `app.state.gateway` (app.main): read per request from here, as
        # `State.__getattr__` raises and catches an AttributeError on every read.
        self.gateway: Gateway | None = None
        self._route = self._stack  # one bound method, not one held by each waiting long poll

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Unpaid edit requests through the front when there is one, the rest into FastAPI;
        every HTTP answer counted by route and status."""
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        front = self.front
        if front is not None and not scope.get("root_path"):
            method = scope["method"]
            if method == "POST" and scope["path"] in EDIT_PATHS:
                return await front.answer(self, scope, receive, send)
            if method == "GET" and scope["path"].startswith(JOBS_PREFIX) and scope["query_string"]:
                # Awaited here, counted where it answers: no frame or `send` wrapper of its
                # own held while it waits.
                wait_s = wait_seconds(scope["query_string"])
                reads = self._long_poll_reads(scope) if wait_s is not None else None
                if (
                    reads is not None
                    and wait_s is not None
                    and await long_poll(
                        reads, scope, receive, send, wait_s, self._route, _NO_ORIGIN, count=True
                    )
                ):
                    return None
        return await super().__call__(scope, receive, counting(scope, send, EDIT_PATHS))

    def _long_poll_reads(self, scope: Scope) -> JobReads | None:
        """The read path, when the long poll may be served here."""
        if any(name == b"origin" for name, _ in scope["headers"]):
            return None  # CORS answers depend on Origin: FastPath serves it inside CORS
        return job_reads(self)

    async def _stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self, scope, receive, send)
