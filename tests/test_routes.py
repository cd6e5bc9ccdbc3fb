"""Every route's endpoint and dependencies are coroutines: nothing runs in the thread pool.

FastAPI runs a plain `def` endpoint or dependency in its thread pool (a thread hand-off per
request); here every one is a cheap attribute read or check, so none should be.
"""

from __future__ import annotations

import inspect

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.api import admin, edits, health, jobs


def _calls(dependant: Dependant) -> list[object]:
    found: list[object] = [dependant.call] if dependant.call is not None else []
    for sub in dependant.dependencies:
        found += _calls(sub)
    return found


def test_no_endpoint_or_dependency_runs_in_the_thread_pool() -> None:
    routers = (admin.router, edits.router, health.router, jobs.router)  # what the app includes
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 6
    for route in routes:
        for call in _calls(route.dependant):
            name = getattr(call, "__qualname__", repr(call))
            assert inspect.iscoroutinefunction(call), f"{route.path}: {name} is not async"
