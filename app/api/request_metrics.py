"""Counting every HTTP answer by route template and status, ahead of the whole stack.

Pure ASGI and in memory: one dict increment per request (no lock, no database); the counts
are turned into Prometheus counters only when `/metrics` is scraped (`RequestCollector`).
The route template comes from the router (`scope["route"]`); answers given before routing
(the replayed 402s of `app.api.front`, the job read's fast path) are named by their fixed
route.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Message, Scope, Send

from app.core.metrics import REGISTRY
from app.jobs.views import JOBS_PREFIX

_UNMATCHED = "unmatched"
# Any token is a method to the server: others are counted as one, so labels stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
JOB_ROUTE = JOBS_PREFIX + "{job_id}"
# (route, method, status) -> answers; only the event loop's thread writes it.
_answers: dict[tuple[str, str, int], int] = {}


def _route(scope: Scope, fixed_routes: frozenset[str]) -> str:
    route: str | None = getattr(scope.get("route"), "path", None)
    if route is not None:
        return route
    path: str = scope["path"]
    if path in fixed_routes:
        return path
    if path.startswith(JOBS_PREFIX) and "/" not in path[len(JOBS_PREFIX) :]:
        return JOB_ROUTE  # the job read's fast path answers before routing
    return _UNMATCHED


def count(scope: Scope, status: int, fixed_routes: frozenset[str]) -> None:
    """Count one answer."""
    method = scope["method"]
    count_route(_route(scope, fixed_routes), method if method in _METHODS else "other", status)


def count_route(route: str, method: str, status: int) -> None:
    """Count one answer whose route and method the caller knows (`method` one of
    `_METHODS`): the unpaid front counts its 402 so, without wrapping `send`."""
    key = (route, method, status)
    _answers[key] = _answers.get(key, 0) + 1


def counting(scope: Scope, send: Send, fixed_routes: frozenset[str]) -> Send:
    """`send`, counting the answer's status when it starts."""

    async def counted(message: Message) -> None:
        if message["type"] == "http.response.start":
            count(scope, message["status"], fixed_routes)
        await send(message)

    return counted


class RequestCollector(Collector):
    """The answer counts as `x402r_http_requests_total` and `x402r_payment_required_total`."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "x402r_http_requests",
            "HTTP answers by route template, method and status",
            labels=["route", "method", "status"],
        )
        required = CounterMetricFamily(
            "x402r_payment_required", "402 answers issued, by route", labels=["route"]
        )
        per_route: dict[str, int] = {}
        for (route, method, status), n in list(_answers.items()):
            requests.add_metric([route, method, str(status)], n)
            if status == 402:
                per_route[route] = per_route.get(route, 0) + n
        for route, n in per_route.items():
            required.add_metric([route], n)
        yield requests
        yield required


REGISTRY.register(RequestCollector())
