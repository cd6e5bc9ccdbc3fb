"""Counting every HTTP answer by route template and status, ahead of the whole stack.

Pure ASGI and in memory: a dict lookup and a counter increment per request, no database.
The route template comes from the router (`scope["route"]`); answers given before routing
(the replayed 402s of `app.api.front`) are named by their path, which is a fixed route.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Scope, Send

from app.core.metrics import PAYMENT_REQUIRED, REQUESTS
from app.jobs.views import JOBS_PREFIX

_UNMATCHED = "unmatched"
JOB_ROUTE = JOBS_PREFIX + "{job_id}"
_children: dict[tuple[str, str, int], Any] = {}  # label lookups are the costly part
_required: dict[str, Any] = {}


def _child(route: str, method: str, status: int) -> Any:
    key = (route, method, status)
    child = _children.get(key)
    if child is None:
        child = _children[key] = REQUESTS.labels(route, method, str(status))
    return child


def count(scope: Scope, status: int, fixed_routes: frozenset[str]) -> None:
    """Count one answer (and a 402 by route)."""
    route: str | None = getattr(scope.get("route"), "path", None)
    if route is None:
        path = scope["path"]
        if path in fixed_routes:
            route = path
        elif path.startswith(JOBS_PREFIX) and "/" not in path[len(JOBS_PREFIX) :]:
            route = JOB_ROUTE  # the job read's fast path answers before routing
        else:
            route = _UNMATCHED
    _child(route, scope["method"], status).inc()
    if status == 402:
        required = _required.get(route)
        if required is None:
            required = _required[route] = PAYMENT_REQUIRED.labels(route)
        required.inc()


def counting(scope: Scope, send: Send, fixed_routes: frozenset[str]) -> Send:
    """`send`, counting the answer's status when it starts."""

    async def counted(message: Message) -> None:
        if message["type"] == "http.response.start":
            count(scope, message["status"], fixed_routes)
        await send(message)

    return counted
