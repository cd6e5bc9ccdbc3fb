"""Long polls served without the FastAPI stack: `GET /v1/jobs/{id}?wait=N`.

Only that query alone (N a plain decimal up to the route's bound) and a well-formed job id:
other spellings go through FastAPI. The waiting itself is the job's shared watch
(`app.api.job_waits`). A job that does not exist, or a read that fails, is handed to the
route without the wait, so every 404 and database error is FastAPI's own answer.
`FastPathApp` serves them in front of the middleware (requests without `Origin`, which need
no CORS headers), `FastPath` inside CORS for the others: a waiting connection then holds
only a few frames, most of what it would otherwise keep in memory.
"""

from __future__ import annotations

import re
from contextlib import suppress
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.job_cache import Rendered, etag_matches
from app.api.job_reads import JobReads
from app.api.job_waits import FINAL
from app.api.request_metrics import JOB_ROUTE, count_route, counting
from app.jobs.views import JOBS_PREFIX

_WAIT_QUERY = re.compile(rb"wait=(\d{1,3}(?:\.\d{1,6})?)")
_JOB_ID = re.compile(r"job_[A-Za-z0-9_-]{4,36}")  # the route's pattern and length (8-40)
MAX_WAIT_QUERY_S = 120.0  # the route's own bound (a larger value is its 422)
_NO_FIXED_ROUTES: frozenset[str] = frozenset()  # a job's path is counted as its route


def wait_seconds(query: bytes) -> float | None:
    """N of a query that is exactly `wait=N` within the route's bound, else None."""
    match = _WAIT_QUERY.fullmatch(query)
    if match is None or float(match[1]) > MAX_WAIT_QUERY_S:
        return None
    return float(match[1])


async def long_poll(
    reads: JobReads,
    scope: Scope,
    receive: Receive,
    send: Send,
    wait_s: float,
    route: ASGIApp,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    *,
    count: bool = False,
) -> bool:
    """Serve the long poll (True), or leave it to `route` untouched (False).

    `extra_headers`: what the middleware skipped would have added to the answer. `count`:
    count the answer here (`send` is not counted outside): no wrapper held while it waits.
    """
    job_id = scope["path"][len(JOBS_PREFIX) :]
    if _JOB_ID.fullmatch(job_id) is None:
        return False  # the route's 422
    if reads.gateway.settings.payer_bound_reads:
        return False  # payer-bound reads are proven in the route, never served from here
    # A job others wait on is re-read by its watch: joining it needs no read of our own.
    rendered = reads.cached(job_id) or reads.waits.watched(job_id)
    if rendered is None:
        with suppress(Exception):  # the route reads it again and answers the error
            rendered = await reads.read(job_id)
    if rendered is not None and not rendered.readable_with(header_of(scope, b"authorization")):
        return False  # a job its API key keeps to itself: the route answers 404
    if rendered is not None and rendered.state not in FINAL and wait_s > 0:
        # Awaited here, not in a coroutine of `JobWaits`: one frame less held per waiter.
        waits = reads.waits
        watch, waiter = waits.join(job_id, rendered, min(wait_s, reads.gateway.settings.max_wait_s))
        del job_id  # the watch holds it
        try:
            await waiter
        finally:
            rendered = waits.leave(watch, waiter)
    if rendered is None:  # no such job, or no read: the route reads it now and answers
        counted = counting(scope, send, _NO_FIXED_ROUTES) if count else send
        await route({**scope, "query_string": b""}, receive, counted)
    else:
        if count:
            count_route(JOB_ROUTE, "GET", 304 if not_modified(scope, rendered) else 200)
        await send_rendered(scope, send, rendered, extra_headers)
    return True


async def send_rendered(
    scope: Scope,
    send: Send,
    rendered: Rendered,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """The route's answer: 304 when `If-None-Match` matches, else the rendered 200."""
    if not_modified(scope, rendered):
        await send(start_message(304, [*rendered.not_modified_headers, *extra_headers]))
        await send({"type": "http.response.body", "body": b""})
    else:
        await send(start_message(200, [*rendered.raw_headers, *extra_headers]))
        await send({"type": "http.response.body", "body": rendered.body})


def not_modified(scope: Scope, rendered: Rendered) -> bool:
    """The request's `If-None-Match` matches the job's ETag: the answer is a 304."""
    return etag_matches(header_of(scope, b"if-none-match"), rendered.etag)


def header_of(scope: Scope, name: bytes) -> str | None:
    """The first `name` header, as `Request.headers.get` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def start_message(status: int, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """A response start; a copy of the headers: middleware outside (CORS) may add to them."""
    return {"type": "http.response.start", "status": status, "headers": list(headers)}
